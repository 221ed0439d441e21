"""The scrapers' parsing (crisisctl.watch.scrape): the guard's figures and any exposition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crisisctl.watch.scrape import Instance, guard_samples, prometheus_samples

INST = Instance("guard", "api", "http://127.0.0.1:1", "127.0.0.1:1")
ROUTE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _exposition(routes: list[str], counts: list[int]) -> str:
    """A document in the guard's format, written by prometheus_client itself."""
    registry = CollectorRegistry()
    requests = Counter(
        "crisisctl_http_requests", "r", ["method", "route", "status_class"], registry=registry
    )
    duration = Histogram(
        "crisisctl_http_request_duration_seconds",
        "d",
        ["route"],
        buckets=(0.1, 0.25, 1.0),
        registry=registry,
    )
    in_flight = Gauge("crisisctl_http_requests_in_flight", "f", ["route"], registry=registry)
    rejected = Counter("crisisctl_guard_rejected", "x", ["reason", "route"], registry=registry)
    for i, (route, n) in enumerate(zip(routes, counts, strict=False)):
        requests.labels("GET", route, "2xx").inc(n)
        requests.labels("GET", route, "5xx").inc(i)
        for k in range(n % 5):
            duration.labels(route).observe(0.05 * k)
        in_flight.labels(route).set(n % 3)
        rejected.labels("rate_limited", route).inc(n % 2)
        rejected.labels("queue_full", route).inc(n % 3)
    return generate_latest(registry).decode()


def _by_name(
    samples: list[tuple[object, float]],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(k.name, k.labels): v for k, v in samples}  # type: ignore[attr-defined]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(ROUTE, min_size=1, max_size=5, unique=True),
    st.lists(st.integers(0, 50), min_size=5, max_size=5),
)
def test_the_guard_parser_agrees_with_prometheus_client(
    routes: list[str], counts: list[int]
) -> None:
    text = _exposition(routes, counts)
    fast = _by_name(guard_samples(text, None, INST))  # type: ignore[arg-type]
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name
            if s.name.endswith("_bucket"):
                key = f"le={s.labels['le']}"
            elif s.name == "crisisctl_http_requests_total" and s.labels["status_class"] == "5xx":
                sums["errors"] = sums.get("errors", 0.0) + s.value
            sums[key] = sums.get(key, 0.0) + s.value
    labels = INST.labels
    assert fast[("guard_requests_total", labels)] == sums["crisisctl_http_requests_total"]
    assert fast[("guard_errors_total", labels)] == sums.get("errors", 0.0)
    assert fast[("guard_rejected_total", labels)] == sums.get("crisisctl_guard_rejected_total", 0.0)
    assert fast[("guard_in_flight", labels)] == sums.get("crisisctl_http_requests_in_flight", 0.0)
    assert fast[("guard_duration_count_total", labels)] == sums.get(
        "crisisctl_http_request_duration_seconds_count", 0.0
    )
    by_reason: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "crisisctl_guard_rejected_total":
                reason = s.labels["reason"]
                by_reason[reason] = by_reason.get(reason, 0.0) + s.value
    shed = {dict(k[1])["reason"]: v for k, v in fast.items() if k[0] == "guard_shed_total"}
    assert shed == by_reason
    buckets = {k[1][1][1]: v for k, v in fast.items() if k[0] == "guard_duration_le_total"}
    assert buckets == {k[3:]: v for k, v in sums.items() if k.startswith("le=")}


def test_status_figures() -> None:
    status = {
        "latency_ms": {"count": 10, "p50": 5.0, "p95": 40.0, "p99": 90.0},
        "mode": {"mode": "emergency"},
        "concurrency": {"limit": 12, "in_flight": 3},
        "process": {
            "rss_bytes": 1000,
            "cpu_percent_recent": None,
            "loop_lag_ms": {"recent_max": 3.5},
        },
    }
    got = {k.name: v for k, v in guard_samples(None, status, INST)}
    assert got == {
        "guard_latency_p50_ms": 5.0,
        "guard_latency_p95_ms": 40.0,
        "guard_latency_p99_ms": 90.0,
        "guard_emergency": 1.0,
        "guard_mode_code": 1.0,
        "guard_limit": 12.0,
        "guard_rss_bytes": 1000.0,
        "guard_loop_lag_ms": 3.5,
    }
    quiet = {k.name for k, _ in guard_samples(None, {"latency_ms": {"count": 0, "p95": 0}}, INST)}
    assert quiet == {"guard_emergency"}  # no requests: no latency to judge


def test_any_exposition_keeps_its_labels() -> None:
    text = 'x_total{service="theirs",path="/a"} 3\nnot_finite NaN\n'
    ((key, value),) = prometheus_samples(text, INST)
    assert key.name == "x_total" and value == 3.0
    assert dict(key.labels) == {
        "exported_service": "theirs",
        "path": "/a",
        "service": "api",
        "instance": "127.0.0.1:1",
    }
