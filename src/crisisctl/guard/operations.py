"""Operation quotas at run time: named slots the app holds around expensive background work.

A route quota counts requests in flight, so it cannot cap a scan that ``POST /api/scans``
starts in the background and answers 202 for at once. An operation quota counts operations:

    guard = Guard(app, GuardConfig(
        operations=(OperationQuota("scan", max_concurrent=2),),
        routes=(RouteRule("/api/scans", methods=("POST",), quota="scan"),),
    ))

    async def create_scan(request: Request) -> JSONResponse:
        op = operation_of(request)        # the slot the guard took when it admitted the request
        future = pool.submit(run_scan)    # the background work …
        op.hold_until(future)             # … holds the slot until it ends, however it ends
        return JSONResponse({...}, status_code=202)

1. **Admission.** A route whose rule says ``quota="scan"`` takes one slot of ``scan`` (and one
   of the client key's, with ``max_concurrent_per_key``) when the guard admits the request,
   after its rate limit and route quota. While the quota is full the answer is 429 with
   ``Retry-After`` (the operations' observed duration, guard/quota.py `ServiceTime`) and a JSON
   body naming the operation. The admitted slot is an `Operation`, found with
   `operation_of(request)` (``scope["crisisctl.operation"]``): taken at admission, it can
   never be lost to another request between the check and the start of the work.
2. **Adoption.** The app keeps the slot past its response with ``op.hold_until(future)`` (an
   asyncio future or task, a ``concurrent.futures.Future``, a coroutine), ``async with op:``
   around the work, or ``op.adopt()`` and a later ``await op.release()``. A slot the app did
   not adopt is given back when the request ends (a request answered 400 held it only while
   it ran). `max_hold_s` gives back a slot held too long (a lost task), with a WARNING.
3. **Anywhere else.** ``async with operations.hold("scan", key=user):`` takes a slot or raises
   `OperationRefused` (``retry_after_s``, ``reason``, ``document()``: the 429 body);
   ``await operations.acquire("scan")`` returns an adopted slot. `operations` is
   ``guard.operations``, or from inside the app ``operations_of(request)``: the guard leaves
   it in the lifespan state (``request.state.crisisctl_operations`` on servers that copy it,
   uvicorn and hypercorn do). This is also the way when bad input must get its 400 even while
   the quota is full (admission refuses before the app reads the body): validate, then
   acquire in the handler (the demo's scanning service, lab/scanner.py, does).

Slots live in the guard's quota store (guard/quota_store.py), group ``op:NAME``: counted in
memory for one instance, or as Redis leases shared by every instance, renewed every third of
`quota_lease_s` while held, so a process that dies holding slots gives them back within the
lease. Emergency mode tightens the quotas like the route quotas. Status (``policies``,
``operations``) and metrics are labelled by configured operation names only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crisisctl.guard.operation_config import OperationQuota
from crisisctl.guard.quota import ROUTE_COUNTER, ServiceTime, counter_name
from crisisctl.guard.quota_store import Lease, QuotaStore, Refused
from crisisctl.guard.tiers import tightened

__all__ = [
    "OPERATIONS_STATE_KEY",
    "OPERATION_SCOPE_KEY",
    "Operation",
    "OperationRefused",
    "Operations",
    "operation_of",
    "operation_refusal_body",
    "operations_of",
]

log = logging.getLogger("crisisctl.guard")

#: the scope entry holding the `Operation` a route with ``quota=`` took at admission
OPERATION_SCOPE_KEY = "crisisctl.operation"
#: the lifespan-state entry holding the guard's `Operations` (request.state.crisisctl_operations)
OPERATIONS_STATE_KEY = "crisisctl_operations"
#: the quota store's group of operation NAME (route quotas' groups start with a method or '/')
GROUP_PREFIX = "op:"
REASONS = ("quota", "quota_per_key")


class OperationRefused(Exception):
    """No slot: the operation quota `name` is full (`reason` "quota", or "quota_per_key" for
    the client key's); retry after `retry_after_s` seconds."""

    def __init__(self, name: str, reason: str, retry_after_s: int, held: int) -> None:
        whose = "" if reason == "quota" else " for this client"
        super().__init__(
            f"the operation quota {name!r} is full{whose} ({held} running); retry in "
            f"{retry_after_s} s"
        )
        self.name = name
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.held = held

    def document(self) -> dict[str, object]:
        """The JSON body of the 429 (the guard's at admission; an app refusing in its handler
        may answer the same, with ``Retry-After: retry_after_s``)."""
        return {
            "error": str(self),
            "reason": "operation_" + self.reason,
            "operation": self.name,
            "retry_after_s": self.retry_after_s,
        }


@dataclass(slots=True)
class OperationCounter:
    """One configured operation quota and what it saw in this instance."""

    quota: OperationQuota
    service: ServiceTime = field(default_factory=ServiceTime)
    admitted: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    held: int = 0
    adopted: int = 0
    released: int = 0
    #: slots given back by the guard after `max_hold_s`
    overdue: int = 0

    @property
    def group(self) -> str:
        return GROUP_PREFIX + self.quota.name


class Operation:
    """One held slot of an operation quota, given back once by `release` (idempotent)."""

    __slots__ = (
        "_operations", "_timer", "adopted", "counter", "key", "lease", "released", "started",
    )  # fmt: skip

    def __init__(
        self, operations: Operations, counter: OperationCounter, lease: Lease, key: str | None
    ) -> None:
        self._operations = operations
        self.counter = counter
        self.lease = lease
        self.key = key
        self.started = operations.clock()
        #: the app keeps the slot past its request (the guard will not release it)
        self.adopted = False
        self.released = False
        #: the `max_hold_s` safety net, cancelled by `release`
        self._timer: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        """The operation quota's name."""
        return self.counter.quota.name

    def adopt(self) -> Operation:
        """Keep the slot past the request: the app releases it (`release`, ``async with``)."""
        if not self.adopted and not self.released:
            self.adopted = True
            self.counter.adopted += 1
        return self

    def hold_until(self, work: Awaitable[Any] | concurrent.futures.Future[Any]) -> None:
        """Keep the slot until `work` ends (returns, raises or is cancelled), then give it back.

        `work`: an asyncio future or task, a coroutine (scheduled as a task) or a
        ``concurrent.futures.Future`` (a thread pool's). Call it on the event loop.
        """
        self.adopt()
        future: asyncio.Future[Any] = (
            asyncio.wrap_future(work)
            if isinstance(work, concurrent.futures.Future)
            else asyncio.ensure_future(work)
        )
        future.add_done_callback(self._work_done)

    def _work_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # (retrieved: the app sees it where it awaits the work, if it does)
        self._operations.release_soon(self)

    async def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self.released:
            return
        self.released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._operations.ended(self)
        await self._operations.store.release(self.lease)

    async def end_of_request(self) -> None:
        """The request that took the slot at admission ended: release it unless adopted."""
        if not self.adopted:
            await self.release()

    async def __aenter__(self) -> Operation:
        return self.adopt()

    async def __aexit__(self, *exc: object) -> None:
        # shielded: work cancelled inside the block still gives its slot back
        await asyncio.shield(self.release())


class Operations:
    """The guard's operation quotas: take, hold and give back slots; status and metrics."""

    def __init__(
        self,
        quotas: Sequence[OperationQuota],
        store: QuotaStore,
        *,
        emergency: Callable[[], bool] = lambda: False,
        emergency_factor: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = {quota.name: OperationCounter(quota) for quota in quotas}
        self.store = store
        self.emergency = emergency
        self.emergency_factor = emergency_factor
        self.clock = clock
        #: slots held in this instance (released at shutdown) and releases under way
        self.live: set[Operation] = set()
        self._releasing: set[asyncio.Task[None]] = set()

    def counter(self, name: str) -> OperationCounter:
        """The quota `name`; ValueError naming the configured ones when there is none."""
        try:
            return self.counters[name]
        except KeyError:
            known = ", ".join(sorted(self.counters)) or "none"
            raise ValueError(
                f"no operation quota named {name!r} (configured: {known}): add "
                f"OperationQuota({name!r}, max_concurrent=…) to GuardConfig.operations"
            ) from None

    def limits(self, counter: OperationCounter, emergency: bool) -> tuple[int | None, int | None]:
        """(quota over every instance, quota per client key) in force."""
        quota = counter.quota
        total, per_key = quota.max_concurrent, quota.max_concurrent_per_key
        if emergency:
            factor = self.emergency_factor
            total = quota.emergency_max_concurrent or tightened(total, factor)
            per_key = quota.emergency_max_concurrent_per_key or tightened(per_key, factor)
        return total, per_key

    async def admit(
        self, counter: OperationCounter, key: str | None
    ) -> Operation | OperationRefused:
        """One slot of `counter` (and of `key`'s, with a per-key quota), or why not."""
        total, per_key = self.limits(counter, self.emergency())
        slots: list[tuple[str, int]] = []
        if total is not None:
            slots.append((ROUTE_COUNTER, total))
        if per_key is not None:
            if key is None:
                raise ValueError(
                    f"the operation quota {counter.quota.name!r} counts per client key: pass "
                    "key=… (e.g. the user id)"
                )
            slots.append((counter_name(key), per_key))
        got = await self.store.acquire(counter.group, slots)
        if isinstance(got, Refused):
            reason = "quota" if got.name == ROUTE_COUNTER else "quota_per_key"
            counter.refused[reason] += 1
            return OperationRefused(
                counter.quota.name, reason, counter.service.retry_after_s(), got.held
            )
        counter.admitted += 1
        counter.held += 1
        operation = Operation(self, counter, got, key)
        self.live.add(operation)
        if counter.quota.max_hold_s is not None:
            operation._timer = asyncio.get_running_loop().call_later(
                counter.quota.max_hold_s, self._overdue, operation
            )
        return operation

    def _overdue(self, operation: Operation) -> None:
        operation._timer = None
        if operation.released:
            return
        operation.counter.overdue += 1
        log.warning(
            "an operation %r held its slot for max_hold_s=%g s without releasing it (a lost "
            "task, or work longer than expected); the guard gives the slot back now",
            operation.name,
            operation.counter.quota.max_hold_s,
        )
        self.release_soon(operation)

    async def acquire(self, name: str, key: str | None = None) -> Operation:
        """One slot of operation `name`, adopted (the caller releases it); `OperationRefused`
        when the quota is full."""
        got = await self.admit(self.counter(name), key)
        if isinstance(got, OperationRefused):
            raise got
        return got.adopt()

    @contextlib.asynccontextmanager
    async def hold(self, name: str, key: str | None = None) -> AsyncIterator[Operation]:
        """``async with operations.hold("scan", key=user):`` — the slot for the block's length;
        raises `OperationRefused` at entry when the quota is full."""
        operation = await self.acquire(name, key)
        try:
            yield operation
        finally:
            await asyncio.shield(operation.release())

    def ended(self, operation: Operation) -> None:
        """Bookkeeping of a released slot (the adopted ones feed the service time)."""
        counter = operation.counter
        counter.held -= 1
        counter.released += 1
        self.live.discard(operation)
        if operation.adopted:
            counter.service.observe(self.clock() - operation.started)

    def release_soon(self, operation: Operation) -> None:
        """Release `operation` in a task of its own (from a done-callback)."""
        task = asyncio.get_running_loop().create_task(operation.release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def describe(self) -> dict[str, object]:
        """JSON-able state for the status document (``policies.operations``)."""
        emergency = self.emergency()
        out: dict[str, object] = {}
        for name, counter in self.counters.items():
            total, per_key = self.limits(counter, emergency)
            out[name] = {
                "max_concurrent": total,
                "max_concurrent_per_key": per_key,
                "held_here": counter.held,
                "admitted_total": counter.admitted,
                "refused_total": dict(counter.refused),
                "adopted_total": counter.adopted,
                "released_total": counter.released,
                "overdue_total": counter.overdue,
                "max_hold_s": counter.quota.max_hold_s,
                "service_time_s": counter.service.mean_s,
                "retry_after_s": counter.service.retry_after_s(),
            }
        return {"emergency": emergency, "quotas": out}

    def metrics(self) -> Iterator[Metric]:
        """Prometheus families labelled by configured operation names and a fixed outcome set."""
        held = GaugeMetricFamily(
            "crisisctl_guard_operation_held",
            "Operation-quota slots held in this instance.",
            labels=["operation"],
        )
        limit = GaugeMetricFamily(
            "crisisctl_guard_operation_limit",
            "Operation quota in force (over every instance sharing the storage).",
            labels=["operation"],
        )
        outcomes = CounterMetricFamily(
            "crisisctl_guard_operations",
            "Operation-quota slots asked for, per outcome (admitted, quota, quota_per_key).",
            labels=["operation", "outcome"],
        )
        duration = GaugeMetricFamily(
            "crisisctl_guard_operation_service_time_seconds",
            "Weighted mean duration of the operations held (what Retry-After is derived from).",
            labels=["operation"],
        )
        emergency = self.emergency()
        for name, counter in self.counters.items():
            held.add_metric([name], counter.held)
            total, _ = self.limits(counter, emergency)
            if total is not None:
                limit.add_metric([name], total)
            outcomes.add_metric([name, "admitted"], counter.admitted)
            for reason, count in counter.refused.items():
                outcomes.add_metric([name, reason], count)
            if counter.service.mean_s is not None:
                duration.add_metric([name], counter.service.mean_s)
        yield held
        yield limit
        yield outcomes
        yield duration

    async def aclose(self) -> None:
        """Give back every slot still held here (a clean shutdown frees shared slots at once)."""
        for operation in list(self.live):
            with contextlib.suppress(Exception):
                await operation.release()
        for task in list(self._releasing):
            with contextlib.suppress(BaseException):
                await task


def operation_refusal_body(refused: OperationRefused) -> bytes:
    """The JSON body of the 429 a route with ``quota=`` answers while its quota is full."""
    return json.dumps(refused.document(), separators=(",", ":")).encode()


def _scope_of(request_or_scope: Any) -> Any:
    scope = getattr(request_or_scope, "scope", request_or_scope)
    return scope if isinstance(scope, dict) else {}


def operation_of(request_or_scope: Any) -> Operation | None:
    """The slot the guard took for this request at admission (a Starlette/FastAPI `Request`,
    or an ASGI scope); None when its route names no operation quota."""
    found = _scope_of(request_or_scope).get(OPERATION_SCOPE_KEY)
    return found if isinstance(found, Operation) else None


def operations_of(request_or_scope: Any) -> Operations | None:
    """The guard's `Operations`, from the lifespan state the server copies into each request
    (None: no operation quota configured, or a server without lifespan state)."""
    state = _scope_of(request_or_scope).get("state")
    found = state.get(OPERATIONS_STATE_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, Operations) else None
