"""The control surface's status and metrics documents, kept current incrementally.

A `Digest` keeps, for every route, its last rendered figures (a status JSON fragment and its
Prometheus sample lines) with the signature they were rendered from. A read calls `refresh`:

  1. one cheap pass over the routes compares each route's signature (responses, in flight,
     refusals), its breaker's, and whether its latency window has new samples or an expired
     segment;
  2. only the routes that changed are re-rendered: their new samples are folded
     (`RouteStats.fold`, proportional to the new samples' distinct buckets, never to the whole
     histogram), their percentiles read from a Fenwick tree (≤ 15 lookups each), and the
     guard-wide totals adjusted by the difference;
  3. the documents are joined from the cached fragments.

So a read costs the pass plus the work of what changed since the previous read. Refresh work
runs in slices of at most `SLICE_S` of event-loop time with a yield to the loop between them,
so even a read after a burst of traffic on every route never blocks the loop for long; reads
arriving meanwhile wait for the same refresh (a lock) and then find nothing left to do.

The Prometheus text is written here (format 0.0.4, as `prometheus_client.generate_latest`
writes it: labels sorted by name, values as Go floats); `metrics.GuardCollector` renders the
same families with prometheus_client and the two are tested equal.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from crisisctl.guard.breaker import CLOSED
from crisisctl.guard.metrics import (
    CIRCUIT,
    DURATION,
    DURATION_BUCKETS_S,
    IN_FLIGHT,
    REJECTED,
    REQUESTS,
    STATUS_CLASSES,
    WINDOW_S,
    RouteStats,
    WindowCounts,
    state_metrics,
    window_summary,
)

if TYPE_CHECKING:
    from crisisctl.guard.breaker import CircuitBreaker
    from crisisctl.guard.state import GuardState

#: the longest stretch of refresh work between two yields to the event loop (seconds)
SLICE_S: Final = 0.001
_LE_LABELS: Final = [f'le="{floatToGoString(b)}",route=' for b in DURATION_BUCKETS_S]


def escape(value: str) -> str:
    """A label value escaped as the Prometheus text format wants it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(name: str, doc: str, kind: str) -> str:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


_HEADERS: Final = (
    _header(REQUESTS[0] + "_total", REQUESTS[1], "counter"),
    _header(DURATION[0], DURATION[1], "histogram"),
    _header(IN_FLIGHT[0], IN_FLIGHT[1], "gauge"),
    _header(REJECTED[0] + "_total", REJECTED[1], "counter"),
    _header(CIRCUIT[0], CIRCUIT[1], "gauge"),
)


def _classes(counts: list[int]) -> dict[str, int]:
    out = {cls: counts[i + 1] for i, cls in enumerate(STATUS_CLASSES)}
    if counts[0]:
        out["unknown"] = counts[0]
    return out


class _Entry:
    """One route's rendered figures and what they were rendered from."""

    __slots__ = (
        "breaker_json",
        "breaker_sig",
        "breaker_until",
        "extremes",
        "in_flight",
        "label",
        "label_json",
        "prom",
        "prom_label",
        "rejected",
        "requests",
        "signature",
        "status_json",
        "summary",
        "totals",
    )

    def __init__(self, label: str) -> None:
        self.label = label
        self.label_json = json.dumps(label)
        self.prom_label = f'"{escape(label)}"'
        self.signature: tuple[int, int, int] = (-1, -1, -1)
        self.totals = [0, 0, 0, 0, 0, 0]
        self.requests = 0
        self.in_flight = 0
        self.rejected: dict[str, int] = {}
        self.summary: dict[str, float | int] = window_summary(WindowCounts(), 0, 0)
        self.extremes = (0, 0)
        self.status_json = ""
        #: Prometheus lines per per-route family, in `_HEADERS` order
        self.prom = ["", "", "", "", ""]
        self.breaker_sig: tuple[int, int, int] | None = None
        #: monotonic time until which the breaker's window may still change without a call
        self.breaker_until = 0.0
        self.breaker_json: str | None = None


class _Families:
    """A collector of fixed families, for `generate_latest`."""

    def __init__(self, families: Iterator[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return self._families


class Digest:
    """Incrementally maintained status and metrics of one guard (see the module docstring)."""

    def __init__(self, state: GuardState, operations: Callable[[], Iterator[Metric]]) -> None:
        self.state = state
        self._operations = operations
        self._entries: dict[str, _Entry] = {}
        #: the window of every route together, for the guard-wide latency summary
        self._total = WindowCounts()
        self._totals = [0, 0, 0, 0, 0, 0]
        self._shed: dict[str, int] = {}
        self._in_flight = 0
        self._latency: dict[str, float | int] = window_summary(self._total, 0, 0)
        self._latency_stale = False
        self._dirty = True
        self._routes_json = "[]"
        self._breakers_json = "{}"
        self._route_families = "".join(_HEADERS)
        self._lock = asyncio.Lock()
        #: routes re-rendered so far (the unit of a refresh's work; tests bound it)
        self.renders = 0
        #: refresh slices run so far, and the longest one (seconds of event-loop time)
        self.slices = 0
        self.longest_slice_s = 0.0

    # -- refreshing ------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Bring every route's figures up to date (sliced; see the module docstring)."""
        async with self._lock:
            clock = self.state.clock
            breakers = self.state.breakers
            entries = self._entries
            started = time.perf_counter()
            now = clock()
            for label, stats in list(self.state.routes.items()):
                entry = entries.get(label)
                breaker = breakers.get(label)
                changed = False
                if entry is None or stats.signature() != entry.signature or stats.needs_fold(now):
                    entry = self._render(label, stats, entry, now)
                    changed = True
                if breaker is not None and (changed or self._breaker_moves(entry, breaker, now)):
                    self._render_breaker(entry, breaker, now)
                if changed and time.perf_counter() - started >= SLICE_S:
                    self._end_slice(started)
                    await asyncio.sleep(0)  # let requests run between slices
                    started = time.perf_counter()
                    now = clock()
            if self._latency_stale:
                self._latency_stale = False
                low, high = self._extremes()
                self._latency = window_summary(self._total, low, high)
            if self._dirty:
                self._assemble()
            self._end_slice(started)

    def _end_slice(self, started: float) -> None:
        spent = time.perf_counter() - started
        self.slices += 1
        if spent > self.longest_slice_s:
            self.longest_slice_s = spent

    def _render(self, label: str, stats: RouteStats, entry: _Entry | None, now: float) -> _Entry:
        self.renders += 1
        self._dirty = True
        if entry is None:
            entry = self._entries[label] = _Entry(label)
        else:
            self._count(entry, -1)
        if stats.needs_fold(now):
            stats.fold(now, self._total)
            entry.extremes = stats.window_extremes()
            entry.summary = window_summary(stats.window, *entry.extremes)
            self._latency_stale = True
        entry.signature = stats.signature()
        entry.totals = stats.totals()
        entry.requests = sum(entry.totals)
        entry.in_flight = stats.in_flight
        entry.rejected = dict(stats.rejected)
        self._count(entry, 1)
        entry.status_json = json.dumps(
            {"route": label, "requests": entry.requests,
             "status_classes": _classes(entry.totals), "rejected": entry.rejected,
             "in_flight": entry.in_flight, "latency_ms": entry.summary},
            separators=(",", ":"),
        )  # fmt: skip
        self._render_prometheus(entry, stats)
        return entry

    def _count(self, entry: _Entry, sign: int) -> None:
        """Add (1) or take back (-1) a route's share of the guard-wide totals."""
        for i, n in enumerate(entry.totals):
            self._totals[i] += sign * n
        self._in_flight += sign * entry.in_flight
        shed = self._shed
        for reason, n in entry.rejected.items():
            left = shed.get(reason, 0) + sign * n
            if left:
                shed[reason] = left
            else:
                shed.pop(reason, None)

    def _render_prometheus(self, entry: _Entry, stats: RouteStats) -> None:
        label = entry.prom_label
        go = floatToGoString
        lines = []
        for method, counts in stats.by_method.items():
            m = escape(method)
            for index, n in enumerate(counts):
                if n:
                    cls = STATUS_CLASSES[index - 1] if index else "unknown"
                    lines.append(
                        f'{REQUESTS[0]}_total{{method="{m}",route={label},'
                        f'status_class="{cls}"}} {go(n)}\n'
                    )
        entry.prom[0] = "".join(lines)
        if stats.lifetime_count:
            name = DURATION[0]
            seen = 0
            lines = []
            for le, n in zip(_LE_LABELS, stats.le_counts, strict=False):
                seen += n
                lines.append(f"{name}_bucket{{{le}{label}}} {go(seen)}\n")
            count = go(stats.lifetime_count)
            lines.append(f'{name}_bucket{{le="+Inf",route={label}}} {count}\n')
            lines.append(f"{name}_count{{route={label}}} {count}\n")
            lines.append(f"{name}_sum{{route={label}}} {go(stats.lifetime_sum_us / 1e6)}\n")
            entry.prom[1] = "".join(lines)
        entry.prom[2] = f"{IN_FLIGHT[0]}{{route={label}}} {go(stats.in_flight)}\n"
        entry.prom[3] = "".join(
            f'{REJECTED[0]}_total{{reason="{escape(reason)}",route={label}}} {go(n)}\n'
            for reason, n in stats.rejected.items()
        )

    @staticmethod
    def _breaker_moves(entry: _Entry, breaker: CircuitBreaker, now: float) -> bool:
        """Whether the breaker's figures may differ from the rendered ones."""
        sig = (breaker.state, breaker.calls, breaker.opens_total)
        return sig != entry.breaker_sig or breaker.state != CLOSED or now < entry.breaker_until

    def _render_breaker(self, entry: _Entry, breaker: CircuitBreaker, now: float) -> None:
        sig = (breaker.state, breaker.calls, breaker.opens_total)
        if sig != entry.breaker_sig:
            # its window (and the ticker's snapshots of it) settle one window after the change
            entry.breaker_until = now + breaker.config.window_s + 2.0
            entry.breaker_sig = sig
        rendered = json.dumps(breaker.describe(now), separators=(",", ":"))
        if rendered != entry.breaker_json:
            entry.breaker_json = rendered
            entry.prom[4] = f"{CIRCUIT[0]}{{route={entry.prom_label}}} {float(breaker.state)}\n"
            self._dirty = True

    def _extremes(self) -> tuple[int, int]:
        low = high = -1
        for entry in self._entries.values():
            e_low, e_high = entry.extremes
            if entry.summary["count"]:
                low = e_low if low < 0 or e_low < low else low
                high = e_high if e_high > high else high
        return (max(low, 0), max(high, 0))

    def _assemble(self) -> None:
        self._dirty = False
        entries = list(self._entries.values())
        ordered = sorted(entries, key=lambda e: -e.requests)
        self._routes_json = "[" + ",".join(e.status_json for e in ordered) + "]"
        self._breakers_json = (
            "{"
            + ",".join(f"{e.label_json}:{e.breaker_json}" for e in entries if e.breaker_json)
            + "}"
        )
        parts = []
        for i, header in enumerate(_HEADERS):
            parts.append(header)
            parts.extend(e.prom[i] for e in entries)
        self._route_families = "".join(parts)

    # -- documents -------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """The guard-wide figures of the status document, from the last refresh."""
        shed = dict(self._shed)
        return {
            "in_flight": self._in_flight,
            "requests": {"total": sum(self._totals), "status_classes": _classes(self._totals)},
            "shed": shed,
            "shed_total": sum(shed.values()),
            "latency_window_s": WINDOW_S,
            "latency_ms": dict(self._latency),
        }

    def status_body(self, head: dict[str, Any]) -> bytes:
        """The status document: `head` plus the per-route parts, as JSON bytes."""
        text = json.dumps(head, separators=(",", ":"), default=str)
        text = f'{text[:-1]},"breakers":{self._breakers_json},"routes":{self._routes_json}}}'
        return text.encode()

    def metrics_body(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        fixed = generate_latest(_Families(self._fixed_families()))  # type: ignore[arg-type]
        return self._route_families.encode() + fixed

    def _fixed_families(self) -> Iterator[Metric]:
        yield from state_metrics(self.state)
        yield from self._operations()
