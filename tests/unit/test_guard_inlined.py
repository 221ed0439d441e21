"""The guard's request path agrees with the readable originals of what it does.

The request path once hand-inlined its steps into `Guard.__call__`; its plain methods
(`Guard._admit`, `_seat`, `_finish`) now call them, and no copy remains
(`MemoryRateLimiter.admit_one` and `hit_one` share one GCRA step, `ratelimit._gcra_step`;
`admit_one` adds `RateLimitPolicy.headers_for_ahead` and its header cache). Each test here
drives a real `Guard` through its ASGI interface and the readable original side by side
(`hit` with `headers`, `LatencyHistogram.record_us`, `ConcurrencyLimiter.try_acquire` /
`release`, `CircuitBreaker.record`), with the same random keys, arrival instants, service
times and outcomes, and compares every output: decisions, RateLimit headers, histogram
contents, the concurrency limiter's counters and the breaker's state. They run on the compiled
and on the pure-Python build (``make test`` runs both).

Time: the guard reads tests/conftest.py's `GUARD_CLOCK`, which each test holds still and moves
by hand, so both sides see the same instants. The guard's background ticker runs on real
time; each scenario stays below the spans over which a tick could change what is compared (1 s
for the adaptive window, the breaker's window), and the rate limiter's key rotation, the one
tick that may land, must not change a decision anyway.

Deliberate differences, modelled here rather than hidden: the guard turns a service time into
µs with ``int()`` (the monotonic clock never goes back), and its `release` at response start
closes an adaptive window by sample count only (the ticker closes idle windows; scenarios stay under
`WINDOW_MAX_S`, below which `release`'s time test cannot fire).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from crisisctl.guard import BreakerConfig, Guard, GuardConfig
from crisisctl.guard.breaker import CircuitBreaker
from crisisctl.guard.concurrency import WINDOW_MAX_S, ConcurrencyLimiter
from crisisctl.guard.config import ConcurrencyConfig, EmergencyConfig, Priority, parse_limits
from crisisctl.guard.ratelimit import MemoryRateLimiter, RateLimitPolicy
from crisisctl.guard.types import Message, Receive, Scope, Send
from crisisctl.stats import MAX_TRACKABLE_US, LatencyHistogram

if TYPE_CHECKING:
    from conftest import GuardClock  # tests/conftest.py: the `guard_clock` fixture's type

PATH = "/api/items"
#: where every scenario's clock starts (a monotonic clock is far from 0)
T0 = 50_000.0
OFF = ConcurrencyConfig(mode="off")
NO_BREAKER = BreakerConfig(enabled=False)
SETTINGS = settings(max_examples=120, deadline=None)


@dataclass
class Outcome:
    """What the app does with one request: its service time, then a status or an exception."""

    latency_s: float = 0.0
    status: int = 200
    raises: bool = False


class Response:
    """The messages the guard sent for one request."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"]) if self.messages else 0

    def headers(self, *names: bytes) -> list[tuple[bytes, bytes]]:
        if not self.messages:
            return []
        return [(k, v) for k, v in self.messages[0]["headers"] if k in names]

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


class ScriptedApp:
    """An ASGI app whose service time and answer the test decides.

    Sequential use: the next request takes `next` (the clock jumps by its service time).
    Concurrent use (`hold=True`): each request waits in `waiting[id]` until the test resolves
    it with an Outcome, after moving the clock itself.
    """

    def __init__(self, clock: GuardClock, hold: bool = False) -> None:
        self.clock = clock
        self.hold = hold
        self.next = Outcome()
        self.calls = 0
        self.waiting: dict[int, asyncio.Future[Outcome]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        if self.hold:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self.waiting[scope["test.id"]] = future
            outcome = await future
        else:
            outcome = self.next
            assert self.clock.now is not None
            self.clock.now += outcome.latency_s
        if outcome.raises:
            raise RuntimeError("the app failed")
        await send({"type": "http.response.start", "status": outcome.status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(key: str, request_id: int = 0) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-key", key.encode())],
        "client": (key, 50000),
        "server": ("127.0.0.1", 8000),
        "test.id": request_id,
    }


async def call(guard: Guard, key: str = "10.0.0.1", request_id: int = 0) -> Response:
    """One request through the guard's ASGI interface (an app exception is swallowed here)."""
    response = Response()
    with contextlib.suppress(RuntimeError):
        await guard(_scope(key, request_id), _receive, response.send)
    return response


def run(clock: GuardClock, scenario: Coroutine[Any, Any, None]) -> None:
    clock.now = T0
    try:
        asyncio.run(scenario)
    finally:
        clock.now = None


def header_key(scope: Scope) -> str:
    return dict(scope["headers"])[b"x-key"].decode()


# -- the GCRA step and its headers -------------------------------------------------------------
RATE_HEADERS = (b"ratelimit", b"ratelimit-policy", b"retry-after")
arrivals = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # which client
        # the gap before the request, as (emission intervals, seconds): 0 (a burst), exact
        # multiples of the interval (tat lands exactly on `now`), up to a whole period and
        # more, or a few seconds (where Reset, in whole seconds, moves by one)
        st.one_of(
            st.just((0.0, 0.0)),
            st.tuples(st.integers(min_value=1, max_value=3).map(float), st.just(0.0)),
            st.tuples(st.floats(min_value=0.0, max_value=1.5, allow_nan=False), st.just(0.0)),
            st.tuples(st.just(0.0), st.floats(min_value=0.0, max_value=2.5, allow_nan=False)),
        ),
        st.sampled_from(["", "", "", "", "", "", "emergency", "normal"]),  # mode switches
    ),
    min_size=5,
    max_size=60,
)


#: at 2 per 2 minutes: the third request leaves `Reset` 119 (ahead 118.5 s), the fourth needs
#: 120 (ahead 119.2 s) with the same `remaining`: the inlined cache key must tell them apart
RESET_STEP = [(0, (0.0, 0.0), ""), (1, (0.0, 0.7), ""), (0, (0.0, 0.8), ""), (1, (0.0, 0.0), "")]


#: at 4 per second, a burst leaves `Reset` at 1 s while `remaining` counts down: the inlined
#: cache key must tell them apart too
REMAINING_STEP = [(0, (0.0, 0.0), ""), (0, (0.0, 0.0), ""), (0, (0.0, 0.0), "")]


@SETTINGS
@example(amount=2, multiple=2, unit="minute", events=RESET_STEP, by_peer=True)
@example(amount=4, multiple=1, unit="second", events=REMAINING_STEP, by_peer=False)
@given(
    amount=st.integers(min_value=1, max_value=8),
    # short periods (an interval under a second) as often as long ones
    multiple=st.one_of(st.integers(min_value=1, max_value=5), st.integers(1, 90)),
    unit=st.sampled_from(["second", "minute"]),
    events=arrivals,
    by_peer=st.booleans(),
)
def test_inlined_gcra_step_and_headers_agree_with_the_limiter(
    guard_clock: GuardClock,
    amount: int,
    multiple: int,
    unit: str,
    events: list[tuple[int, tuple[float, float], str]],
    by_peer: bool,
) -> None:
    """The guard admits and refuses exactly as MemoryRateLimiter.hit does at the same
    instants, with the RateLimit headers RateLimitPolicy.headers gives for its decision,
    across clients and emergency switches (which rescale the policy and its header cache)."""
    spec = f"{amount} per {multiple} {unit}"
    check_guard_agrees_with_limiter(guard_clock, spec, events, by_peer)


# -- the histogram record ----------------------------------------------------------------------
latencies_us = st.one_of(
    st.integers(min_value=0, max_value=4096),
    # either side of each power of two, where the bucket layout changes
    st.integers(min_value=11, max_value=31).flatmap(
        lambda bits: st.integers(min_value=(1 << bits) - 3, max_value=(1 << bits) + 3)
    ),
    st.integers(min_value=0, max_value=MAX_TRACKABLE_US),
)


def _record(reference: LatencyHistogram, counts: list[int], elapsed: float, status: int) -> None:
    reference.record_us(int(elapsed * 1_000_000.0))  # the guard's µs: truncated (see top)
    counts[status // 100 if status < 600 else 0] += 1


def _histogram_scenario(
    clock: GuardClock, samples: list[tuple[int, int, bool]]
) -> Coroutine[Any, Any, None]:
    async def scenario() -> None:
        app = ScriptedApp(clock)
        guard = Guard(app, GuardConfig(token="", concurrency=OFF, breaker=NO_BREAKER))
        reference = LatencyHistogram()
        counts = [0] * 6
        try:
            for latency_us, status, raises in samples:
                assert clock.now is not None
                clock.now += 0.001
                start = clock.now
                app.next = Outcome(latency_us / 1_000_000.0, status, raises)
                await call(guard)
                assert clock.now is not None
                _record(reference, counts, clock.now - start, 500 if raises else status)
                (stats,) = guard.route_stats.values()
                assert stats.latency.to_dict() == reference.to_dict()
                assert stats.latency.min_us == reference.min_us
                assert stats.totals() == counts
        finally:
            await guard.aclose()

    return scenario()


@SETTINGS
@given(
    samples=st.lists(
        st.tuples(
            latencies_us,
            st.sampled_from([200, 204, 302, 404, 500, 503, 599, 600, 799]),
            st.sampled_from([False, False, False, True]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_inlined_histogram_record_agrees_with_record_us(
    guard_clock: GuardClock, samples: list[tuple[int, int, bool]]
) -> None:
    """Every admitted request lands in the route's histogram exactly as
    LatencyHistogram.record_us records its service time (bucket counts, count, sum, min, max),
    and in the status-class counts (an exception counts as a 500, 600 and above as unknown)."""
    run(guard_clock, _histogram_scenario(guard_clock, samples))


def test_inlined_histogram_counts_overflow_like_record_us(guard_clock: GuardClock) -> None:
    """A service time beyond the trackable range is clamped and counted as overflow."""
    samples = [(MAX_TRACKABLE_US + 1_000_000, 200, False), (1_000, 200, False)]
    run(guard_clock, _histogram_scenario(guard_clock, samples))


# -- slot acquire and release ------------------------------------------------------------------
@dataclass
class _Request:
    task: asyncio.Task[Response]
    reference: asyncio.Task[tuple[str | None, float]]
    admitted_at: float | None = None
    finished: bool = False


CONCURRENCY_FIELDS = (
    "in_flight",
    "peak_in_flight",
    "effective",
    "limit",
    "queued",
    "window_start",
    "window_sum",
    "window_n",
    "window_next",
    "window_peak",
    "last_rtt",
    "rtt_noload",
    "updates",
    "episode_start",
    "calm_since",
    "shed_queue_full",
    "shed_queue_timeout",
    "shed_overloaded",
)


async def _settle() -> None:
    """Let every task run until it waits again (a handed-over slot takes two loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


concurrency_events = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "arrive", "finish", "finish", "finish", "tick"]),
        st.floats(min_value=0.0, max_value=0.01, allow_nan=False),  # gap before it (s)
        st.integers(min_value=0, max_value=1000),  # which running request finishes
        st.sampled_from(["ok", "ok", "ok", "5xx", "raise"]),
    ),
    min_size=20,
    max_size=80,
)


#: ten quick requests fill a window too young to close in `release`; then a waiter queues and
#: the ticker's close raises the limit (1 -> 2): a slot is free while someone waits, and the
#: next arrival must queue behind the waiter, not take the slot
QUEUE_JUMP = [
    *[("arrive", 0.002, 0, "ok"), ("finish", 0.001, 0, "ok")] * 10,
    ("arrive", 0.001, 0, "ok"),
    ("arrive", 0.001, 0, "ok"),
    ("tick", 0.03, 0, "ok"),
    ("arrive", 0.001, 0, "ok"),
]


@SETTINGS
@example(mode="adaptive", limit=1, queue_size=3, smoothing=1.0, events=QUEUE_JUMP, scope="service")
@example(mode="adaptive", limit=1, queue_size=3, smoothing=1.0, events=QUEUE_JUMP, scope="route")
@given(
    mode=st.sampled_from(["adaptive", "static"]),
    limit=st.integers(min_value=1, max_value=6),
    queue_size=st.integers(min_value=0, max_value=3),
    smoothing=st.sampled_from([0.2, 1.0]),
    events=concurrency_events,
    scope=st.sampled_from(["service", "route"]),
)
def test_inlined_slot_acquire_and_release_agree_with_the_limiter(
    guard_clock: GuardClock,
    mode: str,
    limit: int,
    queue_size: int,
    smoothing: float,
    events: list[tuple[str, float, int, str]],
    scope: str,
) -> None:
    """With requests overlapping, the guard's inlined try_acquire and release leave its
    ConcurrencyLimiter exactly as a twin driven through acquire/release at the same instants:
    admissions, queueing, refusals, in-flight count, window sums and the adaptive limit. With
    the scope "route", the route's limiter and the guard-wide ceiling above it both."""
    config = ConcurrencyConfig(
        mode=mode,  # type: ignore[arg-type]
        limit=limit,
        min_limit=1,
        max_limit=16,
        queue_size=queue_size,
        # waiters never time out during a scenario (their timers run on the real clock)
        queue_timeout_s=600.0,
        queue_target_s=300.0,
        smoothing=smoothing,
        scope=scope,  # type: ignore[arg-type]
    )

    async def scenario() -> None:
        app = ScriptedApp(guard_clock, hold=True)
        guard = Guard(app, GuardConfig(token="", concurrency=config, breaker=NO_BREAKER))
        ceiling = guard.concurrency
        assert ceiling is not None
        twin_ceiling = ConcurrencyLimiter(config, guard_clock, ceiling=scope == "route")
        # (with the scope "route", the twin's route limiter is made at the first arrival, as
        # the guard's is: their windows start together)
        twin = twin_ceiling
        requests: list[_Request] = []

        def limiter() -> ConcurrencyLimiter:
            """The guard's limiter of the one route (built with the route, at its first
            request, under the ceiling with the scope "route")."""
            assert ceiling is not None
            if scope == "service":
                return ceiling
            (route_limiter,) = ceiling.children.values()
            return route_limiter

        queued = False

        async def admit() -> tuple[str | None, float]:
            reason = await twin.acquire(int(Priority.NORMAL))
            assert guard_clock.now is not None
            return reason, guard_clock.now

        def compare() -> None:
            nonlocal queued
            if not requests:
                return
            conc = limiter()
            for name in CONCURRENCY_FIELDS:
                assert getattr(conc, name) == getattr(twin, name), name
            assert ceiling is not None
            for name in ("in_flight", "window_peak", "shed_overloaded"):
                assert getattr(ceiling, name) == getattr(twin_ceiling, name), name
            for i, request in enumerate(requests):
                ref = request.reference
                if not ref.done():
                    assert i not in app.waiting and not request.task.done()  # both queued
                    queued = True
                    continue
                reason, at = ref.result()
                if request.finished:
                    assert request.task.done()
                elif reason is None:
                    assert i in app.waiting  # both admitted
                    if request.admitted_at is None:
                        request.admitted_at = at
                else:
                    assert request.task.done() and i not in app.waiting
                    response = request.task.result()
                    assert (response.status, response.json()["reason"]) == (503, reason)

        async def finish(request_id: int, kind: str) -> None:
            request = requests[request_id]
            assert guard_clock.now is not None and request.admitted_at is not None
            app.waiting.pop(request_id).set_result(
                Outcome(status=500 if kind == "5xx" else 200, raises=kind == "raise")
            )
            rtt = -1.0 if kind == "raise" else guard_clock.now - request.admitted_at
            twin.release(guard_clock.now, rtt)
            request.finished = True
            await _settle()
            assert request.task.done()

        try:
            for action, gap, pick, kind in events:
                assert guard_clock.now is not None
                guard_clock.now += gap
                if action == "arrive":
                    if scope == "route" and not requests:
                        twin = twin_ceiling.child("route")
                    i = len(requests)
                    task = asyncio.create_task(call(guard, request_id=i))
                    requests.append(_Request(task, asyncio.create_task(admit())))
                    await _settle()
                elif action == "tick":
                    # what the guard's ticker does with an idle window (here also early:
                    # maybe_close_window closes only windows long enough): a raised limit
                    # leaves free slots while waiters queue, until the next release
                    if config.mode == "adaptive" and (requests or scope == "service"):
                        limiter().maybe_close_window(guard_clock.now)
                        twin.maybe_close_window(guard_clock.now)
                elif app.waiting:
                    running = sorted(app.waiting)
                    await finish(running[pick % len(running)], kind)
                compare()
            while app.waiting:  # drain: finish the oldest running request until none is left
                guard_clock.now += 0.001
                await finish(min(app.waiting), "ok")
                compare()
            assert all(r.task.done() for r in requests)
            # release's own time test (WINDOW_MAX_S) never fired: see the module docstring
            assert guard_clock.now - T0 < WINDOW_MAX_S
            event(f"windows closed: {min(twin.updates, 3)}")
            event(f"limit raised: {twin.effective > limit}")
            event(f"queued: {queued}")
            event(f"shed: {twin.shed_queue_full + twin.shed_overloaded > 0}")
        finally:
            await guard.aclose()

    run(guard_clock, scenario())


# -- the breaker's counting --------------------------------------------------------------------
breaker_configs = st.builds(
    BreakerConfig,
    window_s=st.sampled_from([1.5, 10.0]),
    min_calls=st.integers(min_value=1, max_value=6),
    failure_ratio=st.sampled_from([0.2, 0.5, 1.0]),
    slow_call_s=st.sampled_from([None, 0.005, 0.02]),
    slow_call_ratio=st.sampled_from([0.5, 1.0]),
    open_s=st.sampled_from([0.002, 0.01, 0.03]),
    half_open_calls=st.integers(min_value=1, max_value=3),
)
breaker_events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.005, allow_nan=False),  # gap before the request
        st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.02]),  # service time
        st.sampled_from(["ok", "ok", "ok", "5xx", "4xx", "raise"]),
    ),
    min_size=10,
    max_size=50,  # at most 1.25 s in all: less than any window_s (see the module docstring)
)


@SETTINGS
@given(config=breaker_configs, events=breaker_events)
def test_inlined_breaker_count_agrees_with_record(
    guard_clock: GuardClock, config: BreakerConfig, events: list[tuple[float, float, str]]
) -> None:
    """The guard's inlined breaker counting moves its breaker through exactly the states a
    twin CircuitBreaker goes through when asked `allow` and told `record` at the same instants:
    refusals, window counts, openings, half-open probes and closings."""

    async def scenario() -> None:
        app = ScriptedApp(guard_clock)
        guard = Guard(app, GuardConfig(token="", concurrency=OFF, breaker=config))
        twin = CircuitBreaker(config)
        try:
            for gap, latency_s, kind in events:
                assert guard_clock.now is not None
                guard_clock.now += gap
                start = guard_clock.now
                status = {"5xx": 503, "4xx": 404}.get(kind, 200)
                app.next = Outcome(latency_s, status, kind == "raise")
                response = await call(guard)
                end = guard_clock.now
                if twin.state and not twin.allow(start):
                    assert response.json()["reason"] == "circuit_open"
                    assert guard_clock.now == start  # the app was not called
                else:
                    failed = kind == "raise" or status >= 500
                    slow = config.slow_call_s is not None and end - start >= config.slow_call_s
                    twin.record(end, failed, slow)
                (breaker,) = guard.breakers.values()
                for name in ("state", "calls", "opens_total", "probes_in_flight", "probes_ok"):
                    assert getattr(breaker, name) == getattr(twin, name), name
                assert breaker.window_counts(end) == twin.window_counts(end)
                assert breaker.describe(end) == twin.describe(end)
                event(f"state {twin.state}")
            event(f"opens {min(twin.opens_total, 2)}")
        finally:
            await guard.aclose()

    assert sum(gap + latency for gap, latency, _ in events) < config.window_s
    run(guard_clock, scenario())


def check_guard_agrees_with_limiter(
    guard_clock: GuardClock,
    spec: str,
    events: list[tuple[int, tuple[float, float], str]],
    by_peer: bool,
) -> None:
    """Drive a Guard limited by `spec` and a MemoryRateLimiter side by side through `events`:
    every admission, refusal and RateLimit header must agree."""
    reference = RateLimitPolicy(
        "default", parse_limits(spec), "gcra", policy_on_every_response=False
    )
    limiter = MemoryRateLimiter(reference)
    interval = reference.single[1]
    factor = EmergencyConfig().rate_factor

    async def scenario() -> None:
        app = ScriptedApp(guard_clock)
        config = GuardConfig(
            token="",
            rate_limit=spec,
            concurrency=OFF,
            breaker=NO_BREAKER,
            key_func=None if by_peer else header_key,
        )
        guard = Guard(app, config)
        admitted = 0
        try:
            for client, (intervals, seconds), mode in events:
                if mode:
                    guard.set_mode(mode, actor="test")
                    reference.set_factor(factor if mode == "emergency" else 1.0)
                assert guard_clock.now is not None
                guard_clock.now += intervals * interval + seconds
                key = f"10.0.0.{client}"
                response = await call(guard, key)
                first = key not in limiter._current  # a new client: the policy is announced
                decision = limiter.hit(key, guard_clock.now)
                expected = reference.headers(decision)
                if decision.allowed:
                    admitted += 1
                    assert response.status == 200
                    if not first:
                        expected = reference.steady_lines_for(*decision[1:4])
                    assert response.headers(*RATE_HEADERS) == expected
                    event(f"announced: {first}")
                else:
                    assert response.status == 429
                    retry = response.headers(b"retry-after")
                    assert response.headers(*RATE_HEADERS) == retry + expected
                    assert response.json()["retry_after_s"] == round(decision.retry_after_s, 3)
            assert app.calls == admitted
            event(f"refused: {admitted < len(events)}")
        finally:
            await guard.aclose()

    run(guard_clock, scenario())


def test_the_inlined_acquire_refuses_at_the_guard_wide_ceiling(guard_clock: GuardClock) -> None:
    """With the scope "route", a route with free slots is still refused (503, overloaded, not
    queued) while the guard-wide ceiling is full, and the ceiling counts every admission."""
    config = ConcurrencyConfig(mode="static", limit=2, max_limit=2, queue_size=2, scope="route")

    async def scenario() -> None:
        app = ScriptedApp(guard_clock, hold=True)
        guard = Guard(app, GuardConfig(token="", concurrency=config, breaker=NO_BREAKER))
        ceiling = guard.concurrency
        assert ceiling is not None and ceiling.effective == 2
        try:
            held = []
            for i, path in enumerate(("/a", "/b")):
                scope = {**_scope("10.0.0.1", i), "path": path, "raw_path": path.encode()}
                held.append(asyncio.create_task(guard(scope, _receive, Response().send)))
                await _settle()
            assert sorted(app.waiting) == [0, 1] and ceiling.in_flight == 2
            assert ceiling.window_peak == 2
            refused = Response()
            scope = {**_scope("10.0.0.1", 2), "path": "/c", "raw_path": b"/c"}
            # (bounded: a request admitted past the ceiling would wait for the app for ever)
            await asyncio.wait_for(guard(scope, _receive, refused.send), timeout=5.0)
            assert (refused.status, refused.json()["reason"]) == (503, "overloaded")
            assert ceiling.in_flight == 2 and ceiling.children["/c"].in_flight == 0
            for future in app.waiting.values():
                future.set_result(Outcome())
            await asyncio.gather(*held)
            assert ceiling.in_flight == 0
        finally:
            await guard.aclose()

    run(guard_clock, scenario())
