"""Running a journey: each closed-model virtual user runs the steps in order, again and again.

(The open model — each arrival runs the steps once — is `crisisctl.load.journey_open`, on the
same `JourneyRun`.)

A user is one task with its own `JourneyClient` (one keep-alive connection, its own cookie
jar — Set-Cookie answers become the Cookie header of its next requests; the jar is emptied
when the user starts the journey again, as k6 does per iteration). At the start of each
journey the user takes its feeder rows (`Feeder.row`); every step draws the scenario
variables it uses, renders its request with them, the rows and the values extracted so far,
and records its outcome under the step's name (per-step figures and thresholds). A response
a step cannot extract a value from counts as a failed request of that step (error kind
``extract``; its latency is not in the percentiles) and the user starts the journey over,
as it does after a transport error. Think time follows each step. User *i* runs while the
users schedule is above *i*. Requests still in flight `timeout_s` after the stop time count
as timeouts. `max_requests` stops the run once that many requests have started (exact).

Journeys need the response's headers and body, so they do not use the engine's lanes (which
keep neither): a task per user and whole responses cost more generator CPU per request than
a plain-operations run (measured in docs: about 1.5x on a bare endpoint).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from crisisctl.load.journey import EXTRACT_ERROR, Journey
from crisisctl.load.journey_client import JourneyClient
from crisisctl.load.lanes import MAX_REQUESTS_REASON
from crisisctl.load.recorder import Recorder, Tick
from crisisctl.load.recording import LoadResult, OperationStats
from crisisctl.load.runbase import Control, finish_run, ticker
from crisisctl.load.schedule import RateSchedule, ThinkTime
from crisisctl.transport.client import RequestError
from crisisctl.transport.target import Target

__all__ = ["JourneyRun", "run_journeys"]


class JourneyRun:
    """What the users of one run share (`crisisctl.load.journey_open` runs arrivals on it)."""

    def __init__(
        self,
        journey: Journey,
        target: Target,
        users: RateSchedule,
        think: ThinkTime,
        timeout_s: float,
        seed: int | None,
        max_requests: int | None,
    ) -> None:
        self.journey = journey
        self.target = target
        self.clients: list[JourneyClient] = []
        self.users = users
        self.think = think
        self.timeout_s = timeout_s
        self.rng = random.Random(seed)
        self.max_requests = max_requests
        self.stats = [
            OperationStats(s.name, s.method, s.spec_path, 1.0, s.expect) for s in journey.steps
        ]
        self.no_think = think.value_s == 0 and think.kind == "constant"
        #: open model: latencies also go to the uncorrected histogram (see `journey_once`)
        self.open_model = False

    async def pause(self, ctl: Control, seconds: float) -> bool:
        """Sleep `seconds` (or until the stop time); False when the run is over."""
        left = ctl.stop_at - time.monotonic()
        if seconds > 0:
            await asyncio.sleep(min(seconds, max(left, 0.0)))
        return time.monotonic() < ctl.stop_at

    async def user(self, index: int, rec: Recorder, ctl: Control, t0: float) -> None:
        """Virtual user `index` (see the module's docstring)."""
        client = JourneyClient(self.target, self.timeout_s)
        self.clients.append(client)
        try:
            if not self.no_think and not await self.pause(ctl, self.think.first(self.rng)):
                return
            while True:
                now = time.monotonic()
                if now >= ctl.stop_at:
                    return
                level = index + 1e-9
                if self.users.rate_at(now - t0) <= level:
                    due = self.users.next_time_above(level, now - t0)
                    if due is None:
                        return
                    await self.pause(ctl, min(t0 + due - now, 1.0) + 0.0005)
                    continue
                client.clear_cookies()
                if not await self.journey_once(index, client, rec, ctl):
                    return
        finally:
            client.close()

    async def journey_once(
        self,
        index: int,
        client: JourneyClient,
        rec: Recorder,
        ctl: Control,
        intended: float | None = None,
    ) -> bool:
        """One pass over the steps; False when the run is over.

        `index` picks the feeder rows (a user's, or an open-model arrival's). `intended` (open
        model) is the arrival's time: the first step's latency is measured from it (corrected
        for coordinated omission) and from its actual send (uncorrected); a later step is sent
        when the one before it ends, so both of its figures start at its send.
        """
        values: dict[str, object] = {}
        for feeder in self.journey.feeders:
            values.update(feeder.row(index, self.rng))
        sources = self.journey.sources
        for step, op in zip(self.journey.steps, self.stats, strict=True):
            if time.monotonic() >= ctl.stop_at:
                return False
            if self.max_requests is not None and rec.result.requests >= self.max_requests:
                ctl.stop_at = min(ctl.stop_at, time.monotonic())
                if ctl.aborted is None:
                    ctl.aborted = f"{MAX_REQUESTS_REASON} ({self.max_requests} requests)"
                return False
            for name in step.names:
                if name in sources and name not in values:
                    values[name] = sources[name].next(self.rng)
            target, headers, body = step.render(values)
            rec.sent(op)
            sent = time.monotonic()
            ok = True
            try:
                response = await client.request(step.method, target, headers, body)
            except asyncio.CancelledError:
                rec.error(op, "timeout", time.monotonic())
                raise
            except RequestError as exc:
                kind = exc.kind
                rec.error(op, kind, time.monotonic())
                ok = False
                if kind == "refused":
                    await asyncio.sleep(0.01)
            else:
                done = time.monotonic()
                for extractor in step.extractors:
                    value = extractor.apply(response.headers, response.body)
                    if value is None:
                        ok = False
                        break
                    values[extractor.name] = value
                if ok:
                    us = int((done - sent) * 1_000_000)
                    corrected = us
                    if intended is not None:
                        corrected = int((done - min(intended, sent)) * 1_000_000)
                    raw = us if self.open_model else None
                    rec.response(op, response.status, len(response.body), corrected, raw, done)
                else:
                    rec.error(op, EXTRACT_ERROR, done)
            for name in step.names:  # drawn again at the next step that uses them
                if name in sources:
                    values.pop(name, None)
            pause = 0.0 if self.no_think else self.think.draw(self.rng)
            intended = None  # only the first step's send can be late
            if not await self.pause(ctl, pause):
                return False
            if not ok:
                return True
        return True


async def run_journeys(
    journey: Journey,
    target: Target,
    url: str,
    *,
    users: RateSchedule,
    think: ThinkTime | None = None,
    timeout_s: float = 10.0,
    seed: int | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    stop: Callable[[], str | None] | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Run `journey` against `target` (`url` for the report) with the `users` schedule."""
    count = max(1, int(max(max(r0, r1) for _, r0, r1 in users.segments) + 0.999999))
    run = JourneyRun(journey, target, users, think or ThinkTime(), timeout_s, seed, max_requests)
    result = LoadResult(
        model="closed", url=url, duration_s=users.duration_s, timeout_s=timeout_s,
        users=count,
    )  # fmt: skip
    t0 = time.monotonic()
    ctl = Control(t0 + users.duration_s)
    rec = Recorder(result, t0, run.stats)
    tasks = [asyncio.create_task(run.user(i, rec, ctl, t0)) for i in range(count)]
    tick_task = asyncio.create_task(ticker(rec, ctl, on_tick, stop))
    try:
        pending = set(tasks)
        while pending:
            left = ctl.stop_at + timeout_s - time.monotonic()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.25))
    finally:
        tick_task.cancel()
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(tick_task, *tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    finish_run(rec, [], ctl, on_tick)
    result.connects = sum(c.connects for c in run.clients)
    return result
