"""Concurrency limiter: static admission, the shedding queue (priorities, eviction, LIFO,
timeouts) and the adaptive limit on synthetic latency."""

from __future__ import annotations

import asyncio
import time

import pytest

from crisisctl.guard.concurrency import (
    QUEUE_ALLOWANCE,
    SHED_QUEUE_FULL,
    SHED_QUEUE_TIMEOUT,
    ConcurrencyLimiter,
)
from crisisctl.guard.config import ConcurrencyConfig, Priority

LOW, NORMAL, HIGH = int(Priority.LOW), int(Priority.NORMAL), int(Priority.HIGH)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def static(limit: int, queue_size: int = 4, **kw: float) -> ConcurrencyLimiter:
    config = ConcurrencyConfig(mode="static", limit=limit, queue_size=queue_size, **kw)  # type: ignore[arg-type]
    return ConcurrencyLimiter(config, time.monotonic)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- static limit and queue --------------------------------------------------------------------


async def test_static_limit_admits_n_then_queues() -> None:
    lim = static(2, queue_timeout_s=5.0)
    assert await lim.acquire(NORMAL) is None
    assert await lim.acquire(NORMAL) is None
    assert lim.in_flight == 2
    assert not lim.try_acquire()
    waiter = asyncio.create_task(lim.acquire(NORMAL))
    await settle()
    assert not waiter.done()
    assert lim.queued == 1
    # nobody jumps the queue through the fast path while someone waits
    lim.release(time.monotonic(), 0.01)
    assert lim.in_flight == 2  # the slot went straight to the waiter
    assert await asyncio.wait_for(waiter, 1.0) is None
    assert lim.queued == 0
    lim.release(time.monotonic(), 0.01)
    lim.release(time.monotonic(), 0.01)
    assert lim.in_flight == 0
    assert lim.try_acquire()


async def test_full_queue_sheds_at_once() -> None:
    lim = static(1, queue_size=2, queue_timeout_s=5.0)
    assert lim.try_acquire()
    waiters = [asyncio.create_task(lim.acquire(NORMAL)) for _ in range(2)]
    await settle()
    start = time.monotonic()
    assert await lim.acquire(NORMAL) == SHED_QUEUE_FULL
    assert time.monotonic() - start < 0.05
    assert lim.shed_queue_full == 1
    assert lim.queued == 2
    for _ in range(3):
        lim.release(time.monotonic(), 0.01)
    assert await asyncio.gather(*waiters) == [None, None]


async def test_zero_queue_sheds_everything_over_the_limit() -> None:
    lim = static(1, queue_size=0)
    assert await lim.acquire(NORMAL) is None
    assert await lim.acquire(HIGH) == SHED_QUEUE_FULL


async def test_queue_timeout_sheds() -> None:
    lim = static(1, queue_size=4, queue_timeout_s=0.05)
    assert lim.try_acquire()
    start = time.monotonic()
    assert await asyncio.wait_for(lim.acquire(NORMAL), 1.0) == SHED_QUEUE_TIMEOUT
    waited = time.monotonic() - start
    assert 0.04 <= waited < 0.5
    assert lim.shed_queue_timeout == 1
    assert lim.queued == 0
    assert lim.in_flight == 1  # a shed waiter holds nothing


async def test_cancelled_waiter_leaves_the_queue() -> None:
    lim = static(1, queue_timeout_s=5.0)
    assert lim.try_acquire()
    waiter = asyncio.create_task(lim.acquire(NORMAL))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert lim.queued == 0
    lim.release(time.monotonic(), 0.01)
    assert lim.in_flight == 0


async def test_hand_over_serves_higher_priorities_first() -> None:
    lim = static(1, queue_size=10, queue_timeout_s=5.0)
    assert lim.try_acquire()
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        assert await lim.acquire(priority) is None
        order.append(name)

    tasks = [
        asyncio.create_task(wait(name, prio))
        for name, prio in [("low1", LOW), ("normal1", NORMAL), ("high", HIGH), ("low2", LOW),
                           ("normal2", NORMAL)]
    ]  # fmt: skip
    await settle()
    assert lim.queued == 5
    for expected in range(1, 6):
        lim.release(time.monotonic(), 0.01)
        await settle()
        assert len(order) == expected
    assert order == ["high", "normal1", "normal2", "low1", "low2"]
    await asyncio.gather(*tasks)


async def test_higher_priority_evicts_the_oldest_lowest_from_a_full_queue() -> None:
    lim = static(1, queue_size=2, queue_timeout_s=5.0)
    assert lim.try_acquire()
    low_old = asyncio.create_task(lim.acquire(LOW))
    await settle()
    low_new = asyncio.create_task(lim.acquire(LOW))
    await settle()
    high = asyncio.create_task(lim.acquire(HIGH))
    await settle()
    assert low_old.done() and low_old.result() == SHED_QUEUE_FULL
    assert not low_new.done() and not high.done()
    assert lim.queued == 2
    # an equal priority evicts nothing
    assert await lim.acquire(LOW) == SHED_QUEUE_FULL
    assert lim.shed_queue_full == 2
    lim.release(time.monotonic(), 0.01)
    assert await asyncio.wait_for(high, 1.0) is None
    lim.release(time.monotonic(), 0.01)
    assert await asyncio.wait_for(low_new, 1.0) is None


async def test_lifo_and_short_target_under_standing_overload() -> None:
    clock = FakeClock()
    config = ConcurrencyConfig(
        mode="static", limit=1, queue_size=10, queue_timeout_s=1.0, queue_target_s=0.01
    )
    lim = ConcurrencyLimiter(config, clock)
    assert lim.try_acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        if await lim.acquire(NORMAL) is None:
            order.append(name)
        else:
            order.append(f"shed:{name}")

    tasks = []
    for name in ("a", "b", "c"):
        tasks.append(asyncio.create_task(wait(name)))
        await settle()
    # while the queue has been busy for less than the interval: FIFO
    lim.release(clock(), 0.01)
    await settle()
    assert order == ["a"]
    # the queue has now been non-empty for longer than queue_timeout_s: standing overload
    clock.now += 2.0
    lim.release(clock(), 0.01)
    await settle()
    assert order == ["a", "c"]  # newest first
    # a newcomer now waits only the target delay (10 ms of real loop time), not 1 s
    start = time.monotonic()
    tasks.append(asyncio.create_task(wait("d")))
    await asyncio.wait_for(asyncio.shield(tasks[-1]), 0.5)
    assert order[-1] == "shed:d"
    assert time.monotonic() - start < 0.5
    lim.release(clock(), 0.01)
    await settle()
    assert order == ["a", "c", "shed:d", "b"]
    # a free slot that nobody needs for a whole interval ends the overload: FIFO again
    lim.release(clock(), 0.01)
    assert lim.in_flight == 0
    clock.now += 1.5
    assert lim.try_acquire()
    for name in ("e", "f"):
        tasks.append(asyncio.create_task(wait(name)))
        await settle()
    clock.now += 0.5
    lim.release(clock(), 0.01)
    await settle()
    assert order[-1] == "e"
    lim.release(clock(), 0.01)
    await asyncio.gather(*tasks)
    assert order[-1] == "f"


async def standing_overload() -> tuple[FakeClock, ConcurrencyLimiter]:
    """A one-slot limiter whose only slot is busy, after a congestion episode longer than
    the interval (50 ms) whose last waiter has just timed out: the queue is empty."""
    clock = FakeClock()
    config = ConcurrencyConfig(
        mode="static", limit=1, queue_size=10, queue_timeout_s=0.05, queue_target_s=0.01
    )
    lim = ConcurrencyLimiter(config, clock)
    assert lim.try_acquire()
    waiting = asyncio.create_task(lim.acquire(NORMAL))
    await asyncio.sleep(0)
    clock.now += 0.06  # the congestion episode has lasted longer than the interval…
    assert await waiting == SHED_QUEUE_TIMEOUT  # (waits 50 ms of loop time)
    return clock, lim


async def test_a_slot_freed_between_two_arrivals_does_not_end_a_standing_overload() -> None:
    clock, lim = await standing_overload()
    clock.now += 0.02  # …and the queue has been empty for less than the interval since
    lim.release(clock(), 0.004)  # the slot comes free with nobody waiting…
    assert lim.try_acquire()  # …and is taken by the next arrival 1 ms later
    clock.now += 0.001
    start = time.monotonic()
    assert await lim.acquire(NORMAL) == SHED_QUEUE_TIMEOUT
    assert time.monotonic() - start < 0.04  # still standing overload: the target delay


async def test_waiters_timing_out_do_not_end_a_standing_overload() -> None:
    clock, lim = await standing_overload()
    clock.now += 0.02  # …and the queue has been empty for less than the interval since
    # the only slot is still busy: the overload goes on, so a new waiter gets the target delay
    start = time.monotonic()
    assert await lim.acquire(NORMAL) == SHED_QUEUE_TIMEOUT
    assert time.monotonic() - start < 0.04


async def test_a_queue_empty_for_a_whole_interval_ends_the_overload_even_with_slots_busy() -> None:
    clock, lim = await standing_overload()
    assert lim.describe()["standing_overload"] is True
    clock.now += 0.06  # nobody queued for a whole interval, though the slot stayed busy
    assert lim.describe()["standing_overload"] is False
    waiting = asyncio.create_task(lim.acquire(NORMAL))
    await asyncio.sleep(0.02)  # FIFO again: it may wait the whole interval, not the target
    assert not waiting.done()
    lim.release(clock(), 0.01)
    assert await waiting is None


# -- factors -----------------------------------------------------------------------------------


async def test_set_factor_halves_the_effective_limit_and_hands_over_when_raised() -> None:
    lim = static(10, queue_size=10, queue_timeout_s=5.0)
    lim.set_factor(0.5)
    assert lim.effective == 5
    assert sum(lim.try_acquire() for _ in range(10)) == 5
    waiters = [asyncio.create_task(lim.acquire(NORMAL)) for _ in range(3)]
    await settle()
    assert lim.queued == 3
    lim.set_factor(0.8)
    assert lim.effective == 8
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1.0) == [None, None, None]
    assert lim.in_flight == 8
    lim.set_factor(0.01)
    assert lim.effective == 1  # never below one
    lim.set_factor(1.0)
    assert lim.effective == 10
    assert lim.describe()["limit"] == 10


# -- adaptive limit ----------------------------------------------------------------------------


def adaptive(clock: FakeClock, limit: int = 5) -> ConcurrencyLimiter:
    config = ConcurrencyConfig(
        mode="adaptive", limit=limit, min_limit=1, max_limit=500, tolerance=1.5, smoothing=0.2
    )
    return ConcurrencyLimiter(config, clock)


def drive(
    lim: ConcurrencyLimiter, clock: FakeClock, seconds: float, base: float, capacity: int
) -> list[int]:
    """Closed-loop load that always has more work than the limit allows. Each round admits as
    many requests as the limit lets in; their latency is `base` up to `capacity` concurrent
    requests and grows linearly beyond (they queue inside the service). Returns the effective
    limit after every round."""
    seen: list[int] = []
    end = clock.now + seconds
    while clock.now < end:
        admitted = 0
        while lim.try_acquire():
            admitted += 1
        rtt = base * max(1.0, admitted / capacity)
        clock.now += max(rtt, 0.06)
        for _ in range(admitted):
            lim.release(clock(), rtt)
        seen.append(lim.effective)
    return seen


def test_adaptive_limit_converges_near_capacity() -> None:
    clock = FakeClock()
    lim = adaptive(clock, limit=5)
    capacity = 40
    seen = drive(lim, clock, 120.0, base=0.01, capacity=capacity)
    assert lim.rtt_noload is not None and 0.01 <= lim.rtt_noload <= 0.015
    tail = seen[-len(seen) // 3 :]
    # the controller holds latency within `tolerance` (1.5x) of the no-load latency, plus the
    # queue allowance, so it settles between capacity and 1.5 x capacity + 1, apart from short
    # no-load probes; windows here straddle rounds (all of a round's releases share one
    # instant), which lifts the no-load estimate by a few percent
    upper = 1.5 * capacity * 1.08 + QUEUE_ALLOWANCE
    in_band = [n for n in tail if capacity <= n <= upper]
    assert len(in_band) >= 0.8 * len(tail), sorted(tail)
    assert max(tail) <= 1.5 * capacity * 1.2
    assert min(tail) >= capacity // 2 - 1  # the half-limit probe at worst


def test_adaptive_limit_grows_from_far_too_low_and_cuts_from_far_too_high() -> None:
    clock = FakeClock()
    low = adaptive(clock, limit=1)
    seen = drive(low, clock, 30.0, base=0.01, capacity=50)
    assert max(seen) >= 50
    clock = FakeClock()
    high = adaptive(clock, limit=400)
    # first a quiet window to learn the no-load latency, then overload
    drive(high, clock, 1.0, base=0.01, capacity=1000)
    seen = drive(high, clock, 10.0, base=0.01, capacity=20)
    assert seen[-1] <= 1.5 * 20 + 1


def test_adaptive_limit_shrinks_when_latency_doubles() -> None:
    clock = FakeClock()
    lim = adaptive(clock, limit=5)
    capacity = 40
    drive(lim, clock, 60.0, base=0.01, capacity=capacity)
    before = lim.effective
    assert before >= capacity
    # the service slows down: the same concurrency now takes twice as long
    seen = drive(lim, clock, 3.0, base=0.02, capacity=capacity)
    assert min(seen) <= 0.75 * before
    assert lim.effective < before
    assert lim.last_rtt is not None and lim.last_rtt > 1.5 * 0.01


def light_traffic(lim: ConcurrencyLimiter, clock: FakeClock, rounds: int, in_flight: int) -> None:
    """`rounds` windows of `in_flight` concurrent requests at the no-load latency (10 ms)."""
    for _ in range(rounds):
        for _ in range(in_flight):
            assert lim.try_acquire()
        clock.now += 0.06
        for _ in range(in_flight):
            lim.release(clock(), 0.01)


def test_app_limited_limit_decays_to_twice_the_used_concurrency_and_never_grows() -> None:
    """Light traffic that never reaches the limit gives no evidence more would help: the limit
    does not grow, and it decays towards twice what the traffic uses (RFC 7661)."""
    clock = FakeClock()
    lim = adaptive(clock, limit=20)
    seen = []
    for _ in range(40):
        light_traffic(lim, clock, 5, in_flight=3)
        seen.append(lim.effective)
    assert seen == sorted(seen, reverse=True)  # never grows
    assert lim.effective == 6
    assert lim.updates > 0
    assert lim.describe()["regain"] == 20.0


def test_a_legitimate_burst_regains_the_decayed_limit_within_a_few_windows() -> None:
    clock = FakeClock()
    lim = adaptive(clock, limit=40)
    light_traffic(lim, clock, 200, in_flight=1)
    assert lim.effective == 4  # APP_LIMITED_FLOOR
    # a burst the service handles without queueing (capacity 100): the limit doubles back
    # (a window needs ten samples: at four in flight, the first closes in the third round)
    seen = drive(lim, clock, 0.6, base=0.01, capacity=100)
    assert [n for i, n in enumerate(seen) if i == 0 or n != seen[i - 1]][:5] == [4, 8, 16, 32, 40]
    assert seen.index(40) <= 5
    seen = drive(lim, clock, 5.0, base=0.01, capacity=100)
    assert seen[-1] > 40  # then the usual smoothed growth


def test_overload_onset_after_light_traffic_admits_few_requests_at_once() -> None:
    """The reason for the decay: a one-worker service (capacity 1) that saw light traffic must
    not take 32 requests into its own queue when overload arrives."""
    clock = FakeClock()
    lim = adaptive(clock, limit=32)
    light_traffic(lim, clock, 100, in_flight=1)
    admitted = 0
    while lim.try_acquire():
        admitted += 1
    assert admitted == 4
    for _ in range(admitted):
        lim.release(clock(), 0.01 * admitted)
    seen = drive(lim, clock, 3.0, base=0.01, capacity=1)
    assert max(seen) <= 4
    assert seen[-1] <= 1.5 * 1 + QUEUE_ALLOWANCE + 1


def test_an_idle_service_decays_too() -> None:
    clock = FakeClock()
    lim = adaptive(clock, limit=32)
    for _ in range(10):
        clock.now += 1.0
        lim.maybe_close_window(clock())  # the guard's ticker, once a second
    assert lim.effective == 4
    assert lim.updates == 0  # no latency sample: nothing else changed
    assert lim.try_acquire()  # one busy request keeps the limit at twice the use
    for _ in range(10):
        clock.now += 1.0
        lim.maybe_close_window(clock())
    assert lim.effective == 4


async def overloaded_adaptive(
    limit: int, rtt: float, scale: float = 1.0
) -> tuple[FakeClock, ConcurrencyLimiter]:
    """An adaptive limiter at `limit` whose recent latency is `rtt`, all slots busy, in a
    standing overload (its congestion episode has outlasted the 50 ms interval; `scale`
    stretches the interval and the target delay, so that real-time waits outlast a busy
    machine's scheduling delays)."""
    clock = FakeClock()
    config = ConcurrencyConfig(
        mode="adaptive",
        limit=limit,
        min_limit=limit,
        max_limit=limit,
        queue_size=16,
        queue_timeout_s=0.05 * scale,
        queue_target_s=0.005 * scale,
    )
    lim = ConcurrencyLimiter(config, clock)
    for _ in range(10):
        assert lim.try_acquire()
        lim.release(clock(), rtt)
    clock.now += 0.06 * scale
    lim.maybe_close_window(clock())
    assert lim.last_rtt == pytest.approx(rtt)
    for _ in range(limit):
        assert lim.try_acquire()
    waiting = asyncio.create_task(lim.acquire(NORMAL))
    await asyncio.sleep(0)
    clock.now += 0.06 * scale
    lim.release(clock(), -1.0)  # one slot comes free: the waiter takes it
    assert await waiting is None
    assert lim.describe()["standing_overload"] is True
    return clock, lim


async def test_standing_overload_keeps_one_waiter_when_slots_free_too_rarely() -> None:
    # two slots, 10 ms each: one comes free every 5 ms on average, no more often than the 5 ms
    # target, so the queue keeps only the newest waiter (served LIFO) for the next free slot
    clock, lim = await overloaded_adaptive(limit=2, rtt=0.0101)
    first = asyncio.create_task(lim.acquire(NORMAL))
    await settle()
    assert not first.done() and lim.queued == 1
    start = time.monotonic()
    second = asyncio.create_task(lim.acquire(NORMAL))
    await settle()
    assert first.done() and first.result() == "overloaded"  # evicted at once, no timer
    assert time.monotonic() - start < 0.004
    assert await lim.acquire(LOW) == "overloaded"  # nothing of its priority to evict: refused
    assert lim.queued == 1
    high = asyncio.create_task(lim.acquire(HIGH))  # a more important arrival takes the place
    await settle()
    assert second.done() and second.result() == "overloaded"
    assert lim.describe()["shed_overloaded"] == 3
    lim.release(clock(), -1.0)
    assert await high is None
    # arrivals every 30 ms that each find the slots busy keep the queue from a whole interval
    # (50 ms) of calm: the overload stands, and each arrival evicts the one before
    previous = None
    for _ in range(5):
        clock.now += 0.03
        newest = asyncio.create_task(lim.acquire(LOW))
        await settle()
        assert previous is None or previous.result() == "overloaded"
        assert lim.describe()["standing_overload"] is True
        previous = newest
    lim.release(clock(), -1.0)
    assert await newest is None


async def test_standing_overload_queues_when_slots_free_often_enough() -> None:
    # twenty slots, 100 ms each: one comes free every 5 ms, ten within the 50 ms target (the
    # scale of the real-time waits: a busy machine must not time them out before the releases)
    clock, lim = await overloaded_adaptive(limit=20, rtt=0.1, scale=10.0)
    waiting = [asyncio.create_task(lim.acquire(NORMAL)) for _ in range(11)]
    await settle()
    assert lim.queued == 10
    assert waiting[0].done() and waiting[0].result() == "overloaded"  # the oldest makes room
    for _ in range(10):
        lim.release(clock(), -1.0)
    assert await asyncio.gather(*waiting[1:]) == [None] * 10
    assert lim.describe()["shed_overloaded"] == 1


async def test_the_waiter_kept_for_the_next_slot_waits_until_one_is_expected() -> None:
    # one slot, 10 ms per request: the target delay would be 5 ms (half the no-load latency),
    # but a slot comes free only every 10 ms, so the kept waiter may wait that long for it
    _, lim = await overloaded_adaptive(limit=1, rtt=0.01)
    start = time.monotonic()
    assert await lim.acquire(NORMAL) == SHED_QUEUE_TIMEOUT
    assert 0.008 <= time.monotonic() - start < 0.05


def test_in_standing_overload_one_cut_sets_the_ceiling_and_no_allowance_is_added() -> None:
    """A one-worker service at two in flight doubles latency: in a standing overload (the
    queue holds the next request) the limit goes to one and stays below two for the hold."""
    clock = FakeClock()
    lim = adaptive(clock, limit=2)
    lim.rtt_noload = 0.005
    lim.reference.add_run(clock(), 0.005, 10)
    lim.episode_start = clock() - 1.0  # queueing for a second: standing overload

    def one_round(in_flight: int, rtt: float) -> None:
        for _ in range(in_flight):
            assert lim.try_acquire()
        clock.now += 0.006
        for _ in range(in_flight):
            lim.release(clock(), rtt)
        lim.calm_since = None  # the next request is already waiting in the queue

    while lim.effective == 2:
        one_round(2, 0.0104)  # two in flight: twice the no-load latency
    assert lim.effective == 1
    assert lim.describe()["ceiling"] == 2
    seen = []
    for _ in range(1000):  # 6 s of one in flight at the no-load latency, within the hold
        one_round(1, 0.0052)
        seen.append(lim.effective)
    assert set(seen) == {1}
    assert lim.describe()["standing_overload"] is True


def test_static_mode_ignores_latency() -> None:
    clock = FakeClock()
    lim = ConcurrencyLimiter(ConcurrencyConfig(mode="static", limit=8), clock)
    drive(lim, clock, 10.0, base=0.01, capacity=2)
    assert lim.effective == 8
    assert lim.updates == 0
