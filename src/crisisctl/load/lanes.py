"""The engine's lanes: one keep-alive connection each, driven by event-loop callbacks.

A lane sends one request at a time on its connection (an `HttpClient`'s). It is itself the
waiter its `HttpConnection` resolves: the parser callback that completes a response hands it
to the lane, which takes the time, records the response and decides in the same callback
when its next request goes — at once (closed model, no think time; sent as soon as the
parser is done with the bytes that completed the response), after a think time, or at the
open model's next slot (a timer). No task, coroutine or future is made per request: with
asyncio's usual await-a-future style those were most of what a request cost the generator
(`benchmarks/loadgen_throughput.py`), and the response time was only taken once the
awaiting task had been scheduled again, which showed in the p99. Connecting — rare, on
keep-alive connections — is the one step done in a task.

`LaneRun` is what a run's lanes share: the loop, the recorder, the stop time, the bound on
requests (``max_requests``: exact — the lane that would start one more ends the run instead,
and `LoadResult.aborted` says so), how many lanes are still going and the first bug (an
exception in a lane's callback ends the run and is raised from `LaneRun.run`). `ClosedLane`
is a virtual user of the closed model, `OpenLane` one of the open model's connections taking
the schedule's next due slot.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, Final

from crisisctl.load.recorder import Recorder, Tick
from crisisctl.load.recording import LoadResult
from crisisctl.load.runbase import EARLY_S, LATE_START_S, Control, Picker, ticker
from crisisctl.load.schedule import RateSchedule, ThinkTime
from crisisctl.transport.client import (
    ClosedEarly,
    HttpClient,
    HttpConnection,
    Response,
    classify_error,
)

__all__ = ["MAX_REQUESTS_REASON", "ClosedLane", "Lane", "LaneRun", "OpenLane"]

#: `LoadResult.aborted` of a run that stopped at its `max_requests` bound (then the count)
MAX_REQUESTS_REASON: Final = "stopped at the --max-requests bound"

#: failures on a reused keep-alive connection that are retried once on a fresh one
_RETRYABLE = (ClosedEarly, ConnectionResetError, BrokenPipeError)
#: after "connection refused" a lane waits this long before its next request
_REFUSED_PAUSE_S: Final = 0.01
#: how often the run checks, after the stop time, whether requests are still in flight
_DRAIN_POLL_S: Final = 0.02


class LaneRun:
    """What a run's lanes share, and the wait for them to finish."""

    __slots__ = (
        "bug",
        "ctl",
        "finished",
        "lanes",
        "left",
        "loop",
        "max_requests",
        "rec",
        "rng",
        "tasks",
    )

    def __init__(
        self, rec: Recorder, ctl: Control, rng: random.Random, max_requests: int | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        #: requests this run may start at most (-1: no bound)
        self.max_requests = -1 if max_requests is None else max_requests
        self.rec = rec
        self.ctl = ctl
        self.rng = rng
        #: connect tasks in flight (kept referenced until done)
        self.tasks: set[asyncio.Task[None]] = set()
        self.lanes: list[Lane] = []
        self.left = 0
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.bug: BaseException | None = None

    def lane_ended(self) -> None:
        """One lane has nothing more to send."""
        self.left -= 1
        if self.left <= 0 and not self.finished.done():
            self.finished.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """A lane's callback raised: a bug; the run ends and `run` raises it."""
        if self.bug is None:
            self.bug = exc
        if not self.finished.done():
            self.finished.set_result(None)

    def bound_reached(self, now: float) -> None:
        """`max_requests` requests have started: nothing more is sent; the run says why."""
        ctl = self.ctl
        if ctl.aborted is None:
            ctl.aborted = f"{MAX_REQUESTS_REASON} ({self.max_requests} requests)"
        ctl.stop_at = min(ctl.stop_at, now)

    def spawn(self, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a lane's coroutine function as a task the run keeps until it is done."""
        task = self.loop.create_task(coro())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(
        self,
        lanes: Sequence[Lane],
        timeout_s: float,
        on_tick: Callable[[Tick], None] | None,
        stop: Callable[[], str | None] | None,
    ) -> None:
        """Start `lanes`; return when all have ended, or when none is in flight after the stop
        time, or `timeout_s` after it (requests still in flight then count as timeouts)."""
        self.lanes = list(lanes)
        self.left = len(self.lanes)
        for lane in self.lanes:
            self.loop.call_soon(lane.wake)
        tick_task = asyncio.create_task(ticker(self.rec, self.ctl, on_tick, stop))
        try:
            while not self.finished.done():
                now = time.monotonic()
                stop_at = self.ctl.stop_at
                left = stop_at + timeout_s - now
                if left <= 0:
                    break
                if now >= stop_at:
                    if not any(lane.in_flight for lane in self.lanes):
                        break  # only think times and slot timers left: nothing more is sent
                    wait = _DRAIN_POLL_S
                else:
                    wait = min(stop_at - now + 0.001, 0.25)
                await asyncio.wait([self.finished], timeout=min(left, wait))
        finally:
            tick_task.cancel()
            now = time.monotonic()
            for lane in self.lanes:
                lane.halt(now)
            for task in self.tasks:
                task.cancel()
            outcomes = await asyncio.gather(tick_task, *self.tasks, return_exceptions=True)
        if self.bug is not None:
            raise self.bug
        for outcome in outcomes:  # a bug in the ticker (`on_tick`, `stop`) or a connect task
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError
            ):
                raise outcome


class Lane:
    """One connection's stream of requests; subclasses decide when the next one goes."""

    __slots__ = (
        "client",
        "deadline",
        "ended",
        "fixed",
        "fresh",
        "head_only",
        "in_flight",
        "op",
        "picker",
        "request",
        "run",
        "sent_at",
        "timeout_s",
        "timer",
        "wake",
    )

    def __init__(
        self, run: LaneRun, client: HttpClient, picker: Picker, single: bool, timeout_s: float
    ) -> None:
        self.run = run
        self.client = client
        self.picker = picker
        self.timeout_s = timeout_s
        self.op = picker.stats[0]
        self.request = client.request_bytes
        self.head_only = picker.head_only[0]
        #: one operation with fixed bytes: nothing is drawn or rendered per request
        self.fixed = single and picker.bound[0].fixed is not None
        self.in_flight = False
        #: the request in flight went on a new connection (a failure is not retried)
        self.fresh = False
        self.ended = False
        self.sent_at = 0.0
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        #: the lane's next step, bound once (handed to timers and the connection)
        self.wake: Callable[[], None] = self._wake

    # -- what subclasses define --------------------------------------------------------------
    def _wake(self) -> None:
        """Send the next request now, or arm a timer for it, or end."""
        raise NotImplementedError

    def _record(self, response: Response, done: float) -> None:
        """Count a complete response that came at monotonic time `done`."""
        raise NotImplementedError

    def _after(self, now: float, error: str | None) -> None:
        """A request ended (with an error of kind `error`, or a response): what next."""
        raise NotImplementedError

    # -- the waiter interface HttpConnection calls -------------------------------------------
    def done(self) -> bool:
        """Nothing in flight (the connection ignores, or closes on, unexpected bytes)."""
        return not self.in_flight

    def set_result(self, response: Response, /) -> None:
        """The response to the request in flight (called from the parser's callback)."""
        if not self.in_flight:
            return
        conn = self.client.conn
        # the response came with the bytes being parsed: their arrival is its time
        done = conn.received_at if conn is not None and conn.feeding else time.monotonic()
        self.in_flight = False
        try:
            self._record(response, done)
            if not response.keep_alive:
                self.client.close()
            self._after(done, None)
        except Exception as exc:  # a bug: end the run with it
            self.run.fail(exc)

    def set_exception(self, exception: BaseException, /) -> None:
        """The request in flight failed (connection error, timeout, bad response)."""
        if not self.in_flight:
            return
        try:
            self.client.close()
            if (
                not self.fresh
                and isinstance(exception, _RETRYABLE)
                and not (isinstance(exception, ClosedEarly) and exception.got_bytes)
            ):
                # the server had closed this kept-alive connection: once more, fresh
                self.run.spawn(self._connect)
                return
            self.in_flight = False
            now = time.monotonic()
            kind = classify_error(exception)
            self.run.rec.error(self.op, kind, now)
            self._after(now, kind)
        except Exception as exc:
            self.run.fail(exc)

    # -- sending -------------------------------------------------------------------------
    def send(self, now: float) -> None:
        """Send the next request (drawn by weight when the run has several operations)."""
        run = self.run
        limit = run.max_requests
        if limit >= 0 and run.rec.result.requests >= limit:
            run.bound_reached(now)
            self.end()
            return
        if not self.fixed:
            picker = self.picker
            index = picker.pick(run.rng)
            self.op = picker.stats[index]
            self.request = picker.bound[index].render(run.rng)
            self.head_only = picker.head_only[index]
        run.rec.sent(self.op)
        self.sent_at = now
        self.in_flight = True
        self.deadline = deadline = run.loop.time() + self.timeout_s
        conn = self.client.conn
        if conn is None or conn.closed:
            run.spawn(self._connect)
            return
        try:
            conn.start(self, self.request, self.head_only, deadline)
        except ClosedEarly:  # closed since the last response: a fresh connection
            run.spawn(self._connect)
            return
        self.fresh = False

    def soon(self) -> None:
        """Wake as soon as possible: right after the connection has parsed the bytes at hand
        (when called from its callback), or on the loop's next round."""
        conn = self.client.conn
        if conn is None or not conn.after_feed(self.wake):
            self.run.loop.call_soon(self.wake)

    def later(self, delay_s: float, callback: Callable[[], None] | None = None) -> None:
        """Wake (or call `callback`) in `delay_s` seconds."""
        self.timer = self.run.loop.call_later(delay_s, callback or self.wake)

    async def _connect(self) -> None:
        """Open a new connection (by the request's deadline) and send the request on it."""
        client = self.client
        client.close()
        client.connects += 1
        self.fresh = True
        target = client.target
        try:
            async with asyncio.timeout_at(self.deadline):
                conn = await HttpConnection.open_target(target, client.body_cap)
        except Exception as exc:
            self.set_exception(exc)
            return
        client.opened(conn)
        if not self.in_flight or self.ended:
            conn.close()  # the run gave up on this request meanwhile
            return
        client.conn = conn
        try:
            conn.start(self, self.request, self.head_only, self.deadline)
        except Exception as exc:
            self.set_exception(exc)

    # -- ending ----------------------------------------------------------------------------
    def end(self) -> None:
        """Nothing more to send: close the connection and tell the run."""
        if self.ended:
            return
        self.ended = True
        self._cancel_timer()
        self.client.close()
        self.run.lane_ended()

    def halt(self, now: float) -> None:
        """The run is over: a request still in flight counts as a timeout."""
        if self.in_flight:
            self.in_flight = False
            self.run.rec.error(self.op, "timeout", now)
        self.ended = True
        self._cancel_timer()
        self.client.close()

    def _cancel_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()


class ClosedLane(Lane):
    """A closed-model virtual user: send, wait for the response, think, repeat.

    User `index` runs while the `users` schedule is above it (ramp-up, stages). With a think
    time a user also pauses before its first request (`ThinkTime.first`: what is left of a
    pause caught at a random instant), so the users start spread as in the steady state
    instead of all at the same instant — a burst no real population of users sends, which
    only showed as a queue in the first milliseconds' latencies (wrk's ``delay()`` paces
    the first request too).
    """

    __slots__ = ("always_active", "index", "no_think", "started", "t0", "think", "users")

    def __init__(
        self,
        run: LaneRun,
        client: HttpClient,
        picker: Picker,
        *,
        single: bool,
        timeout_s: float,
        index: int,
        users: RateSchedule,
        t0: float,
        think: ThinkTime,
    ) -> None:
        super().__init__(run, client, picker, single, timeout_s)
        self.index = index
        self.users = users
        self.t0 = t0
        self.think = think
        self.no_think = think.value_s == 0 and think.kind == "constant"
        self.started = False
        fewest = min(min(r0, r1) for _, r0, r1 in users.segments)
        #: active for the whole run: the per-request path skips the schedule
        self.always_active = fewest > index + 1e-9

    def _wake(self) -> None:
        try:
            self.timer = None
            if self.ended:
                return
            now = time.monotonic()
            stop_at = self.run.ctl.stop_at
            if now >= stop_at:
                self.end()
                return
            if not self.started:
                self.started = True
                if not self.no_think:  # a first think: the users start spread out
                    self.pause(self.think.first(self.run.rng), now)
                    return
            if not self.always_active:
                level = self.index + 1e-9
                t = now - self.t0
                if self.users.rate_at(t) <= level:  # not active: wait for its turn
                    due = self.users.next_time_above(level, t)
                    if due is None:
                        self.end()
                        return
                    self.later(max(min(self.t0 + due - now, stop_at - now, 1.0), 0.0005))
                    return
            self.send(now)
        except Exception as exc:
            self.run.fail(exc)

    def _record(self, response: Response, done: float) -> None:
        us = int((done - self.sent_at) * 1_000_000)
        self.run.rec.response(self.op, response.status, response.body_bytes, us, None, done)

    def _after(self, now: float, error: str | None) -> None:
        pause = _REFUSED_PAUSE_S if error == "refused" else 0.0
        if not self.no_think:
            pause += self.think.draw(self.run.rng)
        if pause > 0:
            self.pause(pause, now)
        else:
            self.soon()

    def pause(self, pause_s: float, now: float) -> None:
        """Think for `pause_s` seconds from `now`; a pause that reaches the stop time ends the
        user then (a timer can fire a little early: it must not send once more)."""
        left = self.run.ctl.stop_at - now
        if pause_s < left:
            self.later(pause_s)
        else:
            self.later(max(left, 0.0), self.end)


class OpenLane(Lane):
    """One of the open model's connections: takes the schedule's next slot, waits for its
    time, sends; latency is measured from the slot's intended time (corrected) and from
    the actual send (uncorrected)."""

    __slots__ = ("due", "intended", "rearmed", "result", "slots", "t0")

    def __init__(
        self,
        run: LaneRun,
        client: HttpClient,
        picker: Picker,
        *,
        single: bool,
        timeout_s: float,
        slots: Iterator[float],
        t0: float,
        result: LoadResult,
    ) -> None:
        super().__init__(run, client, picker, single, timeout_s)
        self.slots = slots
        self.t0 = t0
        self.result = result
        self.intended = 0.0
        self.rearmed = False
        self.due: Callable[[], None] = self._due

    def _wake(self) -> None:
        try:
            self.timer = None
            if self.ended:
                return
            ctl = self.run.ctl
            while True:
                offset = next(self.slots, None)
                if offset is None:
                    self.end()
                    return
                intended = self.t0 + offset
                if intended >= ctl.stop_at:
                    self.end()
                    return
                now = time.monotonic()
                if now >= ctl.stop_at:
                    if ctl.aborted is None:
                        self.result.dropped += 1
                    self.end()
                    return
                delay = intended - now
                if delay > EARLY_S:
                    self.intended = intended
                    self.rearmed = False
                    self.later(delay - EARLY_S, self.due)
                    return
                if now - intended > self.timeout_s:
                    self.result.dropped += 1  # no connection was free within the timeout
                    continue
                self._go(intended, now)
                return
        except Exception as exc:
            self.run.fail(exc)

    def _due(self) -> None:
        """The timer of a slot that was in the future went off."""
        try:
            self.timer = None
            if self.ended:
                return
            intended = self.intended
            now = time.monotonic()
            if intended - now > EARLY_S and not self.rearmed:
                self.rearmed = True  # the event loop's timers are coarse: once more, exactly
                self.later(intended - now, self.due)
                return
            if intended >= self.run.ctl.stop_at:
                self.end()  # the run was stopped early while this slot waited
                return
            self._go(intended, now)
        except Exception as exc:
            self.run.fail(exc)

    def _go(self, intended: float, now: float) -> None:
        if now - intended > LATE_START_S:
            self.result.late_starts += 1
        self.intended = intended
        self.send(now)

    def halt(self, now: float) -> None:
        """The run is over: a slot still waiting for its timer was not sent — dropped (unless
        the run was stopped early: then it is no longer part of the schedule)."""
        ctl = self.run.ctl
        if (
            self.timer is not None
            and not self.in_flight
            and ctl.aborted is None
            and self.intended < ctl.stop_at
        ):
            self.result.dropped += 1
        super().halt(now)

    def _record(self, response: Response, done: float) -> None:
        sent = self.sent_at
        self.run.rec.response(
            self.op,
            response.status,
            response.body_bytes,
            int((done - min(self.intended, sent)) * 1_000_000),
            int((done - sent) * 1_000_000),
            done,
        )

    def _after(self, now: float, error: str | None) -> None:
        self.soon()
