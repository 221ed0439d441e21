"""The guard's own process figures: sampled at most once a second by the ticker (never per
request), the loop lag taken from the ticks' lateness, shown in status and metrics."""

from __future__ import annotations

import asyncio
import gc
import os

import httpx
import psutil

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.process import LAG_TICKS, SAMPLE_EVERY_S, ProcessFigures
from crisisctl.guard.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_sample_reads_this_process() -> None:
    figures = ProcessFigures()
    figures.take(100.0)
    sample = figures.describe(100.25)
    me = psutil.Process(os.getpid())
    assert sample["pid"] == os.getpid()
    assert abs(sample["rss_bytes"] - me.memory_info().rss) < 64 * 1_048_576
    assert sample["threads"] >= 1
    assert sample["open_fds"] >= 3
    assert sample["cpu_user_s"] >= 0.0 and sample["cpu_percent_recent"] is None  # one reading
    assert len(sample["gc"]["counts"]) == len(gc.get_count())
    assert len(sample["gc"]["collections"]) == 3
    assert sample["sample_age_s"] == 0.25


def test_the_ticker_samples_at_most_once_a_second_and_keeps_the_lag() -> None:
    figures = ProcessFigures()
    now = 50.0
    for i in range(1000):  # 1000 ticks of 10 ms, one of them 80 ms late
        now += 0.01
        figures.tick(now, 0.08 if i == 990 else 0.001)
    assert figures.samples == int(10.0 / SAMPLE_EVERY_S)
    assert len(figures.lags) == LAG_TICKS  # bounded
    figures.take(now)
    lag = figures.describe(now)["loop_lag_ms"]
    assert lag["recent_max"] == 80.0
    assert lag["recent_p99"] == 1.0
    assert lag["ticks"] == LAG_TICKS
    assert figures.describe(now)["cpu_percent_recent"] is not None


def test_an_early_tick_counts_as_no_lag() -> None:
    figures = ProcessFigures()
    figures.tick(1.0, -0.002)
    assert figures.describe(1.0)["loop_lag_ms"]["recent_max"] == 0.0


async def test_status_and_metrics_show_the_process_figures() -> None:
    guard = Guard(app, GuardConfig(token="", control_rate_limit=None))
    transport = httpx.ASGITransport(app=guard, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://guard") as http:
        assert (await http.get("/x")).status_code == 200
        await asyncio.sleep(0.05)
        status = (await http.get("/_crisis/status")).json()
        metrics = (await http.get("/_crisis/metrics")).text
    await guard.aclose()
    process = status["process"]
    assert process["pid"] == os.getpid() and process["rss_bytes"] > 0
    assert {"threads", "open_fds", "loop_lag_ms", "gc", "cpu_user_s"} <= set(process)
    for name in ("rss_bytes", "threads", "open_fds", "cpu_user_seconds"):
        assert f"\ncrisisctl_guard_process_{name} " in metrics
    assert 'crisisctl_guard_process_gc_collections{generation="2"}' in metrics
