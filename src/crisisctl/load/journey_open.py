"""Journeys under the open model: each arrival of the schedule runs the steps once.

As k6's arrival-rate executors do, an arrival does not wait for the journeys before it: the
schedule (`RateSchedule.arrivals`, constant or Poisson; one process's `part` of it) says when
a journey starts, whatever the service does. A pool of `connections` journey users (each a
`JourneyClient`: one keep-alive connection) carries them: an arrival takes a free user, empties
its cookie jar, takes its own feeder rows (`Feeder.row` by arrival number: a ``unique`` feeder
gives every arrival its own row) and runs the steps once (`JourneyRun.journey_once`), with
per-step figures as in the closed model. An arrival that finds no free user within
`timeout_s` of its time, or is still waiting when the schedule ends, is dropped
(`LoadResult.dropped`, as the open model counts a request it could not start); one that
starts more than 1 ms late is a late start. `LoadResult.journeys` counts the arrivals that
started, so the dropped rate is dropped ÷ (journeys + dropped). The first step's latency is
measured from the arrival's time (corrected for coordinated omission) and from its send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from crisisctl.load.journey import Journey
from crisisctl.load.journey_client import JourneyClient
from crisisctl.load.journey_run import JourneyRun
from crisisctl.load.recorder import Recorder, Tick
from crisisctl.load.recording import LoadResult
from crisisctl.load.runbase import LATE_START_S, Control, finish_run, ticker
from crisisctl.load.schedule import RateSchedule, ThinkTime, part_of
from crisisctl.stats import LatencyHistogram
from crisisctl.transport.target import Target

__all__ = ["run_journeys_open"]


async def _arrival(
    run: JourneyRun,
    number: int,
    client: JourneyClient,
    free: asyncio.Queue[JourneyClient],
    rec: Recorder,
    ctl: Control,
    intended: float,
) -> None:
    """One journey on `client`, which goes back to the pool afterwards."""
    try:
        client.clear_cookies()
        await run.journey_once(number, client, rec, ctl, intended)
    finally:
        free.put_nowait(client)


async def _dispatch(
    run: JourneyRun,
    slots: Iterator[float],
    free: asyncio.Queue[JourneyClient],
    rec: Recorder,
    ctl: Control,
    t0: float,
    journeys: set[asyncio.Task[None]],
) -> None:
    """Start a journey at each slot's time on a free user, or count the slot dropped."""
    result = rec.result
    for number, offset in enumerate(slots):
        intended = t0 + offset
        if intended >= ctl.stop_at:
            return
        while (now := time.monotonic()) < min(intended, ctl.stop_at):  # noqa: ASYNC110
            await asyncio.sleep(min(intended - now, 0.25))  # (an abort moves stop_at)
        if time.monotonic() >= ctl.stop_at:  # stopped early while this slot waited
            if ctl.aborted is None:
                result.dropped += 1
            continue
        if run.max_requests is not None and result.requests >= run.max_requests:
            return
        try:
            client = free.get_nowait()
        except asyncio.QueueEmpty:
            wait = min(intended + run.timeout_s, ctl.stop_at) - time.monotonic()
            try:
                client = await asyncio.wait_for(free.get(), max(wait, 0.0))
            except TimeoutError:
                if ctl.aborted is None or time.monotonic() < ctl.stop_at:
                    result.dropped += 1  # no user was free within the timeout
                continue
            if time.monotonic() >= ctl.stop_at:
                free.put_nowait(client)
                if ctl.aborted is None:
                    result.dropped += 1
                continue
        if time.monotonic() - intended > LATE_START_S:
            result.late_starts += 1
        result.journeys = (result.journeys or 0) + 1
        task = asyncio.create_task(_arrival(run, number, client, free, rec, ctl, intended))
        journeys.add(task)
        task.add_done_callback(journeys.discard)


async def run_journeys_open(
    journey: Journey,
    target: Target,
    url: str,
    *,
    schedule: RateSchedule,
    connections: int = 64,
    timeout_s: float = 10.0,
    seed: int | None = None,
    arrival: str = "constant",
    arrival_seed: int | None = None,
    part: int = 0,
    parts: int = 1,
    start_at: float | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    stop: Callable[[], str | None] | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Run `journey` once per arrival of `schedule` (this process's `part` of `parts`), on at
    most `connections` journeys at a time; see the module's docstring."""
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections!r}.")
    duration_s = schedule.duration_s
    slots = part_of(schedule.arrivals(arrival, arrival_seed), part, parts)
    run = JourneyRun(journey, target, schedule, ThinkTime(), timeout_s, seed, max_requests)
    run.open_model = True
    result = LoadResult(
        model="open", url=url, duration_s=duration_s, timeout_s=timeout_s,
        target_rate=schedule.expected() / duration_s / parts, connections=connections,
        latency_uncorrected=LatencyHistogram(), journeys=0,
    )  # fmt: skip
    free: asyncio.Queue[JourneyClient] = asyncio.Queue()
    clients = [JourneyClient(target, timeout_s) for _ in range(connections)]
    for client in clients:
        free.put_nowait(client)
    t0 = time.monotonic() if start_at is None else start_at
    ctl = Control(t0 + duration_s)
    rec = Recorder(result, t0, run.stats)
    journeys: set[asyncio.Task[None]] = set()
    dispatcher = asyncio.create_task(_dispatch(run, slots, free, rec, ctl, t0, journeys))
    tick_task = asyncio.create_task(ticker(rec, ctl, on_tick, stop))
    try:
        while not dispatcher.done() or journeys:
            left = ctl.stop_at + timeout_s - time.monotonic()
            if left <= 0:
                break
            waiting = {dispatcher, *journeys} if not dispatcher.done() else set(journeys)
            await asyncio.wait(waiting, timeout=min(left, 0.25))
    finally:
        for task in (tick_task, dispatcher, *journeys):
            task.cancel()
        outcomes = await asyncio.gather(tick_task, dispatcher, *journeys, return_exceptions=True)
        for client in clients:
            client.close()
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    finish_run(rec, [], ctl, on_tick)
    result.connects = sum(c.connects for c in clients)
    return result
