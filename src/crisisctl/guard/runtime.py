"""What the guard's request path keeps per route and per request: `RouteRuntime` (built once per
route by guard/routebuild.py), `Deadline` (one request's timeout, enforced by guard/ticker.py)
and `ResponseSend`, the `send` an HTTP app gets from the guard (response status, RateLimit
header lines, the end of the deadline, the service latency and the concurrency slot's release
at response start), which also carries the request's admission `stage`; and `serving_task`, the
task a deadline cancels.

Compiled with the rest of the request path (see `crisisctl._accelerated`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Generator
from typing import Any, Final

from crisisctl.guard.breaker import CircuitBreaker
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import Priority
from crisisctl.guard.metrics import RouteStats
from crisisctl.guard.ratelimit import MemoryRateLimiter
from crisisctl.guard.types import Message, Send

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
_thread_id: Final = threading.get_ident
#: the loop last seen running in each thread (see `serving_task`); bounded: emptied when full
_thread_loops: Final[dict[int, asyncio.AbstractEventLoop]] = {}
_THREAD_LOOPS_MAX: Final = 256


class _LastThread:
    """The thread `serving_task` served last and its loop: one compare of two ints instead of
    a dict lookup (which boxes the thread id) while one thread serves, as in a server. The two
    are one value, replaced whole, so threads taking turns never see one's id with the
    other's loop."""

    __slots__ = ("pair",)

    def __init__(self) -> None:
        self.pair: tuple[int, asyncio.AbstractEventLoop | None] = (-1, None)

    def forget(self) -> None:
        self.pair = (-1, None)


_last: Final = _LastThread()


def _forget_loops() -> None:
    """After a fork: the parent's loops are not the child's."""
    _thread_loops.clear()
    _last.forget()


os.register_at_fork(after_in_child=_forget_loops)

#: where a request's admission stands (`ResponseSend.stage`): admitted, or the step the
#: guard's coroutine finishes because it answers or waits (guard/middleware.py)
ADMITTED: Final = 0
#: refusals: shed (emergency, memory), an open circuit, over a rate limit (`decision`)
SHED: Final = 1
BROKEN: Final = 2
RATE: Final = 3
#: waits: a limiter that is not in memory (Redis) or not GCRA, a request policy, a queued slot
LIMIT: Final = 4
POLICY: Final = 5
QUEUE: Final = 6


class RouteRuntime:
    """Everything the request path needs about one route (label, rule, method, critical);
    built by guard/routebuild.py."""

    __slots__ = (
        "breaker",
        "conc",
        "counts",
        "critical",
        "label",
        "limiter",
        "mem_limiter",
        "policy",
        "priority",
        "slow_s",
        "stats",
        "timeout_s",
    )

    def __init__(self) -> None:
        self.label = ""
        self.stats: RouteStats
        #: this route and method's counts per status class (shared with its RouteStats)
        self.counts: list[int]
        self.priority = int(Priority.NORMAL)
        self.critical = False
        self.limiter: Any = None
        #: the same limiter when it is a MemoryRateLimiter: typed, so compiled code reads its
        #: attributes directly instead of through generic attribute lookup
        self.mem_limiter: MemoryRateLimiter | None = None
        self.breaker: CircuitBreaker | None = None
        #: the concurrency limiter admitting this route (None: critical or concurrency off)
        self.conc: ConcurrencyLimiter | None = None
        self.slow_s: float | None = None
        self.timeout_s: float | None = None
        #: the route's request policies (guard/policies.py: cache, quotas); None: none
        self.policy: Any = None


class Deadline:
    """One request's timeout, enforced by the guard's ticker while `task` is set."""

    __slots__ = ("at", "expired", "sender", "task", "work")

    def __init__(self, task: asyncio.Task[Any], at: float, sender: ResponseSend) -> None:
        self.task: asyncio.Task[Any] | None = task
        #: monotonic seconds
        self.at = at
        #: the request's `send` (until the request ends)
        self.sender: ResponseSend | None = sender
        #: the timeout passed while the app was still working (set until the request ends)
        self.expired = False
        #: the app's coroutine for this request (what the ticker inspects at the deadline)
        self.work: Any = None


class ResponseSend:
    """The `send` the app gets: notes the response status, appends the RateLimit header
    lines to the response start, ends the request's deadline once the response has started
    (a timeout can no longer answer 504 then), and there measures the service latency and
    gives back the concurrency slot.

    Service latency is admission to response start: what the adaptive limit and the
    breaker's slow-call rule judge. The slot is released at response start too, so a
    streaming response (SSE, a large download, a slow-reading client) neither reads as
    congestion nor holds a slot for its lifetime; the time to the end of the response still
    goes into the route's duration histogram.

    The start of a fixed-length response (one with a Content-Length) is held until its first
    body message and the two are passed on back to back, as the ASGI spec asks of servers
    ("must not start sending the response to the client until it has received at least one
    Response Body event"). uvicorn writes the start at once, so the app's way back to its
    body (Starlette's send wrappers, the response's own code) would otherwise lie between the
    two writes: a client or same-host proxy that has read the head and gone back to wait is
    woken a second time, and on one host that wake-up is the server's CPU (about 0.3 more per
    request behind the guard, several µs each: docs/benchmarks.md). A streamed response (no
    Content-Length: SSE, a generator) starts at once, so its client sees the head before the
    first event. What the guard measures at the start (status, service latency, the slot)
    is measured when the app sends it. The middleware sends a start still held when the app
    returns without a body (the server then sees what it would have seen), and drops it
    when the app fails (the server answers 500 instead of a response cut short).

    A plain callable object returning `send`'s awaitable, so no coroutine of its own per
    message (but one to pass on a held start with the message after it), and one object per
    request (a closure would need two). It also carries the request's admission (route,
    app, stage, task) between the guard's plain methods and its coroutine
    (guard/middleware.py).
    """

    __slots__ = (
        "admitted",
        "app",
        "conc",
        "deadline",
        "decision",
        "extra_headers",
        "held",
        "route",
        "send",
        "service_s",
        "stage",
        "status",
        "task",
    )

    def __init__(self, send: Send, route: RouteRuntime, app: Any, admitted: float) -> None:
        self.send = send
        #: the request's route, and the app that answers it (a request policy may wrap it)
        self.route = route
        self.app = app
        #: when it was admitted (monotonic seconds; reset when it waited for a slot)
        self.admitted = admitted
        #: where its admission stands (ADMITTED, or the step the guard must finish: below)
        self.stage = ADMITTED
        #: a rate limiter's refusal (stage RATE)
        self.decision: Any = None
        self.extra_headers: list[tuple[bytes, bytes]] | None = None
        self.status = 0
        #: the task serving it and its deadline, when the route has a timeout
        self.task: asyncio.Task[Any] | None = None
        self.deadline: Deadline | None = None
        #: the concurrency slot this request holds until its response starts (None: none)
        self.conc: ConcurrencyLimiter | None = None
        #: admission to response start, seconds; < 0 until the response starts
        self.service_s = -1.0
        #: a fixed-length response's start, held until its first body message
        self.held: Message | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        held = self.held
        if held is not None:  # the start, with the message that follows it
            self.held = None
            return _send_two(self.send, held, message)
        if not self.status:
            if isinstance(message, dict):  # (always, per the ASGI spec: compiled dict access)
                kind: str = message["type"]
                if kind == "http.response.start":
                    headers = message.get("headers", ())
                    if self._start(message["status"], message, headers):
                        self.held = message
                        return _READY
            elif message["type"] == "http.response.start":
                self._start(message["status"], message, message.get("headers", ()))
        return self.send(message)

    def _start(self, status: int, message: Message, headers: Any) -> bool:
        """The response starts: its status, headers, service latency and slot. True: it has a
        Content-Length (the app's own headers say so; Starlette puts it first)."""
        self.status = status
        fixed = False
        if type(headers) is list:
            for line in headers:
                if line[0] == b"content-length":
                    fixed = True
                    break
        extra = self.extra_headers
        if extra is not None:
            if type(headers) is list:
                message["headers"] = headers + extra  # one copy, the app's intact
            else:
                message["headers"] = [*headers, *extra]
        deadline = self.deadline
        if deadline is not None:
            deadline.task = None
        now = _clock()
        service_s = now - self.admitted
        self.service_s = service_s
        conc = self.conc
        if conc is not None:
            self.conc = None
            conc.release(now, service_s)
        return fixed


class _Ready:
    """An awaitable already done: what `send` of a held start returns (nothing is sent yet),
    one object for every request instead of a coroutine each."""

    def __await__(self) -> Generator[Any, None, None]:
        done: Generator[Any, None, None] = _EXHAUSTED
        return done


#: an exhausted iterator: awaiting `_READY` runs it, finds nothing and gives None
_EXHAUSTED: Final[Any] = iter(())
_READY: Final = _Ready()


async def _send_two(send: Send, first: Message, second: Message) -> None:
    """A held start and the message after it, passed on back to back."""
    await send(first)
    await send(second)


def serving_task() -> asyncio.Task[Any] | None:
    """The task running the caller (None outside a task), for a request's deadline.

    On 3.11 `asyncio.get_running_loop` makes a getpid system call each time (its check for a
    forked child), 0.2-0.9 µs on a VM, so the loop last seen running in each thread is kept
    (and the last thread's apart, compared first): its current task is the caller's while it
    runs in this thread. A kept loop that no longer runs has no current task and is looked up
    again; a forked child starts with none. (A kept loop since run by another thread is not
    detected: a guard is served by one loop, the one its ticker, which enforces the deadlines,
    runs on.) tests/unit/test_guard_task_lookup.py.
    """
    if not _READ_TASK_MAP:
        return _current_task(_running_loop())
    thread: int = _thread_id()
    last_thread, loop = _last.pair
    if last_thread != thread:
        loop = _thread_loops.get(thread)
    task = _current_tasks.get(loop) if loop is not None else None
    if task is None:  # (a new thread or loop, or none running a task: looked up)
        loop = _running_loop()
        if len(_thread_loops) >= _THREAD_LOOPS_MAX:
            _thread_loops.clear()
        _thread_loops[thread] = loop
        task = _current_tasks.get(loop)
        _last.pair = (thread, loop)
    elif last_thread != thread:
        _last.pair = (thread, loop)
    return task
