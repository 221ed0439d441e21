"""The guard: a pure-ASGI middleware that composes the policies in the request path.

Order for each HTTP request (control paths under the prefix are answered first):
  1. shedding low-priority routes (emergency, memory)    -> 503 + Retry-After
  2. circuit breaker of the route                        -> 503 + Retry-After (instant)
  3. rate limit per key (memory or Redis)                -> 429 + Retry-After + RateLimit headers
  4. request policies of the route (guard/policies.py)   -> a cache hit, or 429 over a quota
  5. concurrency limit; over it a short queue            -> 503 + Retry-After when shed
  6. the app, under the route's timeout                  -> 504 and the work cancelled
Critical paths (health checks, `critical_paths`) are recognised on the raw path and skip 1-5.
WebSocket handshakes (guard/websocket.py) pass 1-3 and 5; their slot is held until answered.

At response start the service latency (admission to response start) feeds the adaptive limit
and the concurrency slot is released: a stream (SSE, a long download, a slow reader) neither
reads as congestion nor holds a slot for its lifetime. At the end of the response, its status
and duration feed the metrics and the breaker (slow calls judged on the service latency); a
client that disconnected feeds no breaker. A sync handler past its timeout cannot be cancelled
(its worker thread runs on): it gets its 504 at once but keeps its slot until the thread ends.

The hot path touches only dicts, ints and floats; slow work (route discovery, policies, Prometheus
rendering, key expiry) happens once, at scrape time, or in the ticker. A failure of the guard's
own code lets the request through untouched: the guard must never break the app it protects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from crisisctl.guard import control, policies, refusals, websocket
from crisisctl.guard.breaker import CLOSED, HALF_OPEN, CircuitBreaker
from crisisctl.guard.clientkey import UNKNOWN as UNKNOWN_CLIENT
from crisisctl.guard.clientkey import client_key_function, peer_address
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import GuardConfig
from crisisctl.guard.lifespan import lifespan_receive
from crisisctl.guard.metrics import RouteStats, build_registry
from crisisctl.guard.modes import ModeState
from crisisctl.guard.outcomes import CLIENT_CLOSED_REQUEST, is_client_disconnect
from crisisctl.guard.ratelimit import Decision, RateLimitPolicy, open_storage
from crisisctl.guard.routebuild import RouteBuilder
from crisisctl.guard.runtime import Deadline, RouteRuntime
from crisisctl.guard.runtime import ResponseSend as _Send  # (the request path's short name)
from crisisctl.guard.state import GuardState
from crisisctl.guard.switching import ModeSwitch
from crisisctl.guard.ticker import DEADLINES_COMPACT_AT, Chores, Ticker, Timeouts, tick_interval_s
from crisisctl.guard.track import operation_metrics
from crisisctl.guard.types import ASGIApp, Receive, Scope, Send
from crisisctl.stats import MAX_TRACKABLE_US

log = logging.getLogger("crisisctl.guard")
# Final: compiled code keeps these in C statics instead of looking them up in the module dict
_clock: Final = time.monotonic

_running_loop: Final = asyncio.get_running_loop
_current_task: Final = asyncio.current_task
#: 3.11's asyncio.current_task is a Python wrapper: read the C-maintained map directly there
#: (a bool tested at run time: a sys.version_info test in the request path costs a lookup)
_READ_TASK_MAP: Final = sys.version_info < (3, 12)
_current_tasks: Final[dict[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = (
    asyncio.tasks._current_tasks if _READ_TASK_MAP else {}  # type: ignore[attr-defined]
)
_EPS: Final = 1e-9
_MAX_US: Final = MAX_TRACKABLE_US


class Guard:
    """Overload protection for any ASGI app: ``app = Guard(app, GuardConfig(...))``.

    Also ``app.add_middleware(Guard, rate_limit="10/second")``: keyword arguments are
    GuardConfig fields. With no configuration at all the guard measures every route, limits
    concurrency adaptively and breaks circuits of failing routes.
    """

    def __init__(self, app: ASGIApp, config: GuardConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = GuardConfig.from_dict(overrides) if overrides else GuardConfig()
        elif overrides:
            # through from_dict, so overrides given as plain data (breaker={...}) are converted
            merged = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            merged.update(overrides)
            config = GuardConfig.from_dict(merged)
        self.app = app
        self.config = config
        token = os.environ.get("CRISISCTL_GUARD_TOKEN") if config.token is None else config.token
        self.token: bytes | None = token.encode() if token else None
        self._prefix, self._prefix_c1 = config.prefix, config.prefix[1:2]
        self._clock = _clock
        self.started_wall = time.time()
        self.modes = ModeState(config.emergency)
        self._shed_priority, self._shed_reason = -1, "emergency"  # or "memory": switching.py
        self.concurrency: ConcurrencyLimiter | None = (
            ConcurrencyLimiter(
                config.concurrency, self._clock, ceiling=config.concurrency.scope == "route"
            )
            if config.concurrency.mode != "off"
            else None
        )
        self._key = config.key_func or client_key_function(
            config.trusted_proxies, config.proxy_header
        )
        #: where rate-limit state (and, with Redis, the fleet's mode) lives: one factory
        self._storage = open_storage(
            config.storage, timeout_s=config.storage_timeout_s, prefix=config.storage_prefix
        )
        self.storage_health: Any = self._storage.health
        self._routes = RouteBuilder(
            config, app, RouteRuntime, self._apply_mode, self._storage, self.concurrency
        )
        self.policy_set, self._key = policies.attach(self._routes, app, self.modes, self._key)
        self.operations: Any = getattr(self.policy_set, "operations", None)  # guard/operations.py
        self._key_is_peer = self._key is peer_address
        # the builder's own dicts, shared: modes, housekeeping and the control surface read them
        self.route_stats: dict[str, RouteStats] = self._routes.route_stats
        self.breakers: dict[str, CircuitBreaker] = self._routes.breakers
        self.policies: dict[int, RateLimitPolicy] = self._routes.policies
        #: mode switching and the mode's factors on every policy (guard/switching.py)
        self._switch = ModeSwitch(self.modes, self._routes, self._set_shed_priority)
        #: the fleet's mode sync (guard/fleet.py) with Redis storage; None: per-process mode
        self.fleet: Any = self._storage.fleet(self.modes, self._apply_mode)
        self._switch.fleet = self.fleet
        self._route_cache: dict[str, dict[str, RouteRuntime]] = {}
        self._rate_headers = config.rate_limit_headers
        self._refusal_bodies: dict[tuple[str, str], bytes] = {}
        #: deadlines of requests under a timeout, in arrival order; finished ones (task None)
        #: are dropped by the ticker, or on the request path once the list grows long
        self._timeouts = Timeouts(self._set_compact_at)
        # the request path's views of the timeouts: the same list and set objects
        self._deadlines: list[Deadline] = self._timeouts.deadlines
        self._deadlines_compact_at = DEADLINES_COMPACT_AT
        self._timed_out: set[asyncio.Task[Any]] = self._timeouts.timed_out
        self._ticking = False
        self._chores = Chores(self._timeouts, self._routes, self._switch)
        self._ticker = Ticker(
            self._chores.tick,
            tick_interval_s(config),
            _clock,
            self._set_ticking,
            self._internal_error,
        )
        #: the process's figures, memory budget (`.on_pressure(fn)`), loop health: ticker.py
        self.process, self.memory = self._ticker.process, self._chores.memory
        self.event_loop = self._chores.event_loop
        self.internal_errors = 0
        #: the public, read-only view the control surface and the metrics read
        self.state = GuardState(self)
        self.registry = build_registry(self.state, operation_metrics)
        self.control_surface = control.ControlSurface(self)

    # -- public control --------------------------------------------------------------------
    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock (seconds) the guard's policies run on."""
        return self._clock

    @property
    def mode(self) -> str:
        """Current mode: normal, emergency or recovering."""
        return self.modes.mode

    def set_mode(
        self, mode: str, *, actor: str = "python", reason: str = "", source: str = "python"
    ) -> None:
        """Switch mode at run time; with Redis storage the fleet follows in the background."""
        self._switch.set_mode(mode, actor=actor, reason=reason, source=source)

    async def switch_mode(
        self, mode: str, *, actor: str = "python", reason: str = "", source: str = "python"
    ) -> dict[str, object]:
        """Switch mode here at once; with Redis storage also store it for the fleet and wait
        (about a second at most) for the instances to confirm. Returns what happened."""
        return await self._switch.switch_mode(mode, actor=actor, reason=reason, source=source)

    def _apply_mode(self) -> None:
        self._switch.apply()

    def _set_shed_priority(self, priority: int, reason: str) -> None:
        self._shed_priority, self._shed_reason = priority, reason

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind: str = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, lifespan_receive(self, receive, scope), send)
            elif kind == "websocket":
                await websocket.handle(self, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if (
            path[1:2] == self._prefix_c1  # cheap first test: most paths differ here
            and path.startswith(self._prefix)
            and control.is_control_path(path, self._prefix)
        ):
            await control.handle(self, scope, receive, send)
            return
        if not self._ticking:
            self._start_ticker()
        method: str = scope["method"]
        by_path = self._route_cache.get(method)
        route = by_path.get(path) if by_path is not None else None
        if route is None:
            try:
                route = self._route_for(method, path, True)
            except Exception:
                self._internal_error("route resolution")
                await self.app(scope, receive, send)
                return

        start = _clock()
        if route.priority <= self._shed_priority:
            await self._refuse(route, send, 503, self._shed_reason, 5.0, scope)
            return
        breaker = route.breaker
        if breaker is not None and breaker.state and not breaker.allow(start):
            await self._refuse(route, send, 503, "circuit_open", breaker.retry_after(start), scope)
            return
        extra_headers: list[tuple[bytes, bytes]] | None = None
        mem = route.mem_limiter
        if mem is not None and mem.policy.fast:
            # memory storage, one GCRA limit: MemoryRateLimiter.hit_one and
            # RateLimitPolicy.headers_for_ahead inlined (keep in step with ratelimit.py)
            key: str | None = None
            if self._key_is_peer:
                try:
                    key = scope["client"][0]
                except (KeyError, TypeError, IndexError):
                    key = UNKNOWN_CLIENT
            else:
                try:
                    key = self._key(scope)
                except Exception:
                    self._internal_error("rate-limit key")
            if key is not None:
                policy = mem.policy
                interval, most_ahead, top = policy.fast_consts
                state = mem._current.get(key)
                if state is None:
                    ahead = mem.hit_one(key, start)
                else:
                    tat = state[0]
                    if tat < start:
                        tat = start
                    tat += interval
                    ahead = tat - start
                    if ahead > most_ahead:
                        ahead = -1.0
                    else:
                        state[0] = tat
                if ahead < 0.0:
                    decision = mem.hit(key, start)
                    self._release_probe(breaker)
                    await self._refuse_rate(route, send, policy, decision)
                    return
                if self._rate_headers:
                    # the header cache key of RateLimitPolicy.headers_for_ahead: remaining
                    # (0 ≤ (top - ahead) / interval, so int() floors) and ceil(ahead - ε)
                    reset_f = ahead - _EPS
                    reset = int(reset_f)
                    if reset < reset_f:
                        reset += 1
                    header_key = (int((top - ahead) / interval) << 24) + reset
                    if header_key == policy.last_header_key:
                        extra_headers = policy.last_header_lines
                    else:
                        extra_headers = policy.headers_for_ahead(ahead)
                    if state is None:  # a new (or returning) client: announce the policy
                        extra_headers = policy.announced(extra_headers)
        elif mem is not None and mem.policy.stacked:
            # memory storage, stacked GCRA limits: `hit` without a Decision when admitted
            try:
                key = self._key(scope)
                lines = mem.admit_stacked(key, start)
            except Exception:
                self._internal_error("rate limiting")
            else:
                if lines is None:
                    decision = mem.hit(key, start)  # refused (nothing was consumed): the figures
                    self._release_probe(breaker)
                    await self._refuse_rate(route, send, mem.policy, decision)
                    return
                if self._rate_headers:
                    extra_headers = lines
        elif (limiter := route.limiter) is None:
            pass
        else:
            try:
                if limiter.is_async:
                    decision = await limiter.hit(self._key(scope), start)
                else:
                    decision = limiter.hit(self._key(scope), start)
            except Exception:
                self._internal_error("rate limiting")
            else:
                if not decision[0]:
                    self._release_probe(breaker)
                    await self._refuse_rate(route, send, limiter.policy, decision)
                    return
                if self._rate_headers:
                    extra_headers = limiter.policy.headers(decision)
        app = self.app
        if route.policy is not None and (app := await route.policy.enter(scope, send)) is None:
            self._release_probe(breaker)  # answered by the cache, or over a quota
            return
        conc = route.conc
        if conc is not None:
            # inlined ConcurrencyLimiter.try_acquire, the guard-wide ceiling above a route's
            # limiter included (tests/unit/test_guard_inlined.py pins the two)
            ceiling = conc.parent
            if (
                conc.in_flight < conc.effective
                and not conc.queued
                and (ceiling is None or ceiling.in_flight < ceiling.effective)
            ):
                if ceiling is not None:
                    ceiling.in_flight += 1
                    if ceiling.in_flight > ceiling.window_peak:
                        ceiling.window_peak = ceiling.in_flight
                conc.in_flight += 1
                if conc.in_flight > conc.window_peak:
                    conc.window_peak = conc.in_flight
            else:  # (try_acquire would refuse too: acquire queues, or sheds)
                reason = await conc.acquire(route.priority)
                if reason is not None:
                    self._release_probe(breaker)
                    await self._refuse(route, send, 503, reason, 1.0, scope, app)
                    return
                start = _clock()

        sender = _Send(send, extra_headers, conc, start)
        task: asyncio.Task[Any] | None = None
        deadline: Deadline | None = None
        timeout_s = route.timeout_s
        if timeout_s is not None:
            if _READ_TASK_MAP:
                task = _current_tasks.get(_running_loop())
            else:
                task = _current_task(_running_loop())
            if task is not None:
                deadline = sender.deadline = Deadline(task, start + timeout_s, sender)
                deadlines = self._deadlines
                deadlines.append(deadline)
                if len(deadlines) >= self._deadlines_compact_at:
                    self._timeouts.expire(start)

        stats = route.stats
        stats.in_flight += 1
        failed = False
        disconnected = False
        try:
            work = app(scope, receive, sender)
            if deadline is not None:
                deadline.work = work
            await work
        except asyncio.CancelledError:
            if task is None or task not in self._timed_out:
                disconnected = True  # the server cancelled us: not the route's failure
                raise
            failed = True
            self._timed_out.discard(task)
            task.uncancel()
            if sender.status == 0:
                sender.status = 504
                await control.send_json(
                    send,
                    504,
                    {"error": "the request took longer than its timeout and was cancelled",
                     "reason": "timeout", "timeout_s": timeout_s},
                )  # fmt: skip
        except BaseException as exc:
            if is_client_disconnect(exc, send):
                disconnected = True
                sender.status = CLIENT_CLOSED_REQUEST
            else:
                failed = True
                if sender.status == 0:
                    sender.status = 500
            raise
        finally:
            end = _clock()
            stats.in_flight -= 1
            status = sender.status
            conc = sender.conc
            if conc is not None:
                # no response started (a failure, a timeout): the slot back, no latency sample
                sender.conc = None
                conc.release(end, -1.0)
            if task is not None:
                if deadline is not None:
                    deadline.task = None
                    if deadline.expired:
                        self._timeouts.ended(deadline, stats)
                    # no reference cycles (sender <-> deadline, the app's frames): the
                    # garbage collector would pay for them on every request
                    deadline.sender = None
                    deadline.work = None
                    # (`deadlines`: bound with `deadline` above; the guard's one list)
                    if len(deadlines) > 2 and deadlines[-1] is deadline:
                        deadlines.pop()  # freed now, not at compaction (2 left: no realloc)
                if self._timed_out:
                    # the app swallowed the cancellation of its timeout: forget it, or the task
                    # leaks and a later, genuine cancellation in it would be taken for a timeout
                    self._timed_out.discard(task)
            elapsed = end - start
            route.counts[status // 100 if status < 600 else 0] += 1
            # inlined LatencyHistogram.record_us (the hot path; keep in step with stats.py)
            hist = stats.latency
            us = int(elapsed * 1000000.0)  # ≥ 0: the clock is monotonic
            if us < 2048:
                index = us
            else:
                if us > _MAX_US:
                    us = _MAX_US
                    hist.overflow += 1
                shift = us.bit_length() - 11
                index = (shift << 10) + (us >> shift)
            bucket_counts: dict[Any, int] = hist._counts
            boxed: object = index  # one int object for both dict operations
            n = bucket_counts.get(boxed)
            # (no try/except KeyError: a raised exception costs more than the whole update)
            bucket_counts[boxed] = 1 if n is None else n + 1
            if us > hist.max_us:
                hist.max_us = us
            if us < hist._min_us:
                hist._min_us = us
            hist.count += 1
            hist.sum_us += us
            if breaker is not None:
                slow_s = route.slow_s
                # slow is judged on service latency (to response start) when there was one
                service_s = sender.service_s
                slow = slow_s is not None and (service_s if service_s >= 0.0 else elapsed) >= slow_s
                if disconnected:  # the client left (or the server cancelled us): no verdict
                    self._release_probe(breaker)
                elif failed or status >= 500 or slow:
                    if breaker.state == CLOSED:
                        breaker.calls += 1
                    breaker.failure(end, failed or status >= 500, slow)
                elif breaker.state:
                    breaker.success(end)
                else:
                    breaker.calls += 1

    # -- refusals (guard/refusals.py) ------------------------------------------------------
    async def _refuse(self, route: RouteRuntime, send: Send, status: int, reason: str,
                      retry_s: float, scope: Any = None, app: Any = None) -> None:  # fmt: skip
        if route.policy is None or not await route.policy.refused(scope, send, app):
            await refusals.refuse(route, send, status, reason, retry_s, self._refusal_bodies)

    async def _refuse_rate(self, route: RouteRuntime, send: Send, policy: RateLimitPolicy,
                           decision: Decision) -> None:  # fmt: skip
        await refusals.refuse_rate(route, send, policy, decision, self.config.rate_limit_headers)

    @staticmethod
    def _release_probe(breaker: CircuitBreaker | None) -> None:
        if breaker is not None and breaker.state == HALF_OPEN and breaker.probes_in_flight:
            breaker.probes_in_flight -= 1

    # -- building routes (guard/routebuild.py) ---------------------------------------------
    def _route_for(self, method: str, path: str, probed: bool = False) -> RouteRuntime:
        route = self._routes.route_for(method, path, probed=probed)
        self._route_cache = self._routes.cache
        return route

    def _internal_error(self, where: str) -> None:
        self.internal_errors += 1
        if self.internal_errors <= 5 or self.internal_errors % 1000 == 0:
            log.exception("crisisctl guard error in %s; the request passes unguarded", where)

    # -- background work (guard/ticker.py) ------------------------------------------------
    @property
    def running_after_timeout(self) -> int:
        """Handlers past their timeout whose work has not ended yet (their slots stay held)."""
        return self._timeouts.running_after_timeout

    def _start_ticker(self) -> None:
        self._ticker.start()
        if self.fleet is not None:
            self.fleet.start()

    def _set_ticking(self, running: bool) -> None:
        self._ticking = running

    def _set_compact_at(self, length: int) -> None:
        self._deadlines_compact_at = length

    async def aclose(self) -> None:
        """Stop the ticker and a cleanup round in progress, close the Redis connections."""
        await self._ticker.aclose()
        for closing in (self.memory, self.policy_set, self.fleet, self._storage):
            if closing is not None:
                await closing.aclose()
