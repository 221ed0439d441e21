"""Event-loop health: the lag window's percentiles, lag past the threshold as an overload
signal that cuts the adaptive limit (and leaves a static one alone), thread-pool depths, and
the ticker's period."""

from __future__ import annotations

import asyncio
import threading

import pytest

from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import ConcurrencyConfig, GuardConfig, GuardConfigError
from crisisctl.guard.health_config import LoopHealthConfig
from crisisctl.guard.loop_health import LoopHealth, percentile, pool_depths
from crisisctl.guard.ticker import tick_interval_s


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def health(conc: ConcurrencyLimiter | None = None, **fields: object) -> LoopHealth:
    return LoopHealth(LoopHealthConfig(**fields), conc)  # type: ignore[arg-type]


def test_the_window_reports_p50_p99_and_max_of_its_ticks() -> None:
    loop = health(window_s=10.0)
    for i in range(100):
        loop.tick(float(i) * 0.05, 0.001 if i != 50 else 0.3)
    window = loop.window()
    assert window == {"p50": 1.0, "p99": 1.0, "max": 300.0, "ticks": 100}
    # negative lateness (a timer firing a hair early) counts as no lag
    loop.tick(5.0, -0.002)
    assert loop.window()["ticks"] == 101 and loop.max_lag_s == pytest.approx(0.3)


def test_ticks_older_than_the_window_leave_it() -> None:
    loop = health(window_s=1.0)
    loop.tick(0.0, 0.5)
    for i in range(1, 40):
        loop.tick(0.05 * i, 0.002)
    window = loop.window()
    assert window["max"] == 2.0 and window["ticks"] == 20  # 1.0 s back from 1.95 s
    assert loop.max_lag_s == 0.5  # the lifetime max stays


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_lag_past_the_threshold_cuts_the_adaptive_limit_at_most_once_per_interval() -> None:
    clock = FakeClock()
    conc = ConcurrencyLimiter(ConcurrencyConfig(mode="adaptive", scope="service"), clock)
    assert conc.effective == 32
    loop = health(conc, lag_threshold_s=0.1, signal_every_s=1.0)
    loop.tick(clock.now, 0.05)  # under the threshold: nothing
    assert conc.effective == 32 and loop.signals == 0
    loop.tick(clock.now, 0.3)  # 3x the threshold: the limit is cut to a third
    assert conc.effective == 10 and loop.signals == 1
    assert conc.describe()["ceiling"] == 32  # the level it came from, held
    loop.tick(clock.now + 0.5, 0.3)  # within the signal interval: counted, no second cut
    assert conc.effective == 10 and loop.signals == 1 and loop.over_threshold == 2
    loop.tick(clock.now + 1.5, 10.0)  # a huge lag cuts at most to a quarter
    assert conc.effective == 2 and loop.signals == 2
    assert loop.describe(clock.now)["last_signal"]["factor"] == 0.25


def test_a_lag_signal_reaches_every_route_limiter_under_the_ceiling() -> None:
    clock = FakeClock()
    ceiling = ConcurrencyLimiter(ConcurrencyConfig(), clock, ceiling=True)
    a, b = ceiling.child("/a"), ceiling.child("/b")
    loop = health(ceiling, lag_threshold_s=0.1)
    loop.tick(clock.now, 0.2)
    assert a.effective == 16 and b.effective == 16
    assert ceiling.effective == 1000  # the guard-wide cap is static


def test_a_static_limit_and_a_threshold_of_none_ignore_the_lag() -> None:
    clock = FakeClock()
    static = ConcurrencyLimiter(ConcurrencyConfig(mode="static", scope="service"), clock)
    health(static, lag_threshold_s=0.1).tick(clock.now, 1.0)
    assert static.effective == 32
    adaptive = ConcurrencyLimiter(ConcurrencyConfig(scope="service"), clock)
    quiet = health(adaptive, lag_threshold_s=None)
    quiet.tick(clock.now, 1.0)
    assert adaptive.effective == 32 and quiet.signals == 0 and quiet.over_threshold == 0


async def test_the_default_executors_queue_depth_is_visible_on_an_asyncio_loop() -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(executor)
    futures = [loop.run_in_executor(None, release.wait) for _ in range(4)]
    await asyncio.sleep(0.05)
    try:
        pools = pool_depths(loop)
        assert pools["asyncio_default"]["visible"] is True
        assert pools["asyncio_default"]["queue_depth"] == 3  # one runs, three wait
        assert pools["asyncio_default"]["threads"] == 1
    finally:
        release.set()
        await asyncio.gather(*futures)
        executor.shutdown()


def test_a_loop_that_hides_its_executor_says_so() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        pools = pool_depths(loop)
    finally:
        loop.close()
    assert pools["asyncio_default"]["visible"] is False
    assert "does not expose" in pools["asyncio_default"]["note"]


def test_the_ticker_runs_at_least_at_the_lag_interval_unless_disabled() -> None:
    assert tick_interval_s(GuardConfig()) == 0.05
    assert tick_interval_s(GuardConfig(timeout_s=0.2)) == 0.01  # a twentieth of a timeout
    off = GuardConfig.from_dict({"event_loop": {"enabled": False}})
    assert tick_interval_s(off) == 1.0
    slow = GuardConfig.from_dict({"event_loop": {"interval_s": 0.25}})
    assert tick_interval_s(slow) == 0.25


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"interval_s": 0.001}, "interval_s must be between 0.005 and 1 second"),
        ({"window_s": 0.1}, "window_s must be between 10 ticks"),
        ({"lag_threshold_s": 0}, "lag_threshold_s must be a number of seconds > 0"),
        ({"signal_every_s": -1}, "signal_every_s must be > 0"),
    ],
)
def test_a_wrong_event_loop_setting_is_refused_with_what_to_write(
    fields: dict[str, object], words: str
) -> None:
    with pytest.raises(GuardConfigError, match=words):
        GuardConfig.from_dict({"event_loop": fields})
