"""Guard metrics: plain counters in the request path, folded incrementally for reading.

The request path only bumps integers and records into a route's live `LatencyHistogram`;
nothing here takes a lock or builds a label set per request. Readers (the control surface's
status and metrics) never walk a whole histogram. Instead:

  * `RouteStats.cut` swaps the live histogram for an empty one (O(1)) and files the full one
    as a *segment* of the current 15-second epoch (the ticker cuts every 30 s, readers cut on
    every read);
  * `RouteStats.fold` adds each new segment once, in time proportional to its distinct
    buckets, to the route's lifetime Prometheus `le` counts and to a `WindowCounts` of the
    last minute (epochs older than 60 s are subtracted again);
  * a `WindowCounts` (guard/window.py, with the window's segments and summary) keeps the
    window's counts per bucket and per group of 32 neighbouring buckets, and one cursor per
    percentile: a percentile steps its cursor from where the last read left it instead of
    sorting or walking every bucket.

`GuardCollector` (`guard.registry`) is the plain, readable reference: it renders the same
families with prometheus_client from a guard's state view, walking every route (folded or
not, folding nothing), and is what the incremental exposition in `guard/digest.py` is tested
against. `state_metrics` holds the gauges of the guard's own
state (mode, concurrency limit, breakers, storage, internal errors).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from crisisctl.guard.modes import EMERGENCY, NORMAL, RECOVERING

# the window's names, re-exported: readers import everything about route figures from here
from crisisctl.guard.window import SEGMENT_PARTS as SEGMENT_PARTS
from crisisctl.guard.window import SEGMENT_S as SEGMENT_S
from crisisctl.guard.window import WINDOW_S as WINDOW_S
from crisisctl.guard.window import WINDOW_SEGMENTS as WINDOW_SEGMENTS
from crisisctl.guard.window import WindowCounts as WindowCounts
from crisisctl.guard.window import WindowSegment as WindowSegment
from crisisctl.guard.window import epoch_of as epoch_of
from crisisctl.guard.window import window_summary as window_summary
from crisisctl.stats import MAX_TRACKABLE_US, LatencyHistogram, bucket_index

if TYPE_CHECKING:
    from crisisctl.guard.state import GuardState

#: Prometheus `le` bounds in seconds for request/operation duration histograms
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_BUCKETS_US = [round(b * 1_000_000) for b in DURATION_BUCKETS_S]
#: the last histogram bucket index counted under each `le` bound
LE_INDEXES: Final = [bucket_index(b) for b in _BUCKETS_US]
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RouteStats:
    """Counters of one route label, and its latency folded for reading."""

    __slots__ = (
        "by_method",
        "in_flight",
        "label",
        "latency",
        "le_counts",
        "lifetime_count",
        "lifetime_sum_us",
        "pending",
        "rejected",
        "segments",
        "unwindowed",
        "window",
    )

    def __init__(self, label: str) -> None:
        self.label = label
        #: method -> counts per status class index (status // 100; 0 = unknown)
        self.by_method: dict[str, list[int]] = {}
        #: live: the request path records here; `cut` swaps it for an empty one
        self.latency = LatencyHistogram()
        self.in_flight = 0
        #: reason -> count of requests the guard refused
        self.rejected: dict[str, int] = {}
        #: cut histograms not folded yet: (epoch, histogram), oldest first
        self.pending: list[tuple[int, LatencyHistogram]] = []
        #: histograms in the lifetime counts, not yet in the window: (epoch, histogram)
        self.unwindowed: list[tuple[int, LatencyHistogram]] = []
        #: folded histograms still inside the window, one segment per epoch, oldest first
        self.segments: deque[WindowSegment] = deque()
        self.window = WindowCounts()
        #: folded samples of the route's lifetime per `le` slot (the last: above every bound)
        self.le_counts = [0] * (len(LE_INDEXES) + 1)
        self.lifetime_count = 0
        self.lifetime_sum_us = 0

    def counts_for(self, method: str) -> list[int]:
        """The (shared, mutable) counts list of `method`: index = status // 100, 0 = unknown."""
        counts = self.by_method.get(method)
        if counts is None:
            counts = self.by_method[method] = [0, 0, 0, 0, 0, 0]
        return counts

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def totals(self) -> list[int]:
        """Counts per status class index summed over methods."""
        out = [0, 0, 0, 0, 0, 0]
        for counts in self.by_method.values():
            for i, n in enumerate(counts):
                out[i] += n
        return out

    def signature(self) -> tuple[int, int, int]:
        """(responses, in flight, refusals): changes whenever a reader's figures may."""
        total = 0
        for counts in self.by_method.values():
            for n in counts:
                total += n
        refused = 0
        for n in self.rejected.values():
            refused += n
        return total, self.in_flight, refused

    # -- folding ---------------------------------------------------------------------------
    def cut(self, now: float) -> None:
        """File the live histogram as a segment of `now`'s epoch (O(1) unless merged)."""
        hist = self.latency
        if hist.count == 0:
            return
        self.latency = LatencyHistogram()
        epoch = epoch_of(now)
        pending = self.pending
        if pending and pending[-1][0] == epoch:
            pending[-1][1].merge(hist)
        else:
            pending.append((epoch, hist))
        # nobody folds while nobody reads: keep memory bounded by merging segments that have
        # left the window (they only feed the lifetime counts now)
        oldest = epoch - WINDOW_SEGMENTS
        while len(pending) > 1 and pending[1][0] < oldest:
            pending[0][1].merge(pending[1][1])
            del pending[1]

    def snapshot(self, now: float, keep_s: float = WINDOW_S) -> None:
        """The ticker's periodic cut (`keep_s` is the window; kept for the ticker's call)."""
        self.cut(now)

    def needs_fold(self, now: float) -> bool:
        """Whether `fold` would change anything: new samples, or a segment leaving the window."""
        if self.latency.count or self.pending or self.unwindowed:
            return True
        segments = self.segments
        return bool(segments) and segments[0].epoch < epoch_of(now) - WINDOW_SEGMENTS

    def fold(self, now: float, total: WindowCounts | None = None) -> None:
        """Fold new samples into the lifetime counts and the window (and `total`'s window)."""
        self.fold_lifetime(now)
        self.fold_window(now, total)

    def fold_lifetime(self, now: float) -> None:
        """Fold new samples into the lifetime `le` counts only (what the metrics document
        needs: a few operations per new bucket); `fold_window` takes them into the window
        later, if a status read comes while they are still inside it."""
        self.cut(now)
        le_counts = self.le_counts
        unwindowed = self.unwindowed
        for epoch, hist in self.pending:
            for index, n in hist._counts.items():
                le_counts[bisect_left(LE_INDEXES, index)] += n
            self.lifetime_count += hist.count
            self.lifetime_sum_us += hist.sum_us
            if unwindowed and unwindowed[-1][0] == epoch:
                unwindowed[-1][1].merge(hist)
            else:
                unwindowed.append((epoch, hist))
        self.pending = []
        # segments that left the window before any status read never need to enter it
        oldest = epoch_of(now) - WINDOW_SEGMENTS
        while unwindowed and unwindowed[0][0] < oldest:
            del unwindowed[0]

    def window_moves(self, now: float) -> bool:
        """Whether `fold_window` would change the window: samples to take in, or a segment
        leaving it."""
        if self.unwindowed:
            return True
        segments = self.segments
        return bool(segments) and segments[0].epoch < epoch_of(now) - WINDOW_SEGMENTS

    def fold_window(self, now: float, total: WindowCounts | None = None) -> None:
        """Take the lifetime-folded samples into the window (and `total`'s), and drop the
        segments that have left it."""
        oldest = epoch_of(now) - WINDOW_SEGMENTS
        segments = self.segments
        for epoch, hist in self.unwindowed:
            if epoch >= oldest:
                self.window.add(hist, 1)
                if total is not None:
                    total.add(hist, 1)
                # one segment per epoch: reads every second must not grow the deque (and
                # `window_extremes`' walk over it) by one segment per read
                if not segments or segments[-1].epoch != epoch:
                    segments.append(WindowSegment(epoch))
                segments[-1].add(hist)
        self.unwindowed = []
        while segments and segments[0].epoch < oldest:
            for hist in segments.popleft().parts:
                self.window.add(hist, -1)
                if total is not None:
                    total.add(hist, -1)

    def lifetime(self) -> tuple[list[int], int, int]:
        """(counts per `le` slot, count, sum µs) of every sample ever recorded, folded or not,
        without folding anything (for readers other than the control surface)."""
        le_counts = list(self.le_counts)
        count = self.lifetime_count
        total = self.lifetime_sum_us
        for hist in [h for _, h in self.pending] + [self.latency]:
            for index, n in hist.index_counts():
                le_counts[bisect_left(LE_INDEXES, index)] += n
            count += hist.count
            total += hist.sum_us
        return le_counts, count, total

    def window_extremes(self) -> tuple[int, int]:
        """(min, max) µs of the samples in the window; (0, 0) when it is empty."""
        low = MAX_TRACKABLE_US + 1
        high = 0
        for segment in self.segments:
            if segment.count:
                if segment.min_us < low:
                    low = segment.min_us
                if segment.max_us > high:
                    high = segment.max_us
        return (low, high) if low <= MAX_TRACKABLE_US else (0, 0)


def stale_routes(
    routes: list[RouteStats], seen: list[tuple[int, int, int]], now: float
) -> list[int]:
    """Indexes of the routes whose signature differs from `seen` (same order; routes past its
    end are new) or whose window needs a fold: one cheap pass, compiled."""
    out: list[int] = []
    oldest = epoch_of(now) - WINDOW_SEGMENTS
    known = len(seen)
    for i, stats in enumerate(routes):
        if i >= known or stats.latency.count or stats.pending or stats.signature() != seen[i]:
            out.append(i)
        else:
            segments = stats.segments
            if segments and segments[0].epoch < oldest:
                out.append(i)
    return out


def windows_extremes(routes: list[RouteStats]) -> tuple[int, int]:
    """(min, max) µs over the windows of all `routes`; (0, 0) when they are all empty."""
    low = MAX_TRACKABLE_US + 1
    high = 0
    for stats in routes:
        if stats.window.count:
            r_low, r_high = stats.window_extremes()
            if r_low < low:
                low = r_low
            if r_high > high:
                high = r_high
    return (low, high) if low <= MAX_TRACKABLE_US else (0, 0)


def histogram_family(
    name: str, doc: str, label_names: list[str], series: list[tuple[list[str], LatencyHistogram]]
) -> HistogramMetricFamily:
    """A Prometheus histogram family from labelled HDR histograms (seconds)."""
    family = HistogramMetricFamily(name, doc, labels=label_names)
    for labels, hist in series:
        cumulative = hist.cumulative_counts(_BUCKETS_US)
        buckets: list[tuple[str, float]] = [
            (repr(bound), float(n)) for bound, n in zip(DURATION_BUCKETS_S, cumulative, strict=True)
        ]
        buckets.append(("+Inf", float(hist.count)))
        family.add_metric(labels, buckets, hist.sum_us / 1_000_000)
    return family


# -- families: one place for every name and help text -----------------------------------------
REQUESTS = (
    "crisisctl_http_requests",
    "HTTP requests answered, by route template, method and status class.",
)
DURATION = (
    "crisisctl_http_request_duration_seconds",
    "Time from admission to the end of the response, for requests the app served.",
)
IN_FLIGHT = ("crisisctl_http_requests_in_flight", "Requests being served now, by route template.")
REJECTED = (
    "crisisctl_guard_rejected",
    "Requests the guard refused, by route and reason (rate_limited, queue_full, "
    "queue_timeout, overloaded, emergency, memory, circuit_open, timeout, quota, quota_per_key, "
    "operation_quota, operation_quota_per_key).",
)
CIRCUIT = (
    "crisisctl_guard_circuit_state",
    "Circuit breaker state per route: 0 closed, 1 open, 2 half-open.",
)


class GuardCollector(Collector):
    """Collects one guard's state (and the process's tracked operations) at scrape time.

    The readable reference of the control surface's incremental exposition: it walks every
    route's folded state on each call.
    """

    def __init__(self, state: GuardState, operations: Callable[[], Iterator[Metric]]) -> None:
        self._state = state
        self._operations = operations

    def collect(self) -> Iterator[Metric]:
        state = self._state
        routes = list(state.routes.values())

        requests = CounterMetricFamily(*REQUESTS, labels=["route", "method", "status_class"])
        for stats in routes:
            for method, counts in stats.by_method.items():
                for index, n in enumerate(counts):
                    if n:
                        cls = STATUS_CLASSES[index - 1] if index else "unknown"
                        requests.add_metric([stats.label, method, cls], n)
        yield requests

        duration = HistogramMetricFamily(*DURATION, labels=["route"])
        for stats in routes:
            le_counts, count, sum_us = stats.lifetime()
            if count:
                cumulative: list[tuple[str, float]] = []
                seen = 0
                for bound, n in zip(DURATION_BUCKETS_S, le_counts, strict=False):
                    seen += n
                    cumulative.append((repr(bound), float(seen)))
                cumulative.append(("+Inf", float(count)))
                duration.add_metric([stats.label], cumulative, sum_us / 1e6)
        yield duration

        in_flight = GaugeMetricFamily(*IN_FLIGHT, labels=["route"])
        for stats in routes:
            in_flight.add_metric([stats.label], stats.in_flight)
        yield in_flight

        rejected = CounterMetricFamily(*REJECTED, labels=["route", "reason"])
        for stats in routes:
            for reason, n in stats.rejected.items():
                rejected.add_metric([stats.label, reason], n)
        yield rejected

        circuit = GaugeMetricFamily(*CIRCUIT, labels=["route"])
        for label, breaker in state.breakers.items():
            circuit.add_metric([label], breaker.state)
        yield circuit

        yield from state_metrics(state)
        yield from self._operations()


#: scope "route": each route's own limit (one sample per route label: at most max_route_labels)
ROUTE_LIMIT = (
    "crisisctl_guard_route_concurrency_limit",
    "Concurrency limit in force for one route (scope route; the guard-wide cap is "
    "crisisctl_guard_concurrency_limit).",
)


def state_metrics(state: GuardState, *, route_limits: bool = True) -> Iterator[Metric]:
    """Gauges and counters of the guard's own state: a fixed number of samples, and (unless
    `route_limits` is False: the digest writes that family itself) one limit per route."""
    mode = GaugeMetricFamily(
        "crisisctl_guard_mode", "1 for the guard's current mode.", labels=["mode"]
    )
    current = state.mode
    for name in (NORMAL, EMERGENCY, RECOVERING):
        mode.add_metric([name], 1.0 if current == name else 0.0)
    yield mode
    conc = state.concurrency
    limit = GaugeMetricFamily("crisisctl_guard_concurrency_limit", "Concurrency limit in force.")
    queue = GaugeMetricFamily("crisisctl_guard_queue_length", "Requests waiting for a slot.")
    inflight = GaugeMetricFamily(
        "crisisctl_guard_in_flight", "Non-critical requests holding a concurrency slot."
    )
    route_limit = GaugeMetricFamily(*ROUTE_LIMIT, labels=["route"])
    if conc is not None:
        limit.add_metric([], conc.effective)
        queued = conc.queued
        for label, child in list(conc.children.items()):
            if route_limits:
                route_limit.add_metric([label], child.effective)
            queued += child.queued  # scope "route": the waiters are in the route queues
        queue.add_metric([], queued)
        inflight.add_metric([], conc.in_flight)
    yield limit
    if route_limits:
        yield route_limit
    yield queue
    yield inflight
    after_timeout = GaugeMetricFamily(
        "crisisctl_guard_running_after_timeout",
        "Handlers answered 504 whose work (a worker thread) still runs and holds its slot.",
    )
    after_timeout.add_metric([], state.running_after_timeout)
    yield after_timeout
    up = GaugeMetricFamily(
        "crisisctl_guard_ratelimit_storage_up",
        "1 when the shared rate-limit storage answers (memory storage is always up).",
    )
    up.add_metric([], 1.0 if state.storage_up else 0.0)
    yield up
    errors = CounterMetricFamily(
        "crisisctl_guard_ratelimit_storage_errors",
        "Failed calls to the shared rate-limit storage.",
    )
    errors.add_metric([], state.storage_errors)
    yield errors
    fallback = CounterMetricFamily(
        "crisisctl_guard_ratelimit_fallback",
        "Rate-limit decisions taken locally because the shared storage was unreachable.",
    )
    fallback.add_metric([], state.storage_fallbacks)
    yield fallback
    internal = CounterMetricFamily(
        "crisisctl_guard_internal_errors", "Errors inside the guard (requests passed through)."
    )
    internal.add_metric([], state.internal_errors)
    yield internal
    families: dict[str, GaugeMetricFamily] = {}
    for name, doc, value, labels in state.process.gauges():
        family = families.get(name)
        if family is None:
            family = families[name] = GaugeMetricFamily(name, doc, labels=sorted(labels))
        family.add_metric([labels[k] for k in sorted(labels)], value)
    yield from families.values()
    policies = state.request_policies
    if policies is not None:  # the cache and quotas (guard/policy_set.py)
        yield from policies.metrics()
    yield from state.memory.metrics()
    yield from state.event_loop.metrics()


def build_registry(
    state: GuardState, operations: Callable[[], Iterator[Metric]]
) -> CollectorRegistry:
    """A private registry holding only this guard's (reference) collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(state, operations))
    return registry
