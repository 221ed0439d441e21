"""Where concurrency-quota slots are counted: one process (memory) or every instance (Redis).

A quota is a named counter of slots with a limit. `acquire(group, slots)` takes one slot of
every named counter in `slots` (e.g. the route's and the client key's), all or none, and
returns a `Lease`, or a `Refused` naming the first counter that was full; `release(lease)`
gives the slots back. Counters of one `group` (one route) live together: in Redis they share
one hash tag, so the multi-key scripts run on a Redis Cluster too.

Redis (`RedisQuotaStore`): each counter is a sorted set ``{PREFIX:GROUP}:NAME`` whose members
are lease ids scored by their expiry (ms, on the Redis server's clock). Acquire, release and
renew are Lua scripts (one round trip, atomic). A lease expires `lease_s` after it was taken
or last renewed, and the acquire script first drops expired members: an instance that dies
holding slots (killed, partitioned) gives them back after at most `lease_s`. A live instance
renews all its leases every `lease_s / 3` from one background task while work runs, so long
work never loses its slot. PREFIX is the guard's `storage_prefix` + ":q".

Like the rate limits (guard/redis_store.py), every Redis call is bounded by `timeout_s`; on
an error, a timeout or while the storage is known to be down, the store counts in a local
`MemoryQuotaStore` (quotas then hold per instance), logged once per outage through the same
`StorageHealth`. A lease is released where it was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from crisisctl.guard.redis_store import RedisClient, StorageHealth, make_redis_client

__all__ = [
    "ACQUIRE_SCRIPT",
    "RELEASE_SCRIPT",
    "RENEW_SCRIPT",
    "Lease",
    "MemoryQuotaStore",
    "QuotaStore",
    "RedisQuotaStore",
    "Refused",
    "open_quota_store",
]

log = logging.getLogger("crisisctl.guard")

# Take one slot of every counter, all or none, on the Redis server clock.
#   KEYS[i]   sorted set of counter i: member = lease id, score = expiry (ms since the epoch)
#   ARGV[1]   the lease id;  ARGV[2]  lease length (ms);  ARGV[2 + i]  limit of counter i
# Expired members are dropped first. Returns {1, 0, 0} (taken) or {0, i - 1, held} where
# counter i is the first one holding `limit` live leases already (nothing is taken then).
ACQUIRE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local held = redis.call('ZCARD', KEYS[i])
  if held >= tonumber(ARGV[i + 2]) then
    return {0, i - 1, held}
  end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], lease + 1000)
end
return {1, 0, 0}
"""

# Give the slots of lease ARGV[1] back. Returns how many counters still held it.
RELEASE_SCRIPT = """
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('ZREM', KEYS[i], ARGV[1])
end
return removed
"""

# Push the expiry of lease ARGV[1] to now + ARGV[2] ms in every counter that still holds it
# (an expired lease is not revived: its slot may be someone else's by now).
# Returns how many counters held it.
RENEW_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local renewed = 0
for i = 1, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[1])
    redis.call('PEXPIRE', KEYS[i], lease + 1000)
    renewed = renewed + 1
  end
end
return renewed
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """Slots taken together: their group, counter names and the lease id."""

    group: str
    names: tuple[str, ...]
    lease_id: str
    #: taken in the local fallback (Redis was down), so released there too
    local: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """No slot taken: counter `index` of the request (its `name`) already held `held`."""

    index: int
    name: str
    held: int


class QuotaStore(Protocol):
    """What the quota policy needs from a store."""

    backend: str

    async def acquire(self, group: str, slots: Sequence[tuple[str, int]]) -> Lease | Refused:
        """One slot of each `(name, limit)` counter of `group`, all or none."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the lease's slots back (idempotent)."""
        ...

    def describe(self) -> dict[str, object]:
        """JSON-able state for the status endpoint."""
        ...

    async def aclose(self) -> None:
        """Stop background work and close connections."""
        ...


class MemoryQuotaStore:
    """Slots counted in this process (one instance, or the Redis store's fallback).

    Leases never expire here: the process that holds them is the one that counts them.
    """

    backend = "memory"

    def __init__(self) -> None:
        #: (group, name) -> lease ids holding a slot; empty sets are dropped
        self.held: dict[tuple[str, str], set[str]] = {}
        self._ids = itertools.count(1)

    def count(self, group: str, name: str) -> int:
        """Slots of counter `name` of `group` held now."""
        holders = self.held.get((group, name))
        return len(holders) if holders else 0

    def acquire_now(self, group: str, slots: Sequence[tuple[str, int]]) -> Lease | Refused:
        """`acquire` without awaiting (the memory store never waits)."""
        held = self.held
        for index, (name, limit) in enumerate(slots):
            holders = held.get((group, name))
            count = len(holders) if holders else 0
            if count >= limit:
                return Refused(index, name, count)
        lease_id = str(next(self._ids))
        for name, _ in slots:
            holders = held.get((group, name))
            if holders is None:
                holders = held[(group, name)] = set()
            holders.add(lease_id)
        return Lease(group, tuple(name for name, _ in slots), lease_id, local=True)

    def release_now(self, lease: Lease) -> None:
        """`release` without awaiting."""
        held = self.held
        for name in lease.names:
            holders = held.get((lease.group, name))
            if holders is not None:
                holders.discard(lease.lease_id)
                if not holders:
                    del held[(lease.group, name)]

    async def acquire(self, group: str, slots: Sequence[tuple[str, int]]) -> Lease | Refused:
        return self.acquire_now(group, slots)

    async def release(self, lease: Lease) -> None:
        self.release_now(lease)

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "counters": len(self.held)}

    async def aclose(self) -> None:
        self.held.clear()


class RedisQuotaStore:
    """Slots shared by every instance through Redis or a Redis Cluster (see the module doc)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        lease_s: float = 10.0,
        prefix: str = "crisisctl:q",
        timeout_s: float = 0.25,
        health: StorageHealth | None = None,
        backend: str = "redis",
        owns_client: bool = False,
    ) -> None:
        if lease_s < 0.1:
            raise ValueError("lease_s must be ≥ 0.1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.backend = backend
        self.client = client
        self.lease_s = lease_s
        self.lease_ms = max(100, round(lease_s * 1000))
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.health = health if health is not None else StorageHealth("redis", backend=backend)
        self.fallback = MemoryQuotaStore()
        self.instance = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._acquire = client.register_script(ACQUIRE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        self._renew = client.register_script(RENEW_SCRIPT)
        #: leases taken in Redis and not released yet, renewed by `_renewer`
        self.active: dict[str, Lease] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._owns_client = owns_client
        self.renewals_total = 0
        self.leases_lost_total = 0
        self.release_errors_total = 0

    def keys(self, lease_or_group: Lease | str, names: Sequence[str] = ()) -> list[str]:
        """The sorted sets of `names` in `group` (or of a lease's counters): one hash tag.

        The group is a route label, which may hold braces (``/scans/{id}``): they become
        parentheses, so the tag is the whole ``PREFIX:GROUP`` and never cut short.
        """
        if isinstance(lease_or_group, Lease):
            group, names = lease_or_group.group, lease_or_group.names
        else:
            group = lease_or_group
        tag = "{" + f"{self.prefix}:{group}".replace("{", "(").replace("}", ")") + "}"
        return [f"{tag}:{name}" for name in names]

    async def acquire(self, group: str, slots: Sequence[tuple[str, int]]) -> Lease | Refused:
        health = self.health
        if health.should_attempt():
            lease_id = f"{self.instance}:{next(self._ids)}"
            names = [name for name, _ in slots]
            args: list[Any] = [lease_id, self.lease_ms, *(limit for _, limit in slots)]
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._acquire(keys=self.keys(group, names), args=args)
                taken, index, held = (int(value) for value in reply)
            except TimeoutError as exc:
                health.record_failure(exc, f"no answer within {self.timeout_s:g} s")
            except Exception as exc:
                health.record_failure(exc)
            else:
                health.record_success()
                if not taken:
                    return Refused(index, names[index], held)
                lease = Lease(group, tuple(names), lease_id)
                self.active[lease_id] = lease
                self._start_renewer()
                return lease
        health.record_fallback()
        return self.fallback.acquire_now(group, slots)

    async def release(self, lease: Lease) -> None:
        if lease.local:
            self.fallback.release_now(lease)
            return
        if self.active.pop(lease.lease_id, None) is None:
            return  # released already
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._release(keys=self.keys(lease), args=[lease.lease_id])
        except Exception as exc:  # the lease expires on its own within lease_s
            self.release_errors_total += 1
            self.health.record_failure(exc)

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="crisisctl-quota-renewer"
            )

    async def _renew_loop(self) -> None:
        """Renew every active lease each `lease_s / 3` until none is left."""
        interval = self.lease_s / 3
        while self.active:
            await asyncio.sleep(interval)
            await self.renew_all()

    async def renew_all(self) -> None:
        """Push back the expiry of every lease still held (one script call per lease)."""
        for lease in list(self.active.values()):
            if lease.lease_id not in self.active:
                continue  # released while an earlier renewal ran
            try:
                async with asyncio.timeout(self.timeout_s):
                    renewed = await self._renew(
                        keys=self.keys(lease), args=[lease.lease_id, self.lease_ms]
                    )
            except Exception as exc:
                self.health.record_failure(exc)
                continue
            self.renewals_total += 1
            if int(renewed) < len(lease.names) and lease.lease_id in self.active:
                self.leases_lost_total += 1
                log.warning(
                    "a concurrency-quota lease of %s expired before it was renewed (Redis was "
                    "slow or unreachable for over %g s); the quota may admit one more meanwhile",
                    lease.group,
                    self.lease_s,
                )

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "lease_s": self.lease_s,
            "leases_held": len(self.active),
            "renewals_total": self.renewals_total,
            "leases_lost_total": self.leases_lost_total,
            "release_errors_total": self.release_errors_total,
            "fallback_counters": len(self.fallback.held),
            "storage": self.health.describe(),
        }

    async def aclose(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()


def open_quota_store(
    url: str,
    *,
    lease_s: float = 10.0,
    prefix: str = "crisisctl",
    timeout_s: float = 0.25,
) -> MemoryQuotaStore | RedisQuotaStore:
    """The store for a guard `storage` URL: memory:// or redis[+cluster]://…

    Keys start with `prefix` + ":q". The Redis store owns its client (closed by `aclose`).
    """
    if url.startswith("memory://"):
        return MemoryQuotaStore()
    cluster = "+cluster://" in url
    backend = "redis-cluster" if cluster else "redis"
    return RedisQuotaStore(
        make_redis_client(url, timeout_s),
        lease_s=lease_s,
        prefix=f"{prefix}:q",
        timeout_s=timeout_s,
        health=StorageHealth(url, backend=backend),
        backend=backend,
        owns_client=True,
    )
