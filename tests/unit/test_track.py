"""track(): decorator and (async) context manager timing operations into the guard's metrics."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from crisisctl.guard import track
from crisisctl.guard.track import OTHER, operation_metrics, operations, reset_operations

# `crisisctl.guard.track` the attribute is the class; the module is reached by its import name
track_module = importlib.import_module("crisisctl.guard.track")


@pytest.fixture(autouse=True)
def _fresh_operations() -> Iterator[None]:
    reset_operations()
    yield
    reset_operations()


class _Operations(Collector):
    def collect(self) -> Iterable[Metric]:
        return operation_metrics()


def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called `name` in the exposition of the operation metrics: {labels: value}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Operations())
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by_name() -> dict[str, track_module.OperationStats]:
    return {op.name: op for op in operations()}


def test_decorates_a_sync_function() -> None:
    @track("sync.op")
    def add(a: int, b: int = 1) -> int:
        time.sleep(0.002)
        return a + b

    assert add(1, b=2) == 3
    assert add(5) == 6
    assert add.__name__ == "add"  # functools.wraps
    stats = by_name()["sync.op"]
    assert stats.calls == 2
    assert stats.errors == 0
    assert stats.latency.count == 2
    assert stats.latency.min_us >= 2000


async def test_decorates_an_async_function() -> None:
    @track("async.op")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.005)
        return x * 2

    assert asyncio.iscoroutinefunction(fetch)
    assert await fetch(21) == 42
    stats = by_name()["async.op"]
    assert stats.calls == 1
    assert stats.latency.min_us >= 5000  # the await is inside the timing


def test_sync_context_manager() -> None:
    with track("ctx.sync") as t:
        time.sleep(0.003)
    assert t.stats.calls == 1
    assert t.stats.latency.min_us >= 3000
    # one instance, used again and nested in itself
    with t, t:
        pass
    assert t.stats.calls == 3


async def test_async_context_manager() -> None:
    async with track("ctx.async"):
        await asyncio.sleep(0.003)
    stats = by_name()["ctx.async"]
    assert stats.calls == 1
    assert stats.latency.min_us >= 3000


async def test_errors_are_counted_and_re_raised() -> None:
    @track("fails.sync")
    def boom() -> None:
        raise KeyError("x")

    @track("fails.async")
    async def aboom() -> None:
        raise ValueError("y")

    with pytest.raises(KeyError):
        boom()
    with pytest.raises(ValueError):
        await aboom()
    with pytest.raises(RuntimeError), track("fails.ctx"):
        raise RuntimeError("z")
    with pytest.raises(RuntimeError):
        async with track("fails.actx"):
            raise RuntimeError("z")
    with track("fails.ctx"):
        pass
    ops = by_name()
    assert (ops["fails.sync"].calls, ops["fails.sync"].errors) == (1, 1)
    assert (ops["fails.async"].calls, ops["fails.async"].errors) == (1, 1)
    assert (ops["fails.ctx"].calls, ops["fails.ctx"].errors) == (2, 1)
    assert (ops["fails.actx"].calls, ops["fails.actx"].errors) == (1, 1)
    assert samples("crisisctl_operation_errors_total")[(("operation", "fails.ctx"),)] == 1.0


def test_breaches_are_graded(caplog: pytest.LogCaptureFixture) -> None:
    # threshold 20 ms: ratio = duration / 20 ms; > 5 critical, > 3 high, > 2 medium, else low
    # (20 ms, not less: a call that does nothing must not breach on a busy test machine)
    @track("graded", threshold_ms=20.0)
    def work(seconds: float) -> None:
        if seconds:
            time.sleep(seconds)

    caplog.set_level("WARNING", logger="crisisctl.guard")
    work(0.0)  # no breach
    work(0.11)  # ratio ≥ 5.5: critical
    work(0.11)
    stats = by_name()["graded"]
    assert stats.calls == 3
    assert stats.breaches == {"critical": 2}
    # logged once per grade within the cooldown, not once per breach
    assert sum("graded took" in r.getMessage() for r in caplog.records) == 1
    assert samples("crisisctl_operation_threshold_breaches_total") == {
        (("operation", "graded"), ("severity", "critical")): 2.0
    }
    assert samples("crisisctl_operation_threshold_seconds") == {(("operation", "graded"),): 0.02}


def test_breach_grade_boundaries() -> None:
    stats = track_module.OperationStats("direct", threshold_ms=100.0)
    for seconds in (0.05, 0.15, 0.25, 0.35, 0.55):
        stats.record(seconds, failed=False)
    assert stats.breaches == {"low": 1, "medium": 1, "high": 1, "critical": 1}
    assert stats.calls == 5


def test_metrics_histogram() -> None:
    @track("hist.op")
    def work() -> None:
        time.sleep(0.002)

    for _ in range(3):
        work()
    buckets = samples("crisisctl_operation_duration_seconds_bucket")
    assert buckets[(("le", "+Inf"), ("operation", "hist.op"))] == 3.0
    assert buckets[(("le", "0.001"), ("operation", "hist.op"))] == 0.0
    assert buckets[(("le", "1.0"), ("operation", "hist.op"))] == 3.0
    assert samples("crisisctl_operation_duration_seconds_count") == {
        (("operation", "hist.op"),): 3.0
    }


def test_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(track_module, "MAX_OPERATIONS", 3)
    for i in range(10):
        with track(f"op{i}"):
            pass
    names = sorted(op.name for op in operations())
    assert names == [OTHER, "op0", "op1", "op2"]
    assert by_name()[OTHER].calls == 7
    # known names keep their own stats
    with track("op1"):
        pass
    assert by_name()["op1"].calls == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs an operation name"):
        track("")
    with pytest.raises(ValueError, match="threshold_ms must be a positive"):
        track("x", threshold_ms=0)


def test_threshold_updates_on_reuse() -> None:
    track("same")
    track("same", threshold_ms=50)
    track("same")
    assert by_name()["same"].threshold_ms == 50


async def test_one_instance_shared_by_concurrent_tasks_times_each_correctly() -> None:
    """A module-level `DB = track("db")` used as `async with DB:` by overlapping requests:
    each exit must be timed from its own entry, not from the latest one."""
    shared = track("shared.async")

    async def request(delay_before: float, hold: float) -> None:
        await asyncio.sleep(delay_before)
        async with shared:
            await asyncio.sleep(hold)

    # A enters at 0 and leaves at 0.10; B enters at 0.08 and leaves at 0.23
    await asyncio.gather(request(0.0, 0.10), request(0.08, 0.15))
    stats = shared.stats
    assert stats.calls == 2
    assert stats.latency.min_us >= 95_000  # A: ~0.10 s (0.02 s if it took B's start)
    assert stats.latency.max_us < 200_000  # B: ~0.15 s (0.23 s if it took A's start)


def test_one_instance_shared_by_threads_times_each_correctly() -> None:
    shared = track("shared.threads")
    entered = threading.Event()

    def first_call() -> None:  # enters at 0, leaves at 0.10
        with shared:
            entered.set()
            time.sleep(0.10)

    thread = threading.Thread(target=first_call)
    thread.start()
    assert entered.wait(2.0)
    time.sleep(0.08)
    with shared:  # enters at 0.08, leaves at 0.23
        time.sleep(0.15)
    thread.join(2.0)
    assert shared.stats.calls == 2
    assert shared.stats.latency.min_us >= 95_000
    assert shared.stats.latency.max_us < 200_000


# -- memory delta (tracemalloc, sampled) -------------------------------------------------------
KEPT: list[bytes] = []


def test_memory_sampling_is_off_by_default_and_never_starts_tracemalloc() -> None:
    import tracemalloc

    @track("mem.off")
    def work() -> None:
        KEPT.append(b"x" * 100_000)

    work()
    KEPT.clear()
    assert not tracemalloc.is_tracing()
    assert by_name()["mem.off"].describe()["memory"] is None


def test_one_call_in_n_measures_what_it_kept_and_tracing_stops_after() -> None:
    import tracemalloc

    @track("mem.kept", memory_every=2)
    def keep(n: int) -> None:
        KEPT.append(b"x" * n)

    for _ in range(4):
        keep(1_000_000)
    KEPT.clear()
    assert not tracemalloc.is_tracing()
    memory = by_name()["mem.kept"].describe()["memory"]
    assert isinstance(memory, dict) and memory["samples"] == 2  # calls 1 and 3
    assert 1_000_000 <= memory["max_delta_bytes"] < 1_100_000
    assert samples("crisisctl_operation_memory_delta_bytes_count") == {
        (("operation", "mem.kept"),): 2.0
    }


async def test_an_async_block_is_sampled_and_tracing_left_on_if_it_was_on_before() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        async with track("mem.async", memory_every=1):
            KEPT.append(b"y" * 500_000)
            await asyncio.sleep(0)
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
        KEPT.clear()
    memory = by_name()["mem.async"].describe()["memory"]
    assert isinstance(memory, dict) and memory["samples"] == 1
    assert memory["max_delta_bytes"] >= 500_000


def test_memory_every_must_be_a_whole_number() -> None:
    with pytest.raises(ValueError, match="memory_every must be a whole number"):
        track("mem.bad", memory_every=-1)
