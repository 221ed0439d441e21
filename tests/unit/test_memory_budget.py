"""The memory budget: its state machine (hysteresis, cool-down), its cleanup rounds (hooks run,
failures counted, async hooks cut at their timeout), its shedding and its configuration."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.guard.config import GuardConfig, GuardConfigError, Priority
from crisisctl.guard.health_config import MemoryBudgetConfig
from crisisctl.guard.memory_budget import MIB, BudgetState, MemoryBudget, RssReader


class FakeRss:
    def __init__(self, mib: float) -> None:
        self.bytes = int(mib * MIB)

    def __call__(self) -> int:
        return self.bytes


def budget(
    rss: FakeRss, *, mode: str = "normal", sheds: list[int] | None = None, **fields: object
) -> MemoryBudget:
    fields.setdefault("collect", False)
    fields.setdefault("trim", False)
    config = MemoryBudgetConfig(**fields)  # type: ignore[arg-type]
    shed_log = sheds if sheds is not None else []
    return MemoryBudget(config, lambda: mode, shed_log.append, rss)


def test_rss_reader_reads_this_process_resident_memory() -> None:
    import psutil

    reader = RssReader()
    assert abs(reader() - psutil.Process(os.getpid()).memory_info().rss) < 32 * MIB


def test_crossing_the_soft_budget_asks_for_one_cleanup_per_cooldown() -> None:
    state = BudgetState(cooldown_s=30.0)
    soft = 100.0
    assert state.observe(0.0, 50, soft, None) == []
    assert state.observe(1.0, 150, soft, None) == ["soft_crossed", "cleanup"]
    assert state.observe(2.0, 150, soft, None) == []  # the round is still running
    state.cleaned()
    assert state.observe(3.0, 150, soft, None) == []  # cool-down
    assert state.observe(31.0, 150, soft, None) == ["cleanup"]
    state.cleaned()
    assert state.observe(32.0, 50, soft, None) == ["soft_cleared"]
    assert state.soft_crossings == 1


def test_shedding_starts_at_the_hard_budget_and_stops_only_under_the_soft_one() -> None:
    state = BudgetState(cooldown_s=0.0)
    soft, hard = 100.0, 200.0
    assert "shedding_on" in state.observe(0.0, 250, soft, hard)
    state.cleaned()
    assert state.shedding
    state.observe(1.0, 150, soft, hard)  # between the budgets: still shedding
    state.cleaned()
    assert state.shedding
    assert "shedding_off" in state.observe(2.0, 99, soft, hard)
    assert not state.shedding and state.hard_crossings == 1


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=60))
def test_shedding_follows_its_hysteresis_for_every_sequence_of_samples(samples: list[int]) -> None:
    soft, hard = 100.0, 200.0
    state = BudgetState(cooldown_s=0.0)
    expected = False
    for i, rss in enumerate(samples):
        state.observe(float(i), rss, soft, hard)
        state.cleaned()
        # the reference: on at or over hard, off under soft, unchanged between
        if rss >= hard:
            expected = True
        elif rss < soft:
            expected = False
        assert state.shedding == expected
        assert state.above_soft == (rss >= soft)
        if rss >= hard:
            assert state.shedding
        if rss < soft:
            assert not state.shedding


async def test_a_cleanup_round_runs_every_hook_and_reports_rss_before_and_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rss = FakeRss(300)
    ran: list[str] = []

    def sweep() -> None:
        ran.append("sweep")
        rss.bytes = 120 * MIB

    async def trim_cache() -> None:
        await asyncio.sleep(0)
        ran.append("trim_cache")

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("hook exploded")

    memory = budget(rss, soft_mb=200, hooks=(sweep, broken))
    memory.on_pressure(trim_cache)
    with caplog.at_level(logging.INFO, logger="crisisctl.guard"):
        memory.tick(10.0)
        assert memory.state.cleaning
        await asyncio.sleep(0.05)
    assert ran == ["sweep", "broken", "trim_cache"]
    assert not memory.state.cleaning
    status = memory.describe(10.5)
    assert status["state"] == "soft" and status["cleanups"] == 1
    last = status["last_cleanup"]
    assert last["rss_before_mb"] == 300.0 and last["rss_after_mb"] == 120.0
    assert last["freed_mb"] == 180.0
    assert [name.rsplit(".", 1)[-1] for name in last["failed"]] == ["broken"]
    hooks = {h["name"].rsplit(".", 1)[-1]: h for h in status["hooks"]}
    assert hooks["broken"]["failures"] == 1 and hooks["sweep"]["failures"] == 0
    assert hooks["trim_cache"]["runs"] == 1
    assert "memory over the soft budget" in caplog.text
    assert "hook exploded" in caplog.text and "memory cleanup: 3 hooks" in caplog.text
    families = {m.name: m for m in memory.metrics()}
    failures = {s.labels["hook"].rsplit(".", 1)[-1]: s.value
                for s in families["crisisctl_guard_memory_hook_failures"].samples
                if s.name.endswith("_total")}  # fmt: skip
    assert failures == {"sweep": 0, "broken": 1, "trim_cache": 0}
    assert families["crisisctl_guard_memory_cleanups"].samples[0].value == 1


async def test_an_async_hook_past_its_timeout_is_cancelled_and_counted() -> None:
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    memory = budget(FakeRss(300), soft_mb=200, hook_timeout_s=0.05, hooks=(stuck,))
    record = await memory.cleanup()
    assert cancelled.is_set()
    assert len(record["failed"]) == 1
    (hook,) = memory.describe(0.0)["hooks"]
    assert hook["over_time"] == 1 and hook["failures"] == 1


async def test_the_built_in_hooks_collect_garbage_and_trim_the_heap() -> None:
    memory = budget(FakeRss(300), soft_mb=200, collect=True, trim=True)
    await memory.cleanup()
    names = [h["name"] for h in memory.describe(0.0)["hooks"]]
    assert names[0] == "gc.collect"
    assert all(h["failures"] == 0 and h["runs"] == 1 for h in memory.describe(0.0)["hooks"])


async def test_the_hard_budget_sheds_at_the_configured_priority_until_under_soft() -> None:
    rss = FakeRss(100)
    sheds: list[int] = []
    memory = budget(rss, sheds=sheds, soft_mb=200, hard_mb=300, shed_priority="normal")
    memory.tick(0.0)
    rss.bytes = 310 * MIB
    memory.tick(1.0)
    assert sheds == [int(Priority.NORMAL)] and memory.describe(1.0)["shedding"]
    rss.bytes = 250 * MIB
    memory.tick(2.0)
    assert sheds == [int(Priority.NORMAL)]
    rss.bytes = 150 * MIB
    memory.tick(3.0)
    assert sheds == [int(Priority.NORMAL), -1]
    await asyncio.sleep(0.01)  # the cleanup round started at 310 MiB ends


def test_emergency_mode_lowers_both_budgets_by_its_factor() -> None:
    normal = budget(FakeRss(0), soft_mb=200, hard_mb=300)
    emergency = budget(FakeRss(0), mode="emergency", soft_mb=200, hard_mb=300)
    assert normal.budgets() == (200 * MIB, 300 * MIB)
    assert emergency.budgets() == pytest.approx((180 * MIB, 270 * MIB))


def test_no_budget_means_no_sampling_and_a_short_status() -> None:
    rss = FakeRss(10_000)
    memory = budget(rss)
    memory.tick(0.0)
    assert memory.describe(0.0) == {"enabled": False}
    assert list(memory.metrics()) == []


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"soft_mb": -1}, "soft_mb must be a positive number"),
        ({"hard_mb": 500}, "hard_mb needs soft_mb"),
        ({"soft_mb": 600, "hard_mb": 500}, "must not exceed hard_mb"),
        ({"soft_mb": 100, "shed_priority": "critical"}, "below critical"),
        ({"soft_mb": 100, "emergency_factor": 1.5}, "emergency_factor must be in (0, 1]"),
        ({"soft_mb": 100, "hooks": ("not callable",)}, "hooks must be callables"),
        ({"soft_mb": 100, "cooldown_s": "soon"}, "cooldown_s must be a number"),
    ],
)
def test_a_wrong_memory_setting_is_refused_with_what_to_write(
    fields: dict[str, object], words: str
) -> None:
    with pytest.raises(GuardConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        GuardConfig.from_dict({"memory": fields})


def test_memory_settings_come_from_plain_data() -> None:
    config = GuardConfig.from_dict(
        {"memory": {"soft_mb": 400, "hard_mb": 500, "shed_priority": "normal"}}
    )
    assert config.memory.shed_priority is Priority.NORMAL
    assert config.memory.enabled and not GuardConfig().memory.enabled


async def test_closing_the_guard_cancels_a_cleanup_round_in_progress() -> None:
    from crisisctl.guard import Guard

    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_sweep() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    memory = {"soft_mb": 1, "hook_timeout_s": 60, "hooks": (slow_sweep,), "collect": False}
    guard = Guard(app, GuardConfig.from_dict({"memory": memory}))  # type: ignore[arg-type]
    guard.memory.tick(0.0)  # this process is over 1 MiB: a round starts
    async with asyncio.timeout(5):
        await started.wait()
        await guard.aclose()
        await cancelled.wait()
    assert not guard.memory.state.cleaning
