"""Where cached responses live: a byte-bounded in-memory LRU, or Redis shared by instances.

Both stores hold `Entry` objects under string keys (see cache_policy for the keys), each kept
for a retention the layer computes (the entry's longest window), and drop every key starting
with a prefix on `invalidate`. `get` and `set` never raise: a store that fails answers
"absent" and counts the error, so losing Redis costs cache hits, never requests; `invalidate`
raises, so that whoever asked for it learns it did not happen.

Memory: an OrderedDict in least-recently-used order; the size of an entry is its body plus its
headers plus `ENTRY_OVERHEAD` bytes; storing past `max_bytes` evicts from the cold end, and an
entry bigger than `max_bytes` is not stored. Expired entries are dropped when met, and all at
once by `drop_expired` (behind the guard, a memory-budget cleanup hook).

Redis: one string per entry, ``SET key value PX retention``, so Redis expires it by itself.
Keys are ``{PREFIX:PRIMARY}`` and ``{PREFIX:PRIMARY}#VARIANT``: the braces are a Redis
Cluster hash tag, so an entry and its Vary variants share one slot. The value is a 4-byte
big-endian length, a JSON head (status, headers, times) and the body, never pickle: a value
read from a shared server is data, not code. After a failure, calls skip Redis (a miss) but
for one probe per `retry_interval_s`. Invalidation SCANs every node for ``{PREFIX:<prefix>*``
(glob characters escaped) and UNLINKs what it finds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from crisisctl.guard.redis_store import RedisClient, make_redis_client, mask_url

__all__ = [
    "ENTRY_OVERHEAD",
    "CacheStore",
    "Entry",
    "MemoryStore",
    "RedisStore",
    "decode_entry",
    "encode_entry",
]

log = logging.getLogger("crisisctl.guard")

#: bytes counted per entry on top of its body and headers (key, objects, bookkeeping)
ENTRY_OVERHEAD = 256
_HEAD_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored response (or, with ``status == 0``, a marker naming the Vary headers)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    #: wall-clock time (time.time()) it was stored
    stored_at: float
    lifetime_s: float
    initial_age_s: float = 0.0
    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0
    vary: tuple[str, ...] = ()

    @property
    def is_marker(self) -> bool:
        return self.status == 0

    @property
    def size(self) -> int:
        """Bytes this entry is charged in a memory store."""
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + ENTRY_OVERHEAD


def encode_entry(entry: Entry) -> bytes:
    """The bytes of `entry` for a shared store (length-prefixed JSON head, then the body)."""
    head = json.dumps(
        {
            "s": entry.status,
            "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in entry.headers],
            "t": entry.stored_at,
            "l": entry.lifetime_s,
            "a": entry.initial_age_s,
            "r": entry.stale_while_revalidate_s,
            "e": entry.stale_if_error_s,
            "v": list(entry.vary),
        },
        separators=(",", ":"),
    ).encode()
    return _HEAD_LENGTH.pack(len(head)) + head + entry.body


def decode_entry(data: bytes) -> Entry | None:
    """The entry `encode_entry` wrote; None for anything else."""
    try:
        (length,) = _HEAD_LENGTH.unpack_from(data)
        head = json.loads(data[4 : 4 + length])
        return Entry(
            status=int(head["s"]),
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in head["h"]),
            body=bytes(data[4 + length :]),
            stored_at=float(head["t"]),
            lifetime_s=float(head["l"]),
            initial_age_s=float(head["a"]),
            stale_while_revalidate_s=float(head["r"]),
            stale_if_error_s=float(head["e"]),
            vary=tuple(str(v) for v in head["v"]),
        )
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        return None


class CacheStore(Protocol):
    """What the cache layer needs from a store."""

    name: str

    async def get(self, key: str, now: float) -> Entry | None:
        """The entry under `key`, None when absent, expired or unreachable."""

    async def set(self, key: str, entry: Entry, retain_s: float, now: float) -> bool:
        """Keep `entry` under `key` for `retain_s` seconds; whether it was stored."""

    async def invalidate(self, prefix: str) -> int:
        """Drop every key starting with `prefix`; how many were dropped."""

    async def lock(self, key: str, ttl_s: float) -> str | None:
        """Take the origin-call lock of `key` for at most `ttl_s`: a token to unlock with, or
        None when another holder has it (a store that fails hands out a token: fail open)."""

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock `lock` gave `token` (not another holder's)."""

    async def locked(self, key: str) -> bool:
        """Whether someone holds the lock of `key` (False when the store fails)."""

    def describe(self) -> dict[str, object]:
        """JSON-able figures for the status endpoint."""


class MemoryStore:
    """Entries in this process, least recently used evicted first, bounded by bytes."""

    name = "memory"

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes < ENTRY_OVERHEAD:
            raise ValueError(f"max_bytes must be at least {ENTRY_OVERHEAD}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: str, now: float) -> Entry | None:
        """`get` without a coroutine (the layer's hit path uses it)."""
        found = self._entries.get(key)
        if found is None:
            return None
        entry, expires_at = found
        if now >= expires_at:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def get(self, key: str, now: float) -> Entry | None:
        return self.get_now(key, now)

    async def set(self, key: str, entry: Entry, retain_s: float, now: float) -> bool:
        size = entry.size
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        while self.bytes + size > self.max_bytes:
            cold = next(iter(self._entries))
            self._drop(cold)
            self.evictions += 1
        self._entries[key] = (entry, now + retain_s)
        self.bytes += size
        return True

    def drop_expired(self, now: float) -> int:
        """Drop every entry past its retention (met or not); how many went. One pass over the
        entries: run under memory pressure (the guard's memory-budget hook), not per request."""
        doomed = [key for key, (_, expires_at) in self._entries.items() if now >= expires_at]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def invalidate(self, prefix: str) -> int:
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def lock(self, key: str, ttl_s: float) -> str | None:
        return "local"  # one process: the layer's in-process single-flight is the lock

    async def unlock(self, key: str, token: str) -> None:
        return None

    async def locked(self, key: str) -> bool:
        return False

    def _drop(self, key: str) -> None:
        entry, _ = self._entries.pop(key)
        self.bytes -= entry.size

    def describe(self) -> dict[str, object]:
        return {
            "store": self.name,
            "entries": len(self._entries),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "evictions": self.evictions,
        }


# delete the lock only if it still holds our token (it may have expired and been retaken)
_UNLOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


class RedisStore:
    """Entries in Redis (or a Redis Cluster), shared by every instance using the same prefix."""

    name = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        url: str = "redis",
        prefix: str = "crisisctl:cache",
        timeout_s: float = 0.25,
        retry_interval_s: float = 1.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if "{" in prefix or "}" in prefix:
            raise ValueError("the cache key prefix must not hold braces (a Redis hash tag)")
        self.client = client
        self.url = mask_url(url)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self.errors = 0
        self.skipped = 0
        self.healthy = True
        self.last_error: str | None = None
        self._next_attempt_at = 0.0
        self._unlock_script = client.register_script(_UNLOCK_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "crisisctl", timeout_s: float = 0.25
    ) -> RedisStore:
        """A store on `url` (redis://, rediss://, unix://, redis+cluster://) under
        ``PREFIX:cache``."""
        client = make_redis_client(url, timeout_s)
        return cls(client, url=url, prefix=f"{prefix}:cache", timeout_s=timeout_s)

    def redis_key(self, key: str) -> str:
        """``{PREFIX:PRIMARY}`` or ``{PREFIX:PRIMARY}#VARIANT`` (one slot per primary key)."""
        primary, hashed, variant = key.partition("#")
        return f"{{{self.prefix}:{primary}}}{hashed}{variant}"

    def _should_attempt(self) -> bool:
        """Always while healthy; after a failure, one probe per `retry_interval_s` (the others
        skip Redis at once instead of each waiting for the timeout)."""
        if self.healthy:
            return True
        now = time.monotonic()
        if now >= self._next_attempt_at:
            self._next_attempt_at = now + self.retry_interval_s
            return True
        self.skipped += 1
        return False

    def _failed(self, exc: BaseException, action: str) -> None:
        self.errors += 1
        self._next_attempt_at = time.monotonic() + self.retry_interval_s
        self.last_error = f"{action}: {type(exc).__name__}: {exc}".strip()
        if self.healthy:
            self.healthy = False
            log.warning(
                "response cache storage %s failed (%s); serving from the origin until it answers",
                self.url,
                self.last_error,
            )

    def _ok(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.info("response cache storage %s answers again", self.url)

    async def get(self, key: str, now: float) -> Entry | None:
        if not self._should_attempt():
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self.client.get(self.redis_key(key))
        except Exception as exc:
            self._failed(exc, "GET")
            return None
        self._ok()
        if not isinstance(data, bytes):
            return None
        return decode_entry(data)

    async def set(self, key: str, entry: Entry, retain_s: float, now: float) -> bool:
        if not self._should_attempt():
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.set(
                    self.redis_key(key), encode_entry(entry), px=max(1, round(retain_s * 1000))
                )
        except Exception as exc:
            self._failed(exc, "SET")
            return False
        self._ok()
        return True

    async def invalidate(self, prefix: str) -> int:
        pattern = "{" + _GLOB_SPECIAL.sub(r"\\\1", f"{self.prefix}:{prefix}") + "*"
        dropped = 0
        try:
            async with asyncio.timeout(max(self.timeout_s, 5.0)):
                batch: list[bytes] = []
                async for name in self.client.scan_iter(match=pattern, count=500):
                    batch.append(name)
                    if len(batch) >= 500:
                        dropped += await self._unlink(batch)
                        batch = []
                if batch:
                    dropped += await self._unlink(batch)
        except Exception as exc:
            self._failed(exc, "invalidate")
            raise
        self._ok()
        return dropped

    def lock_key(self, key: str) -> str:
        """``{PREFIX:PRIMARY}:lock``: in the slot of the entry it guards."""
        return self.redis_key(key.partition("#")[0]) + ":lock"

    async def lock(self, key: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(8)
        if not self._should_attempt():
            return token
        try:
            async with asyncio.timeout(self.timeout_s):
                taken = await self.client.set(
                    self.lock_key(key), token, nx=True, px=max(1, round(ttl_s * 1000))
                )
        except Exception as exc:
            self._failed(exc, "SET NX")
            return token
        self._ok()
        return token if taken else None

    async def unlock(self, key: str, token: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._unlock_script(keys=[self.lock_key(key)], args=[token])
        except Exception as exc:
            self._failed(exc, "unlock")

    async def locked(self, key: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self.client.exists(self.lock_key(key)))
        except Exception as exc:
            self._failed(exc, "EXISTS")
            return False

    async def _unlink(self, names: Sequence[bytes]) -> int:
        total = 0
        for name in names:  # one by one: on a cluster they live in different slots
            total += int(await self.client.unlink(name))
        return total

    async def aclose(self) -> None:
        await self.client.aclose()

    def describe(self) -> dict[str, object]:
        return {
            "store": self.name,
            "url": self.url,
            "prefix": self.prefix,
            "healthy": self.healthy,
            "errors": self.errors,
            "skipped_while_down": self.skipped,
            "last_error": self.last_error,
        }
