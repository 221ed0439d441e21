"""The load engine: open-model and closed-model HTTP/1.1 runs over weighted operations.

Open model (`run_open_ops`, or `run_open` for one URL): requests arrive on a schedule — a
constant rate, or stages that ramp the rate linearly (`RateSchedule`), evenly spaced or as a
Poisson process (`arrival`) — whatever happened to earlier requests. A pool of
`connections` workers, each with one keep-alive `HttpClient`, takes the next due slot;
latency is measured from the intended send time (corrected for coordinated omission) and
from the actual send time (uncorrected). A slot that could not start within `timeout_s` of
its intended time (no free connection), or that was still waiting for a connection when the
schedule ended, is dropped and counted (`LoadResult.dropped`, `dropped_rate`); one that
starts more than 1 ms late is a late start. One process of several sends its `part` of the
one schedule (`schedule.part_of`), from a start instant they share (`start_at`).

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

Each connection is a lane (`crisisctl.load.lanes`): driven from the connection's own
callbacks, with no task or future per request.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence

from crisisctl.load.client import parse_target
from crisisctl.load.lanes import ClosedLane, LaneRun, OpenLane
from crisisctl.load.recorder import Recorder, Tick
from crisisctl.load.recording import LoadResult
from crisisctl.load.runbase import (
    Control,
    Operation,
    Picker,
    check_common,
    check_ops,
    finish_run,
)
from crisisctl.load.schedule import RateSchedule, ThinkTime, part_of
from crisisctl.load.target import Target
from crisisctl.load.templates import FixedRequest
from crisisctl.stats import LatencyHistogram
from crisisctl.transport.client import HttpClient, build_request

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
    arrival: str = "constant",
    arrival_seed: int | None = None,
    part: int = 0,
    parts: int = 1,
    start_at: float | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Send `operations` (drawn by weight) at the arrival rate of `schedule`, open model.

    Arrivals are ``constant`` (evenly spaced) or ``poisson`` (seeded by `arrival_seed`);
    this run sends arrivals ``part, part + parts, …`` of them (one process of `parts`), the
    schedule starting at monotonic time `start_at` (default: now). Connection *i* sends with
    the extra headers ``sessions[i % len(sessions)]`` (e.g. a login cookie). `on_tick` gets a
    `Tick` per second; when `stop()` returns a reason the run stops sending and
    `LoadResult.aborted` holds it; at most `max_requests` requests start (an exact bound).
    Raises ValueError for bad numbers.
    """
    duration_s = schedule.duration_s
    check_common(duration_s, timeout_s)
    check_ops(operations)
    if connections < 1:
        raise ValueError(f"--connections must be at least 1, not {connections!r}.")
    slots = part_of(schedule.arrivals(arrival, arrival_seed), part, parts)
    result = LoadResult(
        model="open",
        url=url or target.url,
        duration_s=duration_s,
        timeout_s=timeout_s,
        target_rate=schedule.expected() / duration_s / parts,
        connections=connections,
        latency_uncorrected=LatencyHistogram(),
    )
    stats = [op.stats() for op in operations]
    pickers = [
        Picker(operations, stats, sessions[i % len(sessions)] if sessions else {})
        for i in range(connections)
    ]
    clients = []
    for picker in pickers:
        first = picker.bound[0].fixed
        clients.append(
            HttpClient(target, first or b"", timeout_s=timeout_s, head_only=picker.head_only[0])
        )
    rng = random.Random(seed)
    t0 = time.monotonic() if start_at is None else start_at
    ctl = Control(t0 + duration_s)
    rec = Recorder(result, t0, stats)
    single = len(operations) == 1

    run = LaneRun(rec, ctl, rng, max_requests)
    lanes = [
        OpenLane(
            run,
            client,
            picker,
            single=single,
            timeout_s=timeout_s,
            slots=slots,
            t0=t0,
            result=result,
        )
        for client, picker in zip(clients, pickers, strict=True)
    ]
    await run.run(lanes, timeout_s, on_tick, stop)
    # slots due before the end that no lane took (every connection was busy)
    if ctl.aborted is None:
        result.dropped += sum(1 for offset in slots if t0 + offset < ctl.stop_at)
    finish_run(rec, clients, ctl, on_tick)
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
    arrival: str = "constant",
    seed: int | None = None,
    target: Target | None = None,
) -> LoadResult:
    """Send to `url` at `rate` requests/s for `duration_s` s, or follow `stages`, open model.

    With `stages` [(duration_s, target_rate), …] the rate starts at `rate` and ramps linearly
    to each stage's target over its duration; the run lasts the sum of the stage durations.
    Arrivals are ``constant`` or ``poisson`` (seeded by `seed`); `target` is `url` already
    parsed with its transport options (else `url` is parsed plainly). Raises ValueError for a
    URL that is not http:// or https:// or invalid numbers.
    """
    target = parse_target(url) if target is None else target
    if stages:
        schedule = RateSchedule.from_stages(rate, stages)
    else:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"the rate must be a positive number of requests/s, not {rate!r}.")
        check_common(duration_s, timeout_s)
        schedule = RateSchedule.constant(rate, duration_s)
    request = FixedRequest(build_request(target, method, body, headers))
    op = Operation(f"{method.upper()} {target.path}", request, method=method, path=target.path)
    return await run_open_ops(
        target, [op], schedule=schedule, connections=connections, timeout_s=timeout_s, url=url,
        seed=seed, arrival=arrival, arrival_seed=seed,
    )  # fmt: skip


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
    max_requests: int | None = None,
) -> LoadResult:
    """Virtual users send `operations` (drawn by weight), closed model.

    `users` gives the number of active users over time: user *i* (one keep-alive connection,
    extra headers ``sessions[i % len(sessions)]``) runs while the schedule is above *i*, and
    the run lasts as long as the schedule. `on_tick`, `stop` and `max_requests` as for
    `run_open_ops`.
    """
    duration_s = users.duration_s
    check_common(duration_s, timeout_s)
    check_ops(operations)
    count = math.ceil(max(max(r0, r1) for _, r0, r1 in users.segments) - 1e-9)
    if count < 1:
        raise ValueError("the closed model needs at least one user.")
    think = think or ThinkTime()
    result = LoadResult(
        model="closed",
        url=url or target.url,
        duration_s=duration_s,
        timeout_s=timeout_s,
        users=count,
    )
    stats = [op.stats() for op in operations]
    pickers = [
        Picker(operations, stats, sessions[i % len(sessions)] if sessions else {})
        for i in range(count)
    ]
    clients = [
        HttpClient(target, p.bound[0].fixed or b"", timeout_s=timeout_s, head_only=p.head_only[0])
        for p in pickers
    ]
    rng = random.Random(seed)
    t0 = time.monotonic()
    ctl = Control(t0 + duration_s)
    rec = Recorder(result, t0, stats)
    single = len(operations) == 1
    run = LaneRun(rec, ctl, rng, max_requests)
    lanes = [
        ClosedLane(
            run,
            client,
            picker,
            single=single,
            timeout_s=timeout_s,
            index=index,
            users=users,
            t0=t0,
            think=think,
        )
        for index, (client, picker) in enumerate(zip(clients, pickers, strict=True))
    ]
    await run.run(lanes, timeout_s, on_tick, stop)
    finish_run(rec, clients, ctl, on_tick)
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
    ``i * ramp_up_s / users`` seconds in. Raises ValueError for a URL that is not http:// or
    https:// or invalid numbers.
    """
    target = parse_target(url)
    check_common(duration_s, timeout_s)
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
