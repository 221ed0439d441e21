"""Issue 19, points 3, 4 and 6, against real uvicorn servers on 127.0.0.1 (budget_app.py): the
soft memory budget runs the cleanup hooks, a periodic cleanup hook runs without any budget, the
hard budget sheds only low-priority routes until memory is freed, and a blocking call in an
async route shows as event-loop lag and cuts the adaptive limit. Bounds are generous: the
machine is a busy, shared 2-core one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from guard_servers import STARTUP_S, GuardServer

CRITICAL = ["/health", "/hook"]


@contextlib.contextmanager
def budget_server(config: dict[str, Any], env: dict[str, str]) -> Iterator[GuardServer]:
    server = GuardServer({"critical_paths": CRITICAL, **config}, env, app="budget_app:app")
    try:
        server.start()
        server.wait_ready(time.monotonic() + STARTUP_S)
        yield server
    finally:
        server.stop()


def status(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/_crisis/status")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def wait_for(check: Callable[[], Any], timeout_s: float = 10.0, every_s: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (and return that), or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        time.sleep(every_s)


def test_the_soft_budget_runs_the_cleanup_hooks_and_status_reports_them() -> None:
    env = {"BUDGET_SOFT_ABOVE_MB": "60", "BUDGET_HOOK_FREES": "1"}
    with (
        budget_server({"memory": {"cooldown_s": 1.0}}, env) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client,
    ):
        before = status(client)["memory"]
        assert before["enabled"] and before["state"] == "ok" and before["cleanups"] == 0
        assert client.post("/alloc", params={"mb": 150}).json()["held_mb"] == 150

        memory = wait_for(lambda: (m := status(client)["memory"])["cleanups"] >= 1 and m)
        assert client.get("/hook").json()["calls"] >= 1
        last = memory["last_cleanup"]
        # the hook dropped the 150 MiB: RSS after is well below RSS before
        assert last["rss_before_mb"] - last["rss_after_mb"] > 100, last
        assert last["failed"] == []
        names = [hook["name"] for hook in memory["hooks"]]
        assert names[0] == "trim_cache" and "gc.collect" in names
        assert memory["soft_crossings"] >= 1 and memory["hard_mb"] is None
        settled = wait_for(lambda: (m := status(client)["memory"])["state"] == "ok" and m)
        assert not settled["shedding"]
        metrics = client.get("/_crisis/metrics").text
        assert 'crisisctl_guard_memory_budget_crossings_total{level="soft"}' in metrics
        assert "crisisctl_guard_memory_cleanups_total" in metrics
        assert 'crisisctl_guard_memory_hook_failures_total{hook="trim_cache"} 0.0' in metrics


def test_a_periodic_hook_runs_on_the_ticker_without_a_budget_and_status_shows_it() -> None:
    with (
        budget_server({}, {"BUDGET_EVERY_S": "0.2"}) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client,
    ):
        memory = wait_for(lambda: (m := status(client)["memory"])["periodic"][0]["runs"] >= 3 and m)
        assert memory["enabled"] is False  # no soft budget: the periodic hook runs all the same
        (hook,) = memory["periodic"]
        assert hook["name"] == "sweep" and hook["every_s"] == 0.2
        assert hook["failures"] == 0 and hook["last_error"] is None and hook["last_ms"] >= 0
        seen = client.get("/periodic").json()
        assert seen["calls"] >= 3 and seen["reachable"]  # memory_of(request) finds the policy
        metrics = client.get("/_crisis/metrics").text
        assert 'crisisctl_guard_memory_periodic_runs_total{hook="sweep"}' in metrics
        assert 'crisisctl_guard_memory_periodic_failures_total{hook="sweep"} 0.0' in metrics


def test_the_hard_budget_sheds_only_low_priority_routes_until_memory_is_freed() -> None:
    env = {"BUDGET_SOFT_ABOVE_MB": "60", "BUDGET_HARD_ABOVE_MB": "120"}
    config = {"memory": {"cooldown_s": 600.0}}
    with (
        budget_server(config, env) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client,
    ):
        assert client.get("/low").status_code == 200
        assert client.post("/alloc", params={"mb": 200}).status_code == 200

        shed = wait_for(lambda: (r := client.get("/low")).status_code == 503 and r)
        assert shed.json()["reason"] == "memory"
        assert int(shed.headers["retry-after"]) >= 1
        assert client.get("/high").status_code == 200
        assert client.get("/ok").status_code == 200  # normal priority: above the shed level
        assert client.get("/health").status_code == 200
        assert client.get("/_crisis/health").status_code == 200
        memory = status(client)["memory"]
        assert memory["state"] == "hard" and memory["shedding"] and memory["hard_crossings"] == 1
        metrics = client.get("/_crisis/metrics").text
        assert "crisisctl_guard_memory_shedding 1.0" in metrics
        assert 'reason="memory",route="/low"' in metrics

        assert client.post("/free").status_code == 200  # high priority: never shed here
        wait_for(lambda: client.get("/low").status_code == 200)
        memory = status(client)["memory"]
        assert not memory["shedding"] and memory["state"] == "ok"
        assert "crisisctl_guard_memory_shedding 0.0" in client.get("/_crisis/metrics").text


def test_a_blocking_call_in_an_async_route_shows_as_loop_lag_and_cuts_the_limit() -> None:
    config = {"event_loop": {"lag_threshold_s": 0.1}}
    with (
        budget_server(config, {}) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client,
    ):
        assert client.get("/ok").status_code == 200
        quiet = status(client)
        assert quiet["event_loop"]["overload_signals"] == 0
        assert quiet["concurrency"]["routes"]["/ok"]["ceiling"] is None

        assert client.get("/block", params={"s": "0.3"}).status_code == 200
        loop = wait_for(lambda: (e := status(client)["event_loop"])["overload_signals"] >= 1 and e)
        # the ticker woke at least 0.3 s - one 50 ms tick late
        assert loop["lag_ms"]["max"] >= 200.0 and loop["max_lag_ms_ever"] >= 200.0
        assert loop["over_threshold_ticks"] >= 1
        assert loop["last_signal"]["factor"] < 0.5
        routes = status(client)["concurrency"]["routes"]
        for label in ("/ok", "/block"):
            # only a cut sets a ceiling (the app-limited decay of a quiet route never does),
            # and the limit sits below the level it was cut from
            assert routes[label]["ceiling"] is not None, routes[label]
            assert routes[label]["limit"] < routes[label]["ceiling"]
        metrics = client.get("/_crisis/metrics").text
        assert "crisisctl_guard_event_loop_overload_signals_total 1.0" in metrics
        assert 'crisisctl_guard_event_loop_lag_seconds{quantile="1"}' in metrics
