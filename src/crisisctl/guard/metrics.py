"""Guard metrics: plain counters in the request path, Prometheus exposition at scrape time.

The request path only bumps integers and records into a `LatencyHistogram`; nothing here takes
a lock or builds a label set per request. At scrape time a custom prometheus_client collector
turns that state into standard metric families (counters, gauges and histograms with fixed
`le` buckets computed from the HDR histogram), rendered by `prometheus_client.generate_latest`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from crisisctl.stats import LatencyHistogram

if TYPE_CHECKING:
    from crisisctl.guard.middleware import Guard

#: Prometheus `le` bounds in seconds for request/operation duration histograms
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_BUCKETS_US = [round(b * 1_000_000) for b in DURATION_BUCKETS_S]
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RouteStats:
    """Counters of one route label."""

    __slots__ = ("by_method", "in_flight", "label", "latency", "rejected", "snapshots")

    def __init__(self, label: str) -> None:
        self.label = label
        #: method -> counts per status class index (status // 100; 0 = unknown)
        self.by_method: dict[str, list[int]] = {}
        self.latency = LatencyHistogram()
        self.in_flight = 0
        #: reason -> count of requests the guard refused
        self.rejected: dict[str, int] = {}
        #: (monotonic time, copy of latency) taken by the ticker, for recent summaries
        self.snapshots: list[tuple[float, LatencyHistogram]] = []

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

    def snapshot(self, now: float, keep_s: float) -> None:
        """Remember the histogram now; keep snapshots for `keep_s` seconds (+ one older)."""
        self.snapshots.append((now, self.latency.copy()))
        while len(self.snapshots) > 2 and now - self.snapshots[1][0] >= keep_s:
            self.snapshots.pop(0)

    def recent(self) -> LatencyHistogram:
        """Samples recorded since the oldest kept snapshot (roughly the last minute)."""
        if not self.snapshots:
            return self.latency.copy()
        return difference(self.latency, self.snapshots[0][1])


def difference(newer: LatencyHistogram, older: LatencyHistogram) -> LatencyHistogram:
    """Samples in `newer` that were not yet in `older` (an earlier copy of the same histogram)."""
    data = newer.to_dict()
    old = dict((i, n) for i, n in older.to_dict()["counts"])
    counts = []
    for index, n in data["counts"]:
        left = n - old.get(index, 0)
        if left > 0:
            counts.append([index, left])
    total = sum(n for _, n in counts)
    if total == 0:
        return LatencyHistogram()
    from crisisctl.stats import bucket_bounds

    data["counts"] = counts
    data["count"] = total
    data["sum_us"] = max(0, newer.sum_us - older.sum_us)
    data["min_us"] = bucket_bounds(counts[0][0])[0]
    data["max_us"] = min(newer.max_us, bucket_bounds(counts[-1][0])[1])
    data["overflow"] = max(0, newer.overflow - older.overflow)
    return LatencyHistogram.from_dict(data)


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


class GuardCollector(Collector):
    """Collects one guard's state (and the process's tracked operations) at scrape time."""

    def __init__(self, guard: Guard, operations: Callable[[], Iterator[Metric]]) -> None:
        self._guard = guard
        self._operations = operations

    def collect(self) -> Iterator[Metric]:
        guard = self._guard
        routes = list(guard.route_stats.values())

        requests = CounterMetricFamily(
            "crisisctl_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            labels=["route", "method", "status_class"],
        )
        for stats in routes:
            for method, counts in stats.by_method.items():
                for index, n in enumerate(counts):
                    if n:
                        cls = STATUS_CLASSES[index - 1] if index else "unknown"
                        requests.add_metric([stats.label, method, cls], n)
        yield requests

        yield histogram_family(
            "crisisctl_http_request_duration_seconds",
            "Time from admission to the end of the response, for requests the app served.",
            ["route"],
            [([s.label], s.latency) for s in routes if s.latency.count],
        )

        in_flight = GaugeMetricFamily(
            "crisisctl_http_requests_in_flight",
            "Requests being served now, by route template.",
            labels=["route"],
        )
        for stats in routes:
            in_flight.add_metric([stats.label], stats.in_flight)
        yield in_flight

        rejected = CounterMetricFamily(
            "crisisctl_guard_rejected",
            "Requests the guard refused, by route and reason (rate_limited, queue_full, "
            "queue_timeout, overloaded, emergency, circuit_open, timeout).",
            labels=["route", "reason"],
        )
        for stats in routes:
            for reason, n in stats.rejected.items():
                rejected.add_metric([stats.label, reason], n)
        yield rejected

        yield from guard.collect_state_metrics()
        yield from self._operations()


def build_registry(guard: Guard, operations: Callable[[], Iterator[Metric]]) -> CollectorRegistry:
    """A private registry holding only this guard's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(guard, operations))
    return registry
