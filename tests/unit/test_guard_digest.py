"""The control surface's incremental status and metrics: the figures equal what was recorded,
the Prometheus text equals the reference collector's, and a read only re-renders the routes
that changed (work counted, never timed)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from crisisctl.guard import Guard, GuardConfig, RouteRule
from crisisctl.guard.metrics import (
    DURATION_BUCKETS_S,
    SEGMENT_PARTS,
    SEGMENT_S,
    WINDOW_SEGMENTS,
    RouteStats,
    WindowCounts,
    epoch_of,
    window_summary,
)
from crisisctl.guard.types import Receive, Scope, Send
from crisisctl.stats import MAX_TRACKABLE_US, LatencyHistogram

latencies = st.lists(
    st.one_of(
        st.integers(0, 3000),
        st.integers(3000, 2_000_000),
        st.integers(2_000_000, MAX_TRACKABLE_US + 10),
    ),
    min_size=1,
    max_size=300,
)


def histogram(values: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for value in values:
        hist.record_us(value)
    return hist


@given(latencies)
def test_the_window_summary_equals_the_summary_of_the_merged_histogram(values: list[int]) -> None:
    hist = histogram(values)
    window = WindowCounts()
    window.add(hist, 1)
    expected = hist.summary().as_dict()
    assert window_summary(window, hist.min_us, hist.max_us) == expected


@given(latencies, latencies)
def test_removing_a_histogram_from_the_window_leaves_the_others(
    kept: list[int], gone: list[int]
) -> None:
    window = WindowCounts()
    window.add(histogram(gone), 1)
    window.add(histogram(kept), 1)
    window.add(histogram(gone), -1)
    hist = histogram(kept)
    assert window_summary(window, hist.min_us, hist.max_us) == hist.summary().as_dict()


@settings(max_examples=200)
@given(st.lists(st.tuples(latencies, st.booleans()), min_size=1, max_size=8))
def test_the_percentile_cursors_follow_every_add_and_remove(
    steps: list[tuple[list[int], bool]],
) -> None:
    """Read after every change, so each percentile's cursor moves both ways from where the
    last read left it (a fresh window reads from zero, which hides such a bug)."""
    window = WindowCounts()
    kept: list[list[int]] = []
    for values, remove_oldest in steps:
        window.add(histogram(values), 1)
        kept.append(values)
        if remove_oldest and len(kept) > 1:
            window.add(histogram(kept.pop(0)), -1)
        merged = histogram([v for part in kept for v in part])
        assert window_summary(window, merged.min_us, merged.max_us) == merged.summary().as_dict()


# one step: (seconds later, samples recorded, then fold?)
steps = st.lists(
    st.tuples(
        st.floats(0.0, 40.0), st.lists(st.integers(0, 5_000_000), max_size=40), st.booleans()
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150)
@given(steps)
def test_folding_keeps_the_last_minute_and_the_whole_lifetime(
    plan: list[tuple[float, list[int], bool]],
) -> None:
    stats = RouteStats("/r")
    now = 1000.0
    cut: list[tuple[int, int]] = []  # (epoch the sample was cut in, value)
    live: list[int] = []
    for later, values, fold in plan:
        now += later
        for value in values:
            stats.latency.record_us(value)
        live.extend(values)
        if fold:
            stats.fold(now)
            cut.extend((epoch_of(now), v) for v in live)
            live = []
        else:
            stats.snapshot(now)  # the ticker's cut: no fold, O(1)
            cut.extend((epoch_of(now), v) for v in live)
            live = []
    stats.fold(now)
    oldest = epoch_of(now) - WINDOW_SEGMENTS
    recent = histogram([v for epoch, v in cut if epoch >= oldest])
    low, high = stats.window_extremes()
    assert window_summary(stats.window, low, high) == recent.summary().as_dict()
    lifetime = histogram([v for _, v in cut])
    bounds = [round(b * 1e6) for b in DURATION_BUCKETS_S]
    cumulative = [sum(stats.le_counts[: i + 1]) for i in range(len(bounds))]
    assert cumulative == lifetime.cumulative_counts(bounds)
    assert (stats.lifetime_count, stats.lifetime_sum_us) == (lifetime.count, lifetime.sum_us)


def test_a_window_segment_keeps_at_most_segment_parts_histograms() -> None:
    """Folds many times within one epoch (reads many times a second): the segment keeps its
    histograms apart up to SEGMENT_PARTS, then merges; the window stays exact, and so does
    taking the segment out once it has left the window."""
    stats = RouteStats("/r")
    now = 1000.0 * SEGMENT_S  # (the start of an epoch)
    values: list[int] = []
    for i in range(SEGMENT_PARTS + 9):
        value = 1000 + 37 * i
        stats.latency.record_us(value)
        values.append(value)
        stats.fold(now + i * 0.01)
    (segment,) = stats.segments
    assert len(segment.parts) == SEGMENT_PARTS
    assert segment.count == len(values)
    low, high = stats.window_extremes()
    assert (low, high) == (min(values), max(values))
    assert window_summary(stats.window, low, high) == histogram(values).summary().as_dict()
    stats.fold(now + SEGMENT_S * (WINDOW_SEGMENTS + 1))
    assert not stats.segments
    assert stats.window.count == 0 and not stats.window.counts and not stats.window.groups


# -- through the guard ------------------------------------------------------------------------
class Template:
    def __init__(self, path: str) -> None:
        self.path = path


class RoutedApp:
    """A bare ASGI app exposing Starlette-style routes, so the guard labels by template."""

    def __init__(self, count: int) -> None:
        self.routes = [Template(f"/r{i}/{{id}}") for i in range(count)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def serve(guard: Guard) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=guard, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://guard")


def build(templates: int, **config: Any) -> Guard:
    config.setdefault("token", "")
    config.setdefault("control_rate_limit", None)
    return Guard(RoutedApp(templates), GuardConfig(**config))


def metric_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line)


def bucket_values(text: str, route: str) -> list[float]:
    prefix = "crisisctl_http_request_duration_seconds_bucket{"
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and f'route="{route}"' in line
    ]


async def test_status_and_metrics_report_what_was_recorded() -> None:
    guard = build(3)
    rnd = random.Random(7)
    references: dict[str, LatencyHistogram] = {}
    async with serve(guard) as http:
        for i in range(3):
            assert (await http.get(f"/r{i}/1")).status_code == 200
        for label, stats in guard.state.routes.items():
            references[label] = stats.latency.copy()  # the request's own sample
        for round_ in range(3):
            for label, stats in guard.state.routes.items():
                for _ in range(50 * (round_ + 1)):
                    value = int(rnd.lognormvariate(0.0, 0.7) * 20_000)
                    stats.latency.record_us(value)  # the public recording API
                    references[label].record_us(value)
            status = (await http.get("/_crisis/status")).json()
            metrics = (await http.get("/_crisis/metrics")).text
            routes = {r["route"]: r for r in status["routes"]}
            everything = LatencyHistogram()
            for label, ref in references.items():
                assert routes[label]["latency_ms"] == ref.summary().as_dict()
                assert routes[label]["requests"] == 1
                bounds = [round(b * 1e6) for b in DURATION_BUCKETS_S]
                expected = [*ref.cumulative_counts(bounds), ref.count]
                assert bucket_values(metrics, label) == [float(n) for n in expected]
                everything.merge(ref)
            assert status["latency_ms"] == everything.summary().as_dict()
            assert status["requests"]["total"] == 3
            assert [r["route"] for r in status["routes"]] == sorted(routes)


async def test_the_metrics_text_equals_the_reference_collector() -> None:
    rules = (
        RouteRule('/we"ird\\path'),
        RouteRule("/line\nbreak"),
        RouteRule("/limited", rate_limit="1/minute"),
    )
    guard = build(2, routes=rules)
    async with serve(guard) as http:
        for path in ("/r0/1", "/r1/2", "/r1/3", '/we"ird\\path', "/limited", "/limited"):
            await http.get(path)
        await http.request("PURGE", '/we"ird\\path')
        served = (await http.get("/_crisis/metrics")).text
    reference = generate_latest(guard.registry).decode()
    assert 'route="/we\\"ird\\\\path"' in served
    assert metric_lines(served) == metric_lines(reference)
    assert served.startswith("# HELP crisisctl_http_requests_total")


async def test_a_read_renders_only_the_routes_that_changed() -> None:
    guard = build(50)
    digest = guard.control_surface.digest
    async with serve(guard) as http:
        for i in range(50):
            await http.get(f"/r{i}/1")
        await http.get("/_crisis/status")
        assert digest.renders == 50
        await http.get("/_crisis/status")
        await http.get("/_crisis/metrics")
        assert digest.renders == 50  # nothing changed: nothing re-rendered, no histogram walked
        for label in list(guard.state.routes)[:3]:
            guard.state.routes[label].latency.record_us(1234)
        await http.get("/r7/1")
        await http.get("/_crisis/metrics")
        assert digest.renders == 54
        await http.get("/_crisis/status")
        assert digest.renders == 54


async def test_a_metrics_read_leaves_the_recent_windows_to_the_status_read() -> None:
    """A scraper reading only the metrics pays for the lifetime counts, not for the windows
    behind the status document's percentiles; the status read takes the samples in."""
    guard = build(3)
    async with serve(guard) as http:
        for i in range(3):
            await http.get(f"/r{i}/1")
        await http.get("/_crisis/metrics")
        windows = [stats.window.count for stats in guard.state.routes.values()]
        assert windows == [0, 0, 0]
        status = (await http.get("/_crisis/status")).json()
    assert [stats.window.count for stats in guard.state.routes.values()] == [1, 1, 1]
    assert status["latency_ms"]["count"] == 3


async def test_reads_within_one_epoch_keep_one_window_segment() -> None:
    guard = build(1)
    guard._clock = Clock()  # time stands still: every read falls in one epoch
    async with serve(guard) as http:
        await http.get("/r0/1")
        stats = next(iter(guard.state.routes.values()))
        for i in range(30):
            stats.latency.record_us(1000 + i)
            assert (await http.get("/_crisis/status")).status_code == 200
    assert len(stats.segments) == 1
    assert stats.window.count == 31


async def test_concurrent_reads_share_one_refresh() -> None:
    guard = build(20)
    async with serve(guard) as http:
        for i in range(20):
            await http.get(f"/r{i}/1")
        answers = await asyncio.gather(*(http.get("/_crisis/status") for _ in range(4)))
    assert {a.status_code for a in answers} == {200}
    assert guard.control_surface.digest.renders == 20


async def test_the_recent_window_forgets_samples_after_a_minute() -> None:
    guard = build(1)
    clock = Clock()
    guard._clock = clock  # the digest reads time through the guard's state view
    async with serve(guard) as http:
        await http.get("/r0/1")
        first = (await http.get("/_crisis/status")).json()
        assert first["routes"][0]["latency_ms"]["count"] == 1
        clock.now += SEGMENT_S * (WINDOW_SEGMENTS + 1) + 1
        later = (await http.get("/_crisis/status")).json()
        metrics = (await http.get("/_crisis/metrics")).text
    assert later["routes"][0]["latency_ms"]["count"] == 0
    assert later["latency_ms"]["count"] == 0
    assert later["requests"]["total"] == 1  # counters keep the lifetime
    assert bucket_values(metrics, "/r0/{id}")[-1] == 1.0


async def test_the_status_document_keeps_its_keys() -> None:
    guard = build(1)
    async with serve(guard) as http:
        await http.get("/r0/1")
        status = (await http.get("/_crisis/status")).json()
    assert set(status) >= {
        "service", "pid", "started_at", "uptime_s", "compiled", "mode", "mode_endpoint",
        "in_flight", "requests", "shed", "shed_total", "concurrency", "rate_limits", "storage",
        "breakers", "latency_window_s", "latency_ms", "routes", "operations", "internal_errors",
    }  # fmt: skip
    assert status["breakers"]["/r0/{id}"]["state"] == "closed"
    assert status["latency_window_s"] == 60


@pytest.mark.parametrize("reads", [1, 3])
async def test_refusals_and_in_flight_are_counted_without_new_samples(reads: int) -> None:
    guard = build(1, routes=(RouteRule("/limited", rate_limit="1/minute"),))
    async with serve(guard) as http:
        for _ in range(reads):
            await http.get("/_crisis/status")
        for _ in range(3):
            await http.get("/limited")
        status = (await http.get("/_crisis/status")).json()
    assert status["shed"] == {"rate_limited": 2}
    assert status["requests"]["status_classes"]["4xx"] == 2
    limited = next(r for r in status["routes"] if r["route"] == "/limited")
    assert limited["rejected"] == {"rate_limited": 2} and limited["latency_ms"]["count"] == 1


async def test_the_state_view_is_read_only_and_live() -> None:
    guard = build(1)
    state = guard.state
    assert dict(state.routes) == {}
    async with serve(guard) as http:
        await http.get("/r0/1")
    assert list(state.routes) == ["/r0/{id}"]  # a view over the guard's own, not a copy
    assert state.routes["/r0/{id}"].signature() == (1, 0, 0)
    with pytest.raises(TypeError):
        state.routes["/x"] = RouteStats("/x")  # type: ignore[index]
    with pytest.raises(TypeError):
        del state.breakers["/r0/{id}"]  # type: ignore[attr-defined]
    guard.set_mode("emergency", actor="test", reason="view")
    assert state.mode == "emergency" and state.modes.describe()["mode"] == "emergency"
    assert state.storage == {"backend": "memory", "healthy": True}
    with pytest.raises(AttributeError):
        state.mode = "normal"  # type: ignore[misc]


async def test_the_registry_counts_samples_no_read_has_folded_yet() -> None:
    guard = build(1)
    async with serve(guard) as http:
        await http.get("/r0/1")
        await http.get("/_crisis/metrics")  # folds the first sample
        await http.get("/r0/2")
        guard.state.routes["/r0/{id}"].snapshot(guard.clock())  # the ticker's cut: not folded
        await http.get("/r0/3")
        reference = generate_latest(guard.registry).decode()
        assert 'crisisctl_http_request_duration_seconds_count{route="/r0/{id}"} 3.0' in reference
        served = (await http.get("/_crisis/metrics")).text
    assert metric_lines(served) == metric_lines(generate_latest(guard.registry).decode())


async def test_a_quiet_breaker_is_shown_again_once_its_window_has_emptied() -> None:
    guard = build(1)
    clock = Clock()
    guard._clock = clock
    label = "/r0/{id}"
    async with serve(guard) as http:
        for i in range(3):
            await http.get(f"/r0/{i}")
        first = (await http.get("/_crisis/status")).json()
        assert first["breakers"][label]["window_calls"] == 3
        breaker = guard.state.breakers[label]
        clock.now += 1.0
        breaker.tick(clock.now)  # the ticker's snapshot of the call counter
        clock.now += 5.0
        assert (await http.get("/_crisis/status")).json()["breakers"][label]["window_calls"] == 3
        clock.now += 8.0  # past the breaker's window (10 s) and its due time
        later = (await http.get("/_crisis/status")).json()
    assert later["breakers"][label]["window_calls"] == 0
    assert guard.control_surface.digest.renders == 1  # the route itself did not change
