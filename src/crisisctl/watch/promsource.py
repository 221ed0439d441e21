"""Prometheus as the watch's source: the series the rules read, queried from a Prometheus
server's HTTP API (``/api/v1/query``) instead of scraped from the targets.

`PrometheusScraper` is a drop-in `scrape.Scraper`: each cycle it runs instant queries that
rebuild exactly the series the scraper writes, so the same rules judge the same figures
(``L`` is the source's ``service_label`` — ``service``, else ``job`` when a series has no
such label — written ``service``; ``S`` is the source's ``selector``)::

    guard_requests_total            sum by (L, instance) (crisisctl_http_requests_total{S})
    guard_errors_total              … {status_class="5xx", S}  (0 when none)
    guard_rejected_total            sum by (L, instance) (crisisctl_guard_rejected_total{S})
    guard_duration_count_total      sum by (L, instance) (…_duration_seconds_count{S})
    guard_duration_le_total{le}     sum by (L, instance, le) (…_duration_seconds_bucket{S})
    guard_in_flight                 sum by (L, instance) (crisisctl_http_requests_in_flight{S})
    guard_emergency                 max by (L, instance) (crisisctl_guard_mode{mode="emergency"})
    guard_rss_bytes                 max by (L, instance) (crisisctl_guard_process_rss_bytes{S})
    guard_latency_pNN_ms            1000 × histogram_quantile(0.NN, rate(…_bucket{S}[1m]))
    up                              up{S}  (labelled target="prometheus")

and every other metric a rule names is read as it is (``{__name__="name", S}``). Counters are
the server's raw sums, so rates, increases, ratios and burn rates come out as when scraped;
only the latency percentiles differ in kind (the guard's status reports its own recent window,
here they come from the histogram over one minute).

`history` reads the same queries back over a span (``/api/v1/query_range``, at most
`MAX_POINTS` steps per request), so a watch that starts (``Watch.backfill``) judges its windows
on Prometheus' history at once instead of waiting for them to fill.

A failing query (unreachable server, 4xx/5xx, bad PromQL, a non-JSON answer) is logged as one
sentence and leaves that query's series out of the cycle: the rules then see missing data
(stale after three intervals), never a crash of the loop. `last_errors` keeps the cycle's
problems.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote

from crisisctl.probe.http import probe, with_path
from crisisctl.transport.target import Target
from crisisctl.watch.config import WatchConfig, resolve_secret
from crisisctl.watch.config_sources import PrometheusSource
from crisisctl.watch.model import GuardEndpoint, SeriesKey, labels_of
from crisisctl.watch.rules_spec import (
    AnomalyRule,
    BurnRateRule,
    LeakRule,
    RuleSpec,
    ThresholdRule,
)
from crisisctl.watch.scrape import Sample

__all__ = ["PrometheusScraper", "SourceError", "derived_queries"]

log = logging.getLogger("crisisctl.watch.promsource")
#: the answer of one query read at most (a fleet's worth of series)
BODY_CAP: Final = 32 * 1024 * 1024
#: steps per query_range request (Prometheus refuses more than 11,000)
MAX_POINTS: Final = 10_000
Points = list[tuple[float, float]]
_DURATION: Final = "crisisctl_http_request_duration_seconds"


class SourceError(Exception):
    """One query failed (one sentence: what and why)."""


def _sel(selector: str, *extra: str) -> str:
    parts = [*extra, selector] if selector else list(extra)
    return "{" + ", ".join(parts) + "}"


def derived_queries(source: PrometheusSource) -> dict[str, str]:
    """The watch series name → the PromQL that rebuilds it (see the module docstring)."""
    label = source.service_label
    by = f"{label}, instance" if label == "job" else f"{label}, job, instance"
    s = source.selector
    requests = f"sum by ({by}) (crisisctl_http_requests_total{_sel(s)})"
    zero = f"(0 * {requests})"
    five_xx, emergency = _sel(s, 'status_class="5xx"'), _sel(s, 'mode="emergency"')
    out = {
        "guard_requests_total": requests,
        "guard_errors_total": f"sum by ({by}) (crisisctl_http_requests_total{five_xx}) or {zero}",
        "guard_rejected_total": (
            f"sum by ({by}) (crisisctl_guard_rejected_total{_sel(s)}) or {zero}"
        ),
        "guard_duration_count_total": f"sum by ({by}) ({_DURATION}_count{_sel(s)})",
        "guard_duration_le_total": f"sum by ({by}, le) ({_DURATION}_bucket{_sel(s)})",
        "guard_in_flight": f"sum by ({by}) (crisisctl_http_requests_in_flight{_sel(s)})",
        "guard_emergency": f"max by ({by}) (crisisctl_guard_mode{emergency})",
        "guard_rss_bytes": f"max by ({by}) (crisisctl_guard_process_rss_bytes{_sel(s)})",
        "up": f"up{_sel(s)}",
    }
    for pct in ("50", "95", "99"):
        out[f"guard_latency_p{pct}_ms"] = (
            f"1000 * histogram_quantile(0.{pct}, sum by ({by}, le) "
            f"(rate({_DURATION}_bucket{_sel(s)}[1m])))"
        )
    return out


def _rule_metrics(rules: Iterable[RuleSpec]) -> set[str]:
    names: set[str] = set()
    for rule in rules:
        if isinstance(rule, ThresholdRule):
            names.add(rule.metric)
            if rule.ratio_to:
                names.add(rule.ratio_to)
        elif isinstance(rule, AnomalyRule | LeakRule):
            names.add(rule.metric)
        elif isinstance(rule, BurnRateRule):
            names.update((rule.errors, rule.total, rule.buckets, rule.total_latency))
    return names


def _promql_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_:" for c in name) and not name[0].isdigit()


class PrometheusScraper:
    """Queries a Prometheus server for one cycle's samples (the `scrape.Scraper` interface)."""

    def __init__(self, config: WatchConfig) -> None:
        assert config.source is not None
        self.source = config.source
        self.queries = derived_queries(self.source)
        for name in sorted(_rule_metrics(config.effective_rules()) - set(self.queries)):
            if _promql_name(name):
                self.queries[name] = _sel(self.source.selector, f'__name__="{name}"')
        self.headers = {k: resolve_secret(v) for k, v in self.source.headers.items()}
        if self.source.bearer is not None:
            self.headers["Authorization"] = f"Bearer {resolve_secret(self.source.bearer)}"
        elif self.source.basic is not None:
            pair = f"{self.source.basic.user}:{resolve_secret(self.source.basic.password)}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self.target: Target = self.source.transport.target(self.source.prometheus, "crisisctl")
        self.base_path = self.target.path.rstrip("/")
        #: no guards are discovered through Prometheus (the response side reads the file's)
        self.discovered: dict[str, list[GuardEndpoint]] = {}
        self.last_errors: list[str] = []

    async def _get(self, endpoint: str, params: str, promql: str, kind: str) -> list[Any]:
        path = f"{self.base_path}/api/v1/{endpoint}?query={quote(promql, safe='')}{params}"
        where = self.source.prometheus
        result = await probe(
            with_path(self.target, path),
            operation="prometheus query",
            headers=self.headers,
            timeout_s=self.source.timeout,
            body_cap=BODY_CAP,
        )
        if result.status is None:
            raise SourceError(f"Prometheus at {where} could not be reached ({result.detail}).")
        try:
            document = json.loads(result.body)
        except (ValueError, UnicodeDecodeError):
            document = None
        if result.status != 200 or not isinstance(document, dict):
            said = document.get("error", "") if isinstance(document, dict) else ""
            raise SourceError(
                f"Prometheus at {where} answered {result.status} to {promql!r}"
                + (f": {said}" if said else "")
                + "."
            )
        data = document.get("data") or {}
        if document.get("status") != "success" or data.get("resultType") != kind:
            raise SourceError(f"Prometheus at {where} gave no {kind} for {promql!r}.")
        rows = data.get("result")
        return rows if isinstance(rows, list) else []

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` now; SourceError (one sentence) when it failed."""
        return await self._get("query", "", promql, "vector")

    async def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """The range vector of `promql` over [start, end] every `step` seconds (chunked)."""
        rows: list[dict[str, Any]] = []
        chunk = step * MAX_POINTS
        first = start
        while first <= end:
            last = min(end, first + chunk)
            params = f"&start={first:.3f}&end={last:.3f}&step={step:g}"
            rows += await self._get("query_range", params, promql, "matrix")
            first = last + step
        return rows

    def _key(self, name: str, metric: dict[str, Any]) -> SeriesKey:
        label = self.source.service_label
        service = str(metric.get(label) or metric.get("job") or "")
        dropped = ("__name__", label, "job")
        labels = {k: str(v) for k, v in metric.items() if k not in dropped}
        if "service" in labels:
            labels["exported_service"] = labels.pop("service")
        labels["service"] = service
        if name == "up":
            labels["target"] = "prometheus"
        return SeriesKey(name, labels_of(labels))

    def _samples(self, name: str, rows: list[dict[str, Any]]) -> list[Sample]:
        out: list[Sample] = []
        for row in rows:
            try:
                value = float(row["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                out.append((self._key(name, row.get("metric") or {}), value))
        return out

    async def _one(self, name: str, promql: str) -> tuple[list[Sample], str | None]:
        try:
            return self._samples(name, await self.query(promql)), None
        except SourceError as exc:
            return [], str(exc)

    async def scrape(self) -> list[Sample]:
        """One cycle: every query at once; failed ones leave their series out (logged)."""
        names = list(self.queries)
        results = await asyncio.gather(*(self._one(n, self.queries[n]) for n in names))
        self.last_errors = [error for _samples, error in results if error is not None]
        for error in dict.fromkeys(self.last_errors):
            log.warning("watch source: %s", error)
        return [sample for samples, _error in results for sample in samples]

    async def history(
        self, spans: dict[str, float], end: float, step: float
    ) -> list[tuple[SeriesKey, Points]]:
        """Each query's series over its span before `end` (name → seconds), points in time
        order; a failing query is logged and left out (like `scrape`)."""

        async def one(name: str) -> list[tuple[SeriesKey, Points]]:
            try:
                rows = await self.query_range(self.queries[name], end - spans[name], end, step)
            except SourceError as exc:
                log.warning("watch source (history): %s", exc)
                return []
            out = []
            for row in rows:
                points: Points = []
                for pair in row.get("values") or []:
                    try:
                        t, value = float(pair[0]), float(pair[1])
                    except (IndexError, TypeError, ValueError):
                        continue
                    if math.isfinite(value):
                        points.append((t, value))
                out.append((self._key(name, row.get("metric") or {}), points))
            return out

        names = [n for n in self.queries if spans.get(n, 0.0) > 0]
        groups = await asyncio.gather(*(one(n) for n in names))
        return [series for group in groups for series in group]
