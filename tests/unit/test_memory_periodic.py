"""Periodic cleanup hooks of the memory policy (guard/periodic.py), on a real event loop with
short periods: they run at their period with or without a budget, never overlap themselves, a
failing one is logged and counted while the others run, past the soft budget they run in the
cleanup round too, and aclose cancels a running one. Bounds are generous (busy machine)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

import pytest

from crisisctl.guard.health_config import MAX_HOOKS, MemoryBudgetConfig
from crisisctl.guard.lifespan import MEMORY_STATE_KEY as LIFESPAN_MEMORY_KEY
from crisisctl.guard.memory_budget import MIB, MemoryBudget
from crisisctl.guard.periodic import MEMORY_STATE_KEY, memory_of


def policy(soft_mb: float | None = None, rss_mib: float = 100.0, **fields: object) -> MemoryBudget:
    config = MemoryBudgetConfig(soft_mb=soft_mb, collect=False, trim=False, **fields)  # type: ignore[arg-type]
    return MemoryBudget(config, lambda: "normal", lambda _: None, lambda: int(rss_mib * MIB))


async def tick_until(
    memory: MemoryBudget, done: Callable[[], bool], timeout_s: float = 5.0, every_s: float = 0.005
) -> None:
    """Tick `memory` like the guard's ticker does until `done()`, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        memory.tick(time.monotonic())
        await asyncio.sleep(every_s)


async def test_a_hook_runs_at_its_period_without_any_budget() -> None:
    memory = policy()  # no soft budget: the budget itself is off
    assert not memory.enabled
    starts: list[float] = []
    memory.every(0.05, lambda: starts.append(time.monotonic()))
    await tick_until(memory, lambda: len(starts) >= 4)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.045, gaps  # never sooner than its period
    (hook,) = memory.describe(time.monotonic())["periodic"]
    assert hook["name"].endswith("<lambda>") and hook["every_s"] == 0.05
    assert hook["runs"] >= 4 and hook["failures"] == 0 and hook["last_error"] is None
    assert hook["last_ms"] is not None
    await memory.aclose()


async def test_a_slow_async_hook_never_runs_twice_at_once() -> None:
    memory = policy(hook_timeout_s=5.0)
    running, most = 0, 0

    async def slow_sweep() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.1)
        running -= 1

    memory.every(0.01, slow_sweep)
    await tick_until(memory, lambda: memory.periodic.hooks[0].stats.runs >= 3)
    assert most == 1
    (hook,) = memory.describe(0.0)["periodic"]
    assert hook["skipped"] >= 3  # due every 10 ms, busy for 100 ms
    await memory.aclose()


async def test_a_failing_hook_is_logged_and_counted_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = policy()
    swept: list[int] = []

    def broken() -> None:
        raise ValueError("secret=hunter2")

    memory.every(0.02, broken)
    memory.every(0.02, lambda: swept.append(1), name="sweep")
    memory.every(3600.0, lambda: None, name="sweep")  # a name taken: numbered
    with caplog.at_level(logging.ERROR, logger="crisisctl.guard"):
        await tick_until(memory, lambda: len(swept) >= 3)
    failing, sweep, second = memory.describe(0.0)["periodic"]
    assert second["name"] == "sweep#2"
    assert failing["failures"] >= 2 and failing["last_error"] == "ValueError"
    assert sweep["name"] == "sweep" and sweep["failures"] == 0
    assert "broken failed" in caplog.text
    assert "hunter2" not in str(memory.describe(0.0))  # the status names the kind, not the text
    families = {m.name: m for m in memory.metrics()}
    runs = {
        s.labels["hook"]: s.value for s in families["crisisctl_guard_memory_periodic_runs"].samples
    }
    fails = {
        s.labels["hook"]: s.value
        for s in families["crisisctl_guard_memory_periodic_failures"].samples
    }
    assert runs["sweep"] >= 3 and fails["sweep"] == 0 and fails[failing["name"]] >= 2
    await memory.aclose()


async def test_past_the_soft_budget_the_cleanup_round_runs_them_too_but_not_twice_at_once() -> None:
    memory = policy(soft_mb=50.0, rss_mib=100.0, hook_timeout_s=5.0)
    calls: list[str] = []
    started, gate = asyncio.Event(), asyncio.Event()

    def sweep() -> None:
        calls.append("sweep")

    async def held() -> None:
        calls.append("held")
        started.set()
        await gate.wait()

    memory.every(3600.0, sweep)  # never due during the test: only the cleanup round runs it
    memory.every(3600.0, held)
    holder = asyncio.create_task(memory.periodic.run(memory.periodic.hooks[1]))
    await asyncio.wait_for(started.wait(), 2.0)
    record = await memory.cleanup()
    assert calls == ["held", "sweep"]  # "held" was running already: left alone
    assert record["hooks_run"] == 2 and record["failed"] == []
    assert memory.describe(0.0)["periodic"][1]["skipped"] == 1
    gate.set()
    assert await holder is True


async def test_aclose_cancels_a_running_round() -> None:
    memory = policy(hook_timeout_s=30.0)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    memory.every(0.01, stuck)
    await tick_until(memory, started.is_set)
    await asyncio.wait_for(memory.aclose(), 2.0)
    assert cancelled.is_set() and not memory.periodic.hooks[0].busy


def test_every_works_as_a_decorator_and_checks_its_arguments() -> None:
    memory = policy()

    @memory.every(2.0)
    def expire() -> int:
        return 0

    assert expire() == 0 and memory.periodic.hooks[0].fn is expire
    for bad in (0, -1.0, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="period"):
            memory.every(bad, expire)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        memory.every(1.0, 42)  # type: ignore[call-overload]
    memory.every(1.0, expire, name="x" * 500)
    assert memory.describe(0.0)["periodic"][1]["name"] == "x" * 80
    for _ in range(MAX_HOOKS - 2):
        memory.every(1.0, expire)
    with pytest.raises(ValueError, match="at most"):
        memory.every(1.0, expire)
    assert len({h["name"] for h in memory.describe(0.0)["periodic"]}) == MAX_HOOKS


def test_memory_of_finds_the_policy_in_the_lifespan_state() -> None:
    assert LIFESPAN_MEMORY_KEY == MEMORY_STATE_KEY  # (lifespan.py does not import periodic.py)
    memory = policy()
    assert memory_of({"type": "http", "state": {MEMORY_STATE_KEY: memory}}) is memory
    assert memory_of({"type": "http"}) is None
    assert memory_of({"type": "http", "state": {MEMORY_STATE_KEY: "x"}}) is None
