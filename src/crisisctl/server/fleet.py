"""The fleet's figures, read from the watch's series store (what ``/api/fleet`` and the
``fleet`` events carry, and the time series behind the charts).

Per service, from the series the scraper writes (``watch/scrape.py``):

* per instance: ``up``, ``guard_mode_code`` (else ``guard_emergency``), ``guard_limit``,
  ``guard_in_flight`` — the latest sample;
* ``rate_rps`` = Σ per instance of its counter's increase ÷ the span its points cover, over the
  last window (≥ 3 intervals, ≥ 60 s; a young store is not diluted); ``shed`` likewise per
  reason (``guard_shed_total``); ``error_ratio`` = Σ increase(``guard_errors_total``) ÷
  Σ increase(``guard_requests_total``) over that window;
* ``p50_ms``/``p95_ms``/``p99_ms``: the worst instance's latest guard window; ``rss_bytes``:
  the sum over instances;
* ``burn_rates``: for each burn-rate rule of the watch file, per window: (bad ÷ total) ÷
  (1 − objective) over that long window (availability: ``guard_errors_total``; latency: the
  requests slower than its bound); ``budget_left`` = 1 − burn × covered ÷ period over the
  longest window with data (clipped to 0..1): the share of the period's budget not yet burnt
  as far back as the store sees;
* ``severity``: the worst firing alert of the service, else OK.

`series` gives aligned arrays for one service over a window (≤ `MAX_POINTS` points: every k-th
scrape time; rates are taken between the kept points, so no increase is lost).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from crisisctl.watch.loop import Watch
from crisisctl.watch.rules_eval import go_float
from crisisctl.watch.rules_spec import BurnRateRule
from crisisctl.watch.scrape import instance_name
from crisisctl.watch.store import Series, SeriesStore

__all__ = [
    "FLEET_SERIES",
    "MAX_POINTS",
    "fleet_snapshot",
    "fleet_snapshot_async",
    "index_store",
    "service_series",
    "window_label",
]

MAX_POINTS: Final = 360
#: services computed per turn of the event loop (~10 ms on a slow host)
SERVICES_PER_TURN: Final = 32
MODES: Final = {0: "normal", 1: "emergency", 2: "recovering"}
#: series the console reads: the serve keeps them for at least an hour
FLEET_SERIES: Final = (
    "up",
    "guard_requests_total",
    "guard_errors_total",
    "guard_rejected_total",
    "guard_shed_total",
    "guard_in_flight",
    "guard_limit",
    "guard_mode_code",
    "guard_emergency",
    "guard_latency_p50_ms",
    "guard_latency_p95_ms",
    "guard_latency_p99_ms",
    "guard_rss_bytes",
)


def window_label(seconds: float) -> str:
    """3600 → "1h", 300 → "5m", 86400 → "1d", 45 → "45s"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def redact_url(url: str) -> str:
    """`url` without credentials, query or fragment (a token may hide in either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _per_second(points: list[tuple[float, float]]) -> float | None:
    """The mean per-second increase of a (reset-corrected) counter's points."""
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return max(0.0, points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


#: (series name, service) → [(labels, series)]: a store's series grouped once per snapshot
_Index = dict[tuple[str, str], list[tuple[dict[str, str], Series]]]


def index_store(store: SeriesStore, names: Iterable[str]) -> _Index:
    """Group the series of `names` by service in one pass (a fleet snapshot of N services then
    reads each series once, not N times)."""
    index: _Index = {}
    for name in set(names):
        for key in store.by_name.get(name, ()):
            series = store.get(key)
            if series is not None:
                labels = dict(key.labels)
                index.setdefault((name, labels.get("service", "")), []).append((labels, series))
    return index


class _View:
    """One service's series in a store, read at `now` (through `index` when given)."""

    def __init__(
        self,
        store: SeriesStore,
        service: str,
        now: float,
        fresh_s: float,
        index: _Index | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.now = now
        self.fresh_s = fresh_s
        self.index = index

    def each(self, name: str, **match: str) -> Iterable[tuple[dict[str, str], Series]]:
        if self.index is not None:
            wanted = tuple(match.items())
            for labels, series in self.index.get((name, self.service), ()):
                if all(labels.get(k) == v for k, v in wanted):
                    yield labels, series
            return
        for key in self.store.select(name, {"service": self.service, **match}):
            found = self.store.get(key)
            if found is not None:
                yield dict(key.labels), found

    def latest(self, series: Series) -> float | None:
        point = series.latest()
        if point is None or self.now - point[0] > self.fresh_s:
            return None
        return _finite(point[1])

    def rate(self, name: str, window: float, **match: str) -> float | None:
        """Σ per-second increase of counter `name` over the points of the last `window` (each
        series over the span its points cover: a young store is not diluted by the window)."""
        total: float | None = None
        for _, series in self.each(name, **match):
            grown = _per_second(series.window(self.now - window, self.now))
            if grown is not None:
                total = grown if total is None else total + grown
        return total

    def increase(self, name: str, window: float, **match: str) -> float | None:
        total: float | None = None
        for _, series in self.each(name, **match):
            grown = series.increase(self.now - window, self.now)
            if grown is not None:
                total = grown if total is None else total + grown
        return total


def _instances(watch: Watch, view: _View) -> list[dict[str, Any]]:
    spec = watch.config.services.get(view.service)
    urls = {instance_name(u): redact_url(u) for u in (spec.guards if spec else [])}
    found: dict[str, dict[str, Any]] = {}
    for labels, series in view.each("up", target="guard"):
        name = labels.get("instance", "")
        value = view.latest(series)
        found[name] = {
            "instance": name,
            "url_redacted": urls.get(name, name),
            "up": value == 1.0,
            "mode": None,
            "limit": None,
            "in_flight": None,
        }
    for metric, field in (("guard_limit", "limit"), ("guard_in_flight", "in_flight")):
        for labels, series in view.each(metric):
            row = found.get(labels.get("instance", ""))
            if row is not None:
                row[field] = view.latest(series)
    for metric in ("guard_emergency", "guard_mode_code"):  # the code, when present, wins
        for labels, series in view.each(metric):
            row = found.get(labels.get("instance", ""))
            value = view.latest(series)
            if row is not None and value is not None:
                row["mode"] = MODES.get(int(value), "normal")
    return [found[k] for k in sorted(found)]


def _burn(view: _View, rule: BurnRateRule) -> tuple[dict[str, float | None], float | None]:
    rates: dict[str, float | None] = {}
    budget: float | None = None
    for window in sorted(rule.windows, key=lambda w: w.long):
        span = window.long
        total_name = rule.total_latency if rule.latency_below is not None else rule.total
        total = view.increase(total_name, span, **rule.match)
        if rule.latency_below is not None:
            le = go_float(rule.latency_below)
            good = view.increase(rule.buckets, span, le=le, **rule.match)
            bad = None if total is None else max(0.0, total - (good or 0.0))
        else:
            bad = view.increase(rule.errors, span, **rule.match)
            bad = 0.0 if bad is None and total is not None else bad
        rate = None
        if total and bad is not None:
            rate = (bad / total) / (1.0 - rule.objective)
            covered = max(
                (s.covered_s(view.now) for _, s in view.each(total_name, **rule.match)),
                default=0.0,
            )
            budget = min(1.0, max(0.0, 1.0 - rate * min(covered, span) / rule.period))
        rates[window_label(window.long)] = _finite(rate)
    return rates, budget


def service_figures(
    watch: Watch, service: str, now: float, index: _Index | None = None
) -> dict[str, Any]:
    """One service's entry of the fleet document."""
    interval = watch.config.interval
    view = _View(watch.store, service, now, fresh_s=2.5 * interval + 1.0, index=index)
    window = max(60.0, 3.0 * interval)
    requests = view.increase("guard_requests_total", window)
    errors = view.increase("guard_errors_total", window)
    shed: dict[str, float] = {}
    for labels, series in view.each("guard_shed_total"):
        grown = _per_second(series.window(now - window, now))
        if grown is not None:
            reason = labels.get("reason", "")
            shed[reason] = shed.get(reason, 0.0) + grown
    latency: dict[str, float | None] = {}
    for pct in ("p50", "p95", "p99"):
        values = [
            v for v in (view.latest(s) for _, s in view.each(f"guard_latency_{pct}_ms"))
            if v is not None
        ]  # fmt: skip
        latency[f"{pct}_ms"] = max(values) if values else None
    rss = [v for v in (view.latest(s) for _, s in view.each("guard_rss_bytes")) if v is not None]
    burn_rates: dict[str, dict[str, float | None]] = {}
    budget_left: dict[str, float | None] = {}
    for rule in watch.rules:
        if isinstance(rule, BurnRateRule) and rule.match.get("service", service) == service:
            burn_rates[rule.name], budget_left[rule.name] = _burn(view, rule)
    firing = [a for a in watch.engine.firing() if a.service == service]
    severity = max((a.severity for a in firing), default=None)
    return {
        "name": service,
        "severity": severity.name if severity is not None else "OK",
        "instances": _instances(watch, view),
        "rate_rps": view.rate("guard_requests_total", window),
        "error_ratio": (errors or 0.0) / requests if requests else None,
        **latency,
        "shed": shed,
        "burn_rates": burn_rates,
        "budget_left": budget_left,
        "rss_bytes": sum(rss) if rss else None,
    }


def _fleet_index(watch: Watch) -> _Index:
    names = list(FLEET_SERIES)
    for rule in watch.rules:
        if isinstance(rule, BurnRateRule):
            names += [rule.total, rule.errors, rule.total_latency, rule.buckets]
    return index_store(watch.store, names)


def fleet_snapshot(watch: Watch | None, now: float) -> dict[str, Any]:
    """The whole fleet document (``GET /api/fleet``, ``fleet`` events)."""
    if watch is None:
        return {"generated_at": _iso(now), "services": []}
    index = _fleet_index(watch)
    return {
        "generated_at": _iso(now),
        "services": [service_figures(watch, name, now, index) for name in watch.config.services],
    }


async def fleet_snapshot_async(watch: Watch | None, now: float) -> dict[str, Any]:
    """`fleet_snapshot`, yielding to the event loop every `SERVICES_PER_TURN` services (a
    thousand services take a few hundred ms on a slow host: the API and the streams must not
    wait for them)."""
    if watch is None:
        return fleet_snapshot(None, now)
    index = _fleet_index(watch)
    await asyncio.sleep(0)
    services = []
    for number, name in enumerate(watch.config.services, 1):
        services.append(service_figures(watch, name, now, index))
        if number % SERVICES_PER_TURN == 0:
            await asyncio.sleep(0)
    return {"generated_at": _iso(now), "services": services}


# -- time series for charts ------------------------------------------------------------------
def _by_instance(view: _View, name: str, start: float) -> list[dict[float, float]]:
    return [dict(series.window(start, view.now)) for _, series in view.each(name)]


def _rate_at(counters: list[dict[float, float]], before: float | None, at: float) -> float | None:
    if before is None or at <= before:
        return None
    total: float | None = None
    for points in counters:
        if before in points and at in points:
            grown = max(0.0, points[at] - points[before]) / (at - before)
            total = grown if total is None else total + grown
    return total


def _gauge_at(gauges: list[dict[float, float]], at: float, how: str) -> float | None:
    values = [points[at] for points in gauges if at in points]
    if not values:
        return None
    return _finite(max(values) if how == "max" else sum(values))


def service_series(watch: Watch, service: str, now: float, window: float) -> dict[str, Any]:
    """Aligned arrays (``t`` in unix seconds) for the charts of one service."""
    view = _View(watch.store, service, now, fresh_s=window)
    start = now - window
    times = sorted({t for points in _by_instance(view, "up", start) for t in points})
    step = max(1, math.ceil(len(times) / MAX_POINTS))
    kept = times[len(times) - 1 :: -step][::-1] if times else []
    counters = {
        name: _by_instance(view, f"guard_{name}_total", start)
        for name in ("requests", "errors", "rejected")
    }
    gauges = {
        "p50_ms": ("guard_latency_p50_ms", "max"),
        "p95_ms": ("guard_latency_p95_ms", "max"),
        "p99_ms": ("guard_latency_p99_ms", "max"),
        "limit": ("guard_limit", "sum"),
        "in_flight": ("guard_in_flight", "sum"),
        "rss_bytes": ("guard_rss_bytes", "sum"),
    }
    read = {key: _by_instance(view, name, start) for key, (name, _) in gauges.items()}
    out: dict[str, list[Any]] = {
        key: []
        for key in ("t", "rate_rps", "error_ratio", *gauges, "shed_rps")
    }  # fmt: skip
    previous: float | None = None
    for at in kept:
        out["t"].append(at)
        rate = _rate_at(counters["requests"], previous, at)
        errors = _rate_at(counters["errors"], previous, at)
        out["rate_rps"].append(rate)
        out["error_ratio"].append((errors or 0.0) / rate if rate else None)
        out["shed_rps"].append(_rate_at(counters["rejected"], previous, at))
        for key, (_, how) in gauges.items():
            out[key].append(_gauge_at(read[key], at, how))
        previous = at
    return out
