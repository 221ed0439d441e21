"""The load engine: open-model and closed-model HTTP/1.1 runs over weighted operations.

Open model (`run_open_ops`, or `run_open` for one URL): requests arrive on a schedule — a
constant rate, or stages that ramp the rate linearly (`RateSchedule`) — whatever happened to
earlier requests. A pool of `connections` workers, each with one keep-alive `HttpClient`,
takes the next due slot; latency is measured from the intended send time (corrected for
coordinated omission) and from the actual send time (uncorrected). A slot that could not
start within `timeout_s` of its intended time (no free connection) is dropped and counted;
one that starts more than 1 ms late is a late start.

Closed model (`run_closed_ops`, or `run_closed`): virtual users, each with its own keep-alive
connection, send a request, wait for the response, think (constant, uniform or exponential),
and repeat; the number of active users follows a schedule (user *i* runs while the schedule
is above *i*: a ramp-up, or stages).

Each request is one of the run's `Operation`s, drawn by weight; its bytes come from the
operation's template bound to the user's headers (e.g. a login cookie). Both runs are
bounded: nothing is sent after the schedule ends (or after `stop()` asks for an early end);
outstanding requests get at most `timeout_s` more, then are cancelled and counted as
timeouts. Latencies go into `LatencyHistogram`s through a `Recorder`; once a second a `Tick`
goes to `on_tick` (the live view, early aborts, other processes).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from crisisctl.load.client import HttpClient, RequestError, build_request, parse_target
from crisisctl.load.recorder import Recorder, Tick
from crisisctl.load.recording import LoadResult, OperationStats
from crisisctl.load.schedule import RateSchedule, ThinkTime
from crisisctl.load.target import Target
from crisisctl.load.templates import BoundRequest, FixedRequest
from crisisctl.stats import LatencyHistogram

__all__ = [
    "LoadResult",
    "Operation",
    "RateSchedule",
    "ThinkTime",
    "run_closed",
    "run_closed_ops",
    "run_open",
    "run_open_ops",
]

#: A request that starts more than this long after its intended time counts as a late start.
LATE_START_S = 0.001
#: Timers fire up to ~1 ms late, so a worker aims this much early.
EARLY_S = 0.0005


# -- operations ------------------------------------------------------------------------------
class RequestSource(Protocol):
    """Anything that gives the request a user sends, bound to the user's extra headers."""

    def bind(self, extra_headers: Mapping[str, str] | None = None) -> BoundRequest: ...


@dataclass(frozen=True, slots=True)
class Operation:
    """One kind of request of a run, drawn with probability weight ÷ total weight."""

    name: str
    request: RequestSource
    weight: float = 1.0
    #: statuses that pass the operation's check (None: any status below 400)
    expect: frozenset[int] | None = None
    method: str = "GET"
    path: str = "/"

    def stats(self) -> OperationStats:
        """Empty figures for this operation."""
        return OperationStats(self.name, self.method, self.path, self.weight, self.expect)


class _Picker:
    """A user's operations, bound to its headers, and the weighted draw between them."""

    __slots__ = ("bound", "cumulative", "head_only", "stats", "total")

    def __init__(
        self, ops: Sequence[Operation], stats: Sequence[OperationStats], headers: Mapping[str, str]
    ) -> None:
        self.stats = list(stats)
        self.bound = [op.request.bind(headers) for op in ops]
        self.head_only = [op.method.upper() == "HEAD" for op in ops]
        self.cumulative = list(itertools.accumulate(op.weight for op in ops))
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> int:
        if len(self.cumulative) == 1:
            return 0
        index = bisect.bisect_right(self.cumulative, rng.random() * self.total)
        return min(index, len(self.cumulative) - 1)


class _Control:
    """When sending stops (moved earlier by an abort) and why the run stopped early."""

    __slots__ = ("aborted", "stop_at")

    def __init__(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.aborted: str | None = None


def _check_ops(operations: Sequence[Operation]) -> None:
    if not operations:
        raise ValueError("a run needs at least one operation.")
    names = [op.name for op in operations]
    if len(set(names)) != len(names):
        raise ValueError("operation names must be unique.")
    if any(not (math.isfinite(op.weight) and op.weight > 0) for op in operations):
        raise ValueError("operation weights must be positive numbers.")


def _check_common(duration_s: float, timeout_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"the duration must be a positive number of seconds, not {duration_s!r}.")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"the timeout must be a positive number of seconds, not {timeout_s!r}.")


async def _ticker(
    rec: Recorder,
    ctl: _Control,
    on_tick: Callable[[Tick], None] | None,
    stop: Callable[[], str | None] | None,
) -> None:
    """Report each closed second to `on_tick`; poll `stop` (5 times a second)."""
    while True:
        now = time.monotonic()
        for tick in rec.ticks(now):
            if on_tick is not None:
                on_tick(tick)
        if stop is not None and ctl.aborted is None:
            reason = stop()
            if reason is not None:
                ctl.aborted = reason
                ctl.stop_at = min(ctl.stop_at, now)
        to_boundary = 1.0 - ((now - rec.t0) % 1.0)
        await asyncio.sleep(min(0.2, to_boundary + 0.0005))


async def _drive(
    workers: list[asyncio.Task[None]],
    rec: Recorder,
    ctl: _Control,
    timeout_s: float,
    on_tick: Callable[[Tick], None] | None,
    stop: Callable[[], str | None] | None,
) -> None:
    """Run `workers` until they end, or until `timeout_s` after the stop time; then cancel
    the rest (their requests count as timeouts) and re-raise any bug."""
    ticker = asyncio.create_task(_ticker(rec, ctl, on_tick, stop))
    try:
        pending = set(workers)
        while pending:
            left = ctl.stop_at + timeout_s - time.monotonic()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.25))
    finally:
        ticker.cancel()
        for task in workers:
            task.cancel()
        outcomes = await asyncio.gather(*workers, ticker, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome


def _finish(
    rec: Recorder,
    clients: Sequence[HttpClient],
    ctl: _Control,
    on_tick: Callable[[Tick], None] | None,
) -> None:
    if ctl.aborted is not None:
        rec.result.aborted = ctl.aborted
        # the rate is counted over the time the run actually sent
        rec.result.duration_s = max(min(ctl.stop_at - rec.t0, rec.result.duration_s), 1e-3)
    for tick in rec.finish(time.monotonic(), sum(c.connects for c in clients)):
        if on_tick is not None:
            on_tick(tick)


# -- open model ------------------------------------------------------------------------------
async def run_open_ops(
    target: Target,
    operations: Sequence[Operation],
    *,
    schedule: RateSchedule,
    connections: int = 64,
    timeout_s: float = 10.0,
    sessions: Sequence[Mapping[str, str]] = (),
    url: str | None = None,
    seed: int | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    stop: Callable[[], str | None] | None = None,
) -> LoadResult:
    """Send `operations` (drawn by weight) at the arrival rate of `schedule`, open model.

    Connection *i* sends with the extra headers ``sessions[i % len(sessions)]`` (e.g. a
    login cookie). `on_tick` gets a `Tick` per second; when `stop()` returns a reason the
    run stops sending and `LoadResult.aborted` holds it. Raises ValueError for bad numbers.
    """
    duration_s = schedule.duration_s
    _check_common(duration_s, timeout_s)
    _check_ops(operations)
    if connections < 1:
        raise ValueError(f"--connections must be at least 1, not {connections!r}.")
    result = LoadResult(
        model="open",
        url=url or f"http://{target.host_header}{target.path}",
        duration_s=duration_s,
        timeout_s=timeout_s,
        target_rate=schedule.expected() / duration_s,
        connections=connections,
        latency_uncorrected=LatencyHistogram(),
    )
    stats = [op.stats() for op in operations]
    pickers = [
        _Picker(operations, stats, sessions[i % len(sessions)] if sessions else {})
        for i in range(connections)
    ]
    clients = []
    for picker in pickers:
        first = picker.bound[0].fixed
        clients.append(
            HttpClient(target, first or b"", timeout_s=timeout_s, head_only=picker.head_only[0])
        )
    rng = random.Random(seed)
    t0 = time.monotonic()
    ctl = _Control(t0 + duration_s)
    rec = Recorder(result, t0, stats)
    slots = schedule.send_times()
    single = len(operations) == 1

    async def worker(client: HttpClient, picker: _Picker) -> None:
        in_flight = False
        op = picker.stats[0]
        request: bytes | None = None
        head_only = picker.head_only[0]
        fixed = single and picker.bound[0].fixed is not None
        try:
            for offset in slots:
                intended = t0 + offset
                if intended >= ctl.stop_at:
                    return
                now = time.monotonic()
                if now >= ctl.stop_at:
                    if ctl.aborted is None:
                        result.dropped += 1
                    return
                delay = intended - now
                if delay > EARLY_S:
                    await asyncio.sleep(delay - EARLY_S)
                    now = time.monotonic()
                    if intended - now > EARLY_S:
                        await asyncio.sleep(intended - now)
                        now = time.monotonic()
                    if intended >= ctl.stop_at:
                        return  # the run was stopped early while this slot waited
                elif now - intended > timeout_s:
                    result.dropped += 1  # no connection was free within the timeout
                    continue
                if now - intended > LATE_START_S:
                    result.late_starts += 1
                if not fixed:
                    index = picker.pick(rng)
                    op = picker.stats[index]
                    request = picker.bound[index].render(rng)
                    head_only = picker.head_only[index]
                rec.sent(op)
                in_flight = True
                try:
                    response = await client.send(request=request, head_only=head_only)
                except RequestError as exc:
                    in_flight = False
                    rec.error(op, exc.kind, time.monotonic())
                    continue
                in_flight = False
                done = time.monotonic()
                rec.response(
                    op,
                    response.status,
                    response.body_bytes,
                    int((done - min(intended, now)) * 1_000_000),
                    int((done - now) * 1_000_000),
                    done,
                )
        except asyncio.CancelledError:
            if in_flight:
                rec.error(op, "timeout", time.monotonic())
            raise
        finally:
            client.close()

    tasks = [asyncio.create_task(worker(c, p)) for c, p in zip(clients, pickers, strict=True)]
    await _drive(tasks, rec, ctl, timeout_s, on_tick, stop)
    # slots due before the end that no worker took (every connection was busy)
    if ctl.aborted is None:
        result.dropped += sum(1 for offset in slots if t0 + offset < ctl.stop_at)
    _finish(rec, clients, ctl, on_tick)
    return result


async def run_open(
    url: str,
    *,
    rate: float,
    duration_s: float = 0.0,
    stages: Sequence[tuple[float, float]] | None = None,
    connections: int = 64,
    timeout_s: float = 10.0,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Send to `url` at `rate` requests/s for `duration_s` s, or follow `stages`, open model.

    With `stages` [(duration_s, target_rate), …] the rate starts at `rate` and ramps linearly
    to each stage's target over its duration; the run lasts the sum of the stage durations.
    Raises ValueError for a non-loopback URL or invalid numbers.
    """
    target = parse_target(url)
    if stages:
        schedule = RateSchedule.from_stages(rate, stages)
    else:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"the rate must be a positive number of requests/s, not {rate!r}.")
        _check_common(duration_s, timeout_s)
        schedule = RateSchedule.constant(rate, duration_s)
    request = FixedRequest(build_request(target, method, body, headers))
    op = Operation(f"{method.upper()} {target.path}", request, method=method, path=target.path)
    return await run_open_ops(
        target, [op], schedule=schedule, connections=connections, timeout_s=timeout_s, url=url
    )


# -- closed model ----------------------------------------------------------------------------
async def run_closed_ops(
    target: Target,
    operations: Sequence[Operation],
    *,
    users: RateSchedule,
    think: ThinkTime | None = None,
    timeout_s: float = 10.0,
    sessions: Sequence[Mapping[str, str]] = (),
    url: str | None = None,
    seed: int | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    stop: Callable[[], str | None] | None = None,
) -> LoadResult:
    """Virtual users send `operations` (drawn by weight), closed model.

    `users` gives the number of active users over time: user *i* (one keep-alive connection,
    extra headers ``sessions[i % len(sessions)]``) runs while the schedule is above *i*, and
    the run lasts as long as the schedule. `on_tick` and `stop` as for `run_open_ops`.
    """
    duration_s = users.duration_s
    _check_common(duration_s, timeout_s)
    _check_ops(operations)
    count = math.ceil(max(max(r0, r1) for _, r0, r1 in users.segments) - 1e-9)
    if count < 1:
        raise ValueError("the closed model needs at least one user.")
    think = think or ThinkTime()
    result = LoadResult(
        model="closed",
        url=url or f"http://{target.host_header}{target.path}",
        duration_s=duration_s,
        timeout_s=timeout_s,
        users=count,
    )
    stats = [op.stats() for op in operations]
    pickers = [
        _Picker(operations, stats, sessions[i % len(sessions)] if sessions else {})
        for i in range(count)
    ]
    clients = [
        HttpClient(target, p.bound[0].fixed or b"", timeout_s=timeout_s, head_only=p.head_only[0])
        for p in pickers
    ]
    rng = random.Random(seed)
    t0 = time.monotonic()
    ctl = _Control(t0 + duration_s)
    rec = Recorder(result, t0, stats)
    single = len(operations) == 1
    no_think = think.value_s == 0 and think.kind == "constant"
    fewest_users = min(min(r0, r1) for _, r0, r1 in users.segments)

    async def user(index: int, client: HttpClient, picker: _Picker) -> None:
        in_flight = False
        op = picker.stats[0]
        request: bytes | None = None
        head_only = picker.head_only[0]
        fixed = single and picker.bound[0].fixed is not None
        always_active = fewest_users > index + 1e-9  # (the per-request path skips rate_at)
        try:
            while (sent_at := time.monotonic()) < ctl.stop_at:
                if always_active:
                    pass
                elif users.rate_at(sent_at - t0) <= index + 1e-9:  # not active: wait its turn
                    t = sent_at - t0
                    due = users.next_time_above(index + 1e-9, t)
                    if due is None:
                        return
                    wait = min(t0 + due - sent_at, ctl.stop_at - sent_at, 1.0)
                    await asyncio.sleep(max(wait, 0.0005))
                    continue
                if not fixed:
                    pick = picker.pick(rng)
                    op = picker.stats[pick]
                    request = picker.bound[pick].render(rng)
                    head_only = picker.head_only[pick]
                rec.sent(op)
                in_flight = True
                try:
                    response = await client.send(request=request, head_only=head_only)
                except RequestError as exc:
                    in_flight = False
                    rec.error(op, exc.kind, time.monotonic())
                    if exc.kind == "refused":
                        await asyncio.sleep(min(0.01, max(ctl.stop_at - time.monotonic(), 0.0)))
                    else:
                        await asyncio.sleep(0)  # an error may come without a wait: let others run
                else:
                    in_flight = False
                    done = time.monotonic()
                    us = int((done - sent_at) * 1_000_000)
                    rec.response(op, response.status, response.body_bytes, us, None, done)
                # a response always came through the event loop (send awaits a future), so
                # the other users have run: no extra yield when there is no think time
                if not no_think:
                    pause = min(think.draw(rng), ctl.stop_at - time.monotonic())
                    if pause > 0:
                        await asyncio.sleep(pause)
        except asyncio.CancelledError:
            if in_flight:
                rec.error(op, "timeout", time.monotonic())
            raise
        finally:
            client.close()

    tasks = [
        asyncio.create_task(user(i, c, p))
        for i, (c, p) in enumerate(zip(clients, pickers, strict=True))
    ]
    await _drive(tasks, rec, ctl, timeout_s, on_tick, stop)
    _finish(rec, clients, ctl, on_tick)
    return result


async def run_closed(
    url: str,
    *,
    users: int,
    duration_s: float,
    ramp_up_s: float = 0.0,
    think: ThinkTime | None = None,
    timeout_s: float = 10.0,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> LoadResult:
    """`users` virtual users, each on its own keep-alive connection, for `duration_s` seconds.

    Each user sends, waits for the response, thinks (`think`), and repeats. User *i* starts
    ``i * ramp_up_s / users`` seconds in. Raises ValueError for a non-loopback URL or invalid
    numbers.
    """
    target = parse_target(url)
    _check_common(duration_s, timeout_s)
    if users < 1:
        raise ValueError(f"--users must be at least 1, not {users!r}.")
    if not (math.isfinite(ramp_up_s) and 0 <= ramp_up_s <= duration_s):
        raise ValueError(f"the ramp-up must be between 0 and the duration, not {ramp_up_s!r}.")
    if ramp_up_s > 0:
        steps = [(ramp_up_s, float(users)), (duration_s - ramp_up_s, float(users))]
        schedule = RateSchedule.from_stages(0, [s for s in steps if s[0] > 0])
    else:
        schedule = RateSchedule.constant(users, duration_s)
    request = FixedRequest(build_request(target, method, body, headers))
    op = Operation(f"{method.upper()} {target.path}", request, method=method, path=target.path)
    return await run_closed_ops(
        target, [op], users=schedule, think=think, timeout_s=timeout_s, url=url, seed=seed
    )
