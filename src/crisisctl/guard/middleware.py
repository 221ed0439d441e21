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
import time
from collections.abc import Callable
from typing import Any, Final

from crisisctl.guard import control, policies, refusals, runtime, websocket
from crisisctl.guard.breaker import HALF_OPEN, CircuitBreaker
from crisisctl.guard.clientkey import UNKNOWN as UNKNOWN_CLIENT
from crisisctl.guard.clientkey import client_key_function, peer_address
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import GuardConfig
from crisisctl.guard.lifespan import lifespan_receive
from crisisctl.guard.metrics import RouteStats, build_registry
from crisisctl.guard.modes import ModeState
from crisisctl.guard.outcomes import CLIENT_CLOSED_REQUEST, is_client_disconnect
from crisisctl.guard.ratelimit import GCRA_ONE, Decision, RateLimitPolicy, open_storage
from crisisctl.guard.routebuild import RouteBuilder
from crisisctl.guard.runtime import Deadline, RouteRuntime, serving_task
from crisisctl.guard.runtime import ResponseSend as _Send  # (the request path's short name)
from crisisctl.guard.state import GuardState
from crisisctl.guard.switching import ModeSwitch
from crisisctl.guard.ticker import DEADLINES_COMPACT_AT, Chores, Ticker, Timeouts, tick_interval_s
from crisisctl.guard.track import operation_metrics
from crisisctl.guard.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("crisisctl.guard")
# Final: compiled code keeps these in C statics instead of looking them up in the module dict
_clock: Final = time.monotonic


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
        conc = config.concurrency
        ceiling = conc.scope == "route"
        self.concurrency: ConcurrencyLimiter | None = (
            ConcurrencyLimiter(conc, _clock, ceiling=ceiling) if conc.mode != "off" else None
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
    # The request path is split for the compiler: an `async def` keeps every local in its
    # generator object (a memory load, a store and a reference count each time), so the steps
    # that never wait are plain methods (`_admit`, `_seat`, `_begin`, `_finish`) and the
    # coroutine below only calls them and waits for the app.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        sender = self._admit(scope, send)
        if sender is None:  # a control path, or an app whose route could not be resolved
            await self._unguarded(scope, receive, send)
            return
        if sender.stage and not await self._admit_waiting(sender, scope, send):
            return  # refused, or answered by a request policy
        failed = False
        disconnected = False
        try:
            work = sender.app(scope, receive, sender)
            deadline = sender.deadline
            if deadline is not None:
                deadline.work = work
            await work
            held = sender.held
            if held is not None:  # a start without a body: sent as the app left it
                sender.held = None
                await send(held)
        except asyncio.CancelledError:
            task = sender.task
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
                     "reason": "timeout", "timeout_s": sender.route.timeout_s},
                )  # fmt: skip
        except BaseException as exc:
            if is_client_disconnect(exc, send):
                disconnected = True
                sender.status = CLIENT_CLOSED_REQUEST
            else:
                failed = True
                if sender.status == 0 or sender.held is not None:
                    sender.held = None  # (a start still held is never sent: the server's 500)
                    sender.status = 500
            raise
        finally:
            self._finish(sender, failed, disconnected)

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind: str = scope["type"]
        if kind == "lifespan":
            await self.app(scope, lifespan_receive(self, receive, scope), send)
        elif kind == "websocket":
            await websocket.handle(self, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _unguarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if control.is_control_path(path, self._prefix):
            await control.handle(self, scope, receive, send)
        else:
            await self.app(scope, receive, send)  # (route resolution failed: logged)

    def _admit(self, scope: Scope, send: Send) -> _Send | None:
        """Steps 1-5 as far as they go without waiting. The request's `send` comes back with
        `stage` 0 when it is admitted (slot taken, deadline set), else with the step that
        waits or answers (`_admit_waiting`'s): nothing is consumed by a refused request.
        None: not a guarded request (a control path, or its route could not be resolved)."""
        path: str = scope["path"]
        # (a cheap first test: most paths differ at their first character)
        if path[1:2] == self._prefix_c1 and control.is_control_path(path, self._prefix):
            return None
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
                return None
        start = _clock()
        sender = _Send(send, route, self.app, start)
        if route.priority <= self._shed_priority:
            sender.stage = runtime.SHED
            return sender
        breaker = route.breaker
        if breaker is not None and breaker.state and not breaker.allow(start):
            sender.stage = runtime.BROKEN
            return sender
        mem = route.mem_limiter
        gcra = mem.policy.gcra if mem is not None else 0
        if mem is not None and gcra:
            # memory storage, GCRA limits: no Decision is built for an admitted request
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
                try:
                    if gcra == GCRA_ONE:
                        lines = mem.admit_one(key, start)
                    else:
                        lines = mem.admit_stacked(key, start)
                except Exception:
                    self._internal_error("rate limiting")
                else:
                    if lines is None:
                        sender.decision = mem.hit(key, start)  # (refused: nothing consumed)
                        sender.stage = runtime.RATE
                        return sender
                    if self._rate_headers:
                        sender.extra_headers = lines
        elif route.limiter is not None:
            sender.stage = runtime.LIMIT  # another storage (Redis), or another algorithm
            return sender
        if route.policy is not None:
            sender.stage = runtime.POLICY
            return sender
        self._seat(sender)
        return sender

    def _seat(self, sender: _Send) -> bool:
        """Step 5 without waiting: a free concurrency slot, then the deadline. False: the
        request must wait for a slot (`stage` QUEUE)."""
        conc = sender.route.conc
        if conc is not None:
            if not conc.try_acquire():  # (acquire queues, or sheds)
                sender.stage = runtime.QUEUE
                return False
            sender.conc = conc
        sender.stage = runtime.ADMITTED
        self._begin(sender)
        return True

    def _begin(self, sender: _Send) -> None:
        """The admitted request's deadline (step 6) and its in-flight count."""
        route = sender.route
        timeout_s = route.timeout_s
        if timeout_s is not None:
            task = serving_task()
            if task is not None:
                sender.task = task
                start = sender.admitted
                deadline = sender.deadline = Deadline(task, start + timeout_s, sender)
                deadlines = self._deadlines
                deadlines.append(deadline)
                if len(deadlines) >= self._deadlines_compact_at:
                    self._timeouts.expire(start)
        route.stats.in_flight += 1

    async def _admit_waiting(self, sender: _Send, scope: Scope, send: Send) -> bool:
        """The admission steps `_admit` stopped at: a refusal to send, or a step that waits
        (another storage's limiter, a request policy, a queued slot). True: admitted."""
        route = sender.route
        breaker = route.breaker
        stage = sender.stage
        if stage == runtime.SHED:
            await self._refuse(route, send, 503, self._shed_reason, 5.0, scope)
            return False
        if stage == runtime.BROKEN and breaker is not None:
            retry_s = breaker.retry_after(sender.admitted)
            await self._refuse(route, send, 503, "circuit_open", retry_s, scope)
            return False
        if stage == runtime.RATE:
            self._release_probe(breaker)
            await self._refuse_rate(route, send, route.limiter.policy, sender.decision)
            return False
        if stage == runtime.LIMIT:
            limiter = route.limiter
            try:
                if limiter.is_async:
                    decision = await limiter.hit(self._key(scope), sender.admitted)
                else:
                    decision = limiter.hit(self._key(scope), sender.admitted)
            except Exception:
                self._internal_error("rate limiting")
            else:
                if not decision[0]:
                    self._release_probe(breaker)
                    await self._refuse_rate(route, send, limiter.policy, decision)
                    return False
                if self._rate_headers:
                    sender.extra_headers = limiter.policy.headers(decision)
            stage = runtime.POLICY
        if stage == runtime.POLICY:
            if route.policy is not None:
                app = await route.policy.enter(scope, send)
                if app is None:
                    self._release_probe(breaker)  # answered by the cache, or over a quota
                    return False
                sender.app = app
            if self._seat(sender):
                return True
        conc = route.conc
        assert conc is not None  # (stage QUEUE)
        reason = await conc.acquire(route.priority)
        if reason is not None:
            self._release_probe(breaker)
            await self._refuse(route, send, 503, reason, 1.0, scope, sender.app)
            return False
        sender.conc = conc
        sender.admitted = _clock()
        sender.stage = runtime.ADMITTED
        self._begin(sender)
        return True

    def _finish(self, sender: _Send, failed: bool, disconnected: bool) -> None:
        """The end of an admitted request: its slot (if no response started), its deadline,
        the route's figures and its breaker."""
        end = _clock()
        route = sender.route
        stats = route.stats
        stats.in_flight -= 1
        status = sender.status
        conc = sender.conc
        if conc is not None:
            # no response started (a failure, a timeout): the slot back, no latency sample
            sender.conc = None
            conc.release(end, -1.0)
        task = sender.task
        if task is not None:
            sender.task = None  # (task -> its coroutine -> this sender: no cycle left)
            deadline = sender.deadline
            if deadline is not None:
                deadline.task = None
                if deadline.expired:
                    self._timeouts.ended(deadline, stats)
                # no reference cycles (sender <-> deadline, the app's frames): the
                # garbage collector would pay for them on every request
                deadline.sender = None
                deadline.work = None
                deadlines = self._deadlines
                if len(deadlines) > 2 and deadlines[-1] is deadline:
                    deadlines.pop()  # freed now, not at compaction (2 left: no realloc)
            if self._timed_out:
                # the app swallowed the cancellation of its timeout: forget it, or the task
                # leaks and a later, genuine cancellation in it would be taken for a timeout
                self._timed_out.discard(task)
        elapsed = end - sender.admitted
        route.counts[status // 100 if status < 600 else 0] += 1
        stats.latency.record_us(int(elapsed * 1000000.0))  # (≥ 0: the clock is monotonic)
        breaker = route.breaker
        if breaker is not None:
            if disconnected:  # the client left (or the server cancelled us): no verdict
                self._release_probe(breaker)
            else:
                # slow is judged on service latency (to response start) when there was one
                slow_s = route.slow_s
                service_s = sender.service_s
                slow = slow_s is not None and (service_s if service_s >= 0.0 else elapsed) >= slow_s
                breaker.record(end, failed or status >= 500, slow)

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
