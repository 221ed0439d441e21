"""Response caching as a pure-ASGI layer: hits, stale serving, single-flight misses.

`CacheLayer(app, routes)` wraps an ASGI app. A GET or HEAD whose first matching `RouteRule`
carries a `CacheRule` is looked up in that rule's store (cache_store) under its key
(cache_policy); every other request passes through untouched.

- fresh entry: served at once, ``X-Cache: hit`` and ``Age``; the app is not called.
- stale within stale-while-revalidate: served (``X-Cache: stale``), and one background request
  (at most one per key at a time) refreshes the entry. Behind the guard the refresh holds a
  slot of the route's concurrency limit (`begin`'s `refresh_slot`); with none free it is not
  started (counted ``refreshes_skipped``) and a later stale hit tries again.
- otherwise a miss (``X-Cache: miss``): the app answers, its response streams through while
  the layer buffers the body up to the rule's `max_body_bytes` (past it, buffering stops and
  nothing is stored), then stores it if RFC 9111 and the rule allow (cache_policy).
  If an entry still inside its stale-if-error window exists, and the app raises before
  answering or answers 5xx, the client gets that entry (``X-Cache: stale``) instead.
- single-flight: while one miss of a key is at the origin, other misses of that key wait for
  it (at most the rule's `single_flight_wait_s`), then read the entry it stored. When it stored
  nothing (an error, ``no-store``, a body too big), each waiter goes to the origin itself: an
  origin failure is never handed to the waiters as a shared answer. Across instances sharing a
  Redis store, the first miss also takes a lock in Redis (``SET NX PX``, released after the
  call, expiring after `single_flight_wait_s` if its holder dies); a miss on another instance
  that finds the lock taken polls the store every 20 ms for the answer instead of calling
  the origin, until the lock is gone or the wait is over.
- HEAD is served from the GET entry; a HEAD miss goes to the app and is not stored.
- a request whose If-None-Match names the entry's ETag gets a 304 from the cache.

For the guard: `serve_stale(scope, send)` answers from an entry inside its stale-if-error
window (breaker open, request about to be shed) and says whether it did; `invalidate(prefix)`
drops entries by key prefix (keys start with the path); `emergency` (a callable) widens every
window by the rule's `emergency_ttl_factor` while it returns True; `stats` counts hits,
misses, stale answers and bytes per route (the rule's pattern, so bounded by configuration).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from crisisctl.guard.cache_capture import ResponseCapture
from crisisctl.guard.cache_policy import (
    NOT_MODIFIED_HEADERS,
    Freshness,
    StoreVerdict,
    freshness,
    not_modified,
    primary_key,
    read_request,
    request_bypasses,
    retention_s,
    variant_key,
)
from crisisctl.guard.cache_store import CacheStore, Entry, MemoryStore, RedisStore
from crisisctl.guard.cache_types import PASS_THROUGH, CacheRoute, Miss, RouteCacheStats
from crisisctl.guard.config import CacheRule, GuardConfigError, RouteRule
from crisisctl.guard.routes import compile_template
from crisisctl.guard.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CacheLayer", "Miss", "RouteCacheStats"]

log = logging.getLogger("crisisctl.guard")

_CACHEABLE_METHODS = ("GET", "HEAD")
#: (method, path) -> resolved rule, cleared when it reaches this size
_ROUTE_MEMO_LIMIT = 10_000
#: how often a miss waiting for another instance's origin call looks for its answer
_POLL_S = 0.02
#: a background refresh still running after this long is cancelled
_REFRESH_TIMEOUT_S = 30.0


class CacheLayer:
    """The response cache in front of `app` for the routes whose rule has a `cache`."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[RouteRule],
        *,
        memory: MemoryStore | None = None,
        redis: RedisStore | None = None,
        emergency: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.memory = memory if memory is not None else MemoryStore()
        self.redis = redis
        if redis is None and any(r.cache and r.cache.store == "redis" for r in routes):
            raise GuardConfigError(
                "a route caches in Redis but no Redis store was given: set the guard's "
                "storage URL or use store: memory"
            )
        self.emergency = emergency
        self.clock = clock
        self.stats: dict[str, RouteCacheStats] = {}
        self._rules = [
            (compile_template(rule.pattern), rule, self._stats_for(rule)) for rule in routes
        ]
        self._memo: dict[tuple[str, str], CacheRoute | None] = {}
        #: store name + primary key -> resolved when the origin call in flight for it ends
        self._flights: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    def _stats_for(self, rule: RouteRule) -> RouteCacheStats | None:
        if rule.cache is None:
            return None
        return self.stats.setdefault(rule.pattern, RouteCacheStats())

    # -- routing ----------------------------------------------------------------------------
    def route(self, method: str, path: str) -> CacheRoute | None:
        """The cache route of a request (the first rule matching it decides), or None."""
        memo_key = (method, path)
        try:
            return self._memo[memo_key]
        except KeyError:
            pass
        found: CacheRoute | None = None
        for regex, rule, stats in self._rules:
            methods = rule.methods
            if (
                methods is not None
                and method not in methods
                and not (method == "HEAD" and "GET" in methods)
            ):
                continue
            if regex.match(path):
                if rule.cache is not None and stats is not None:
                    store: CacheStore = self.memory
                    if rule.cache.store == "redis" and self.redis is not None:
                        store = self.redis
                    found = CacheRoute(rule.pattern, rule.cache, store, stats)
                break
        if len(self._memo) >= _ROUTE_MEMO_LIMIT:
            self._memo.clear()
        self._memo[memo_key] = found
        return found

    def _factor(self, rule: CacheRule) -> float:
        return rule.emergency_ttl_factor if self.emergency() else 1.0

    # -- lookup -----------------------------------------------------------------------------
    async def _lookup(
        self, store: CacheStore, primary: str, headers: Sequence[tuple[bytes, bytes]], now: float
    ) -> Entry | None:
        entry = await store.get(primary, now)
        if entry is not None and entry.is_marker:
            entry = await store.get(variant_key(primary, entry.vary, headers), now)
            if entry is not None and entry.is_marker:
                return None
        return entry

    async def _save(self, route: CacheRoute, primary: str, scope: Scope, entry: Entry) -> None:
        rule = route.rule
        verdict = StoreVerdict(
            True,
            lifetime_s=entry.lifetime_s,
            initial_age_s=entry.initial_age_s,
            stale_while_revalidate_s=entry.stale_while_revalidate_s,
            stale_if_error_s=entry.stale_if_error_s,
        )
        retain = retention_s(verdict, rule.emergency_ttl_factor)
        now = entry.stored_at
        key = primary
        if entry.vary:
            marker = Entry(0, (), b"", now, entry.lifetime_s, vary=entry.vary)
            if not await route.store.set(primary, marker, retain, now):
                return
            key = variant_key(primary, entry.vary, scope["headers"])
        if await route.store.set(key, entry, retain, now):
            route.stats.stored += 1
            route.stats.bytes_stored += len(entry.body)

    # -- answers ----------------------------------------------------------------------------
    async def _serve(
        self,
        entry: Entry,
        age_s: float,
        label: bytes,
        scope: Scope,
        send: Send,
    ) -> int:
        """Send `entry` (no body for HEAD; a 304 when the request's If-None-Match names its
        ETag); the body bytes sent."""
        extra = [(b"age", str(int(age_s)).encode()), (b"x-cache", label)]
        if not_modified(scope["headers"], entry.headers):
            kept = [(k, v) for k, v in entry.headers if k.lower() in NOT_MODIFIED_HEADERS]
            await send({"type": "http.response.start", "status": 304, "headers": kept + extra})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return 0
        headers = [*entry.headers, *extra]
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else entry.body
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return len(body)

    async def serve_stale(self, scope: Scope, send: Send) -> bool:
        """Answer from the cache when the origin must not be called (breaker open, shedding).

        Serves an entry that is fresh (``X-Cache: hit``) or inside its stale-if-error window
        (``X-Cache: stale``); returns False, having sent nothing, when there is none.
        """
        if scope.get("type") != "http" or scope.get("method") not in _CACHEABLE_METHODS:
            return False
        route = self.route(scope["method"], scope["path"])
        if route is None or request_bypasses(scope["headers"], route.rule) is not None:
            return False
        headers = scope["headers"]
        primary = primary_key(scope["path"], scope.get("query_string", b""), headers, route.rule)
        now = self.clock()
        entry = await self._lookup(route.store, primary, headers, now)
        if entry is None:
            return False
        state = self._freshness(entry, route.rule, now)
        if not (state.fresh or state.error_stale):
            return False
        if state.fresh:
            route.stats.hits += 1
            label = b"hit"
        else:
            route.stats.stale += 1
            route.stats.errors_masked += 1
            label = b"stale"
        route.stats.bytes_served += await self._serve(entry, state.age_s, label, scope, send)
        return True

    def _freshness(self, entry: Entry, rule: CacheRule, now: float) -> Freshness:
        return freshness(
            entry.stored_at,
            entry.initial_age_s,
            entry.lifetime_s,
            entry.stale_while_revalidate_s,
            entry.stale_if_error_s,
            now,
            self._factor(rule),
        )

    # -- request path -----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        miss = await self.begin(scope, send)
        if miss is None:
            return
        try:
            await self.fetch(miss, self.app, scope, receive, send)
        finally:
            await self.end(miss)

    async def begin(self, scope: Scope, send: Send, refresh_slot: Any = None) -> Miss | None:
        """The cache's part before the origin: None when the cache answered (hit, stale,
        coalesced), else the `Miss` to pass to `fetch` and then `end` (always, even when the
        origin is never called: `end` resolves the key's flight and lock).

        `refresh_slot`: a concurrency limiter (`try_acquire()`, `release(now, rtt)`) a
        stale-while-revalidate refresh holds a slot of while it runs; none free, no refresh."""
        if scope["type"] != "http" or scope["method"] not in _CACHEABLE_METHODS:
            return PASS_THROUGH
        route = self.route(scope["method"], scope["path"])
        if route is None:
            return PASS_THROUGH
        headers = scope["headers"]
        rule = route.rule
        stats = route.stats
        bypass, force_origin = read_request(headers, rule)
        if bypass is not None:
            stats.bypassed += 1
            return PASS_THROUGH
        primary = primary_key(scope["path"], scope.get("query_string", b""), headers, rule)
        flight_key = route.store.name + "\x00" + primary
        stale: Entry | None = None
        if not force_origin:
            now = self.clock()
            entry = await self._lookup(route.store, primary, headers, now)
            if entry is not None:
                state = self._freshness(entry, rule, now)
                if state.fresh or state.revalidate_stale:
                    label = b"hit" if state.fresh else b"stale"
                    if state.fresh:
                        stats.hits += 1
                    else:
                        stats.stale += 1
                    stats.bytes_served += await self._serve(entry, state.age_s, label, scope, send)
                    if not state.fresh:
                        self._refresh(scope, route, primary, flight_key, refresh_slot)
                    return None
                if state.error_stale:
                    stale = entry
        if scope["method"] == "HEAD":
            stats.misses += 1
            return PASS_THROUGH
        flight = self._flights.get(flight_key)
        if flight is not None and not force_origin:
            if await self._wait_for(flight, rule.single_flight_wait_s) and await self._serve_fresh(
                route, primary, scope, send
            ):
                return None
            # nothing stored by the call we waited for: ask the origin ourselves
            return Miss(route, primary, flight_key, stale)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flights[flight_key] = done
        miss = Miss(route, primary, flight_key, stale, done)
        try:
            # across instances sharing the store: one holds the key's lock, the others poll
            miss.token = await route.store.lock(primary, rule.single_flight_wait_s)
            if (
                miss.token is None
                and not force_origin
                and await self._await_other_instance(route, primary, scope, send)
            ):
                await self.end(miss)
                return None
        except BaseException:
            await self.end(miss)
            raise
        return miss

    async def end(self, miss: Miss) -> None:
        """Release what `begin` took for a miss: the key's Redis lock and its flight."""
        if miss.route is None:
            return
        token, miss.token = miss.token, None
        done, miss.done = miss.done, None
        try:
            if token is not None:
                await miss.route.store.unlock(miss.primary, token)
        finally:
            if done is not None:
                if self._flights.get(miss.flight_key) is done:
                    del self._flights[miss.flight_key]
                done.set_result(None)

    async def _serve_fresh(self, route: CacheRoute, primary: str, scope: Scope, send: Send) -> bool:
        """Serve the key's entry if another call just stored it fresh (a coalesced miss)."""
        now = self.clock()
        entry = await self._lookup(route.store, primary, scope["headers"], now)
        if entry is None:
            return False
        state = self._freshness(entry, route.rule, now)
        if not state.fresh:
            return False
        route.stats.hits += 1
        route.stats.coalesced += 1
        route.stats.bytes_served += await self._serve(entry, state.age_s, b"hit", scope, send)
        return True

    async def _await_other_instance(
        self, route: CacheRoute, primary: str, scope: Scope, send: Send
    ) -> bool:
        """Another instance holds the key's lock: poll the store until its answer is there
        (served, True), the lock is gone without one or `single_flight_wait_s` passed (False)."""
        deadline = time.monotonic() + route.rule.single_flight_wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            if await self._serve_fresh(route, primary, scope, send):
                return True
            if not await route.store.locked(primary):
                return await self._serve_fresh(route, primary, scope, send)
        return False

    @staticmethod
    async def _wait_for(flight: asyncio.Future[None], timeout_s: float) -> bool:
        """Whether the call in flight ended within `timeout_s` (it is never cancelled here)."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(flight)
        except TimeoutError:
            return False
        return True

    async def fetch(
        self, miss: Miss, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One origin call (`app`) for a miss: streamed to the client, stored when allowed;
        with a stale-if-error entry, an origin failure before the response starts is answered
        with it. A request the cache lets through (`miss.route` None) just calls `app`."""
        route = miss.route
        if route is None:
            await app(scope, receive, send)
            return
        primary, stale = miss.primary, miss.stale
        stats = route.stats

        async def save(entry: Entry) -> None:
            await self._save(route, primary, scope, entry)

        capture = ResponseCapture(send, route.rule, stale is not None, save, self.clock)
        try:
            await app(scope, receive, capture)
        except Exception:
            if stale is None or (capture.started and not capture.swallowed):
                stats.misses += 1
                raise
            log.warning("origin failed on %s; serving a stale response", route.label, exc_info=True)
            capture.swallowed = True
        if capture.swallowed and stale is not None:
            now = self.clock()
            stats.stale += 1
            stats.errors_masked += 1
            age = stale.initial_age_s + max(0.0, now - stale.stored_at)
            stats.bytes_served += await self._serve(stale, age, b"stale", scope, send)
            return
        stats.misses += 1
        stats.bytes_served += capture.size

    # -- background refresh ------------------------------------------------------------------
    def _refresh(
        self, scope: Scope, route: CacheRoute, primary: str, flight_key: str, slot: Any = None
    ) -> None:
        """Start one background origin call refreshing `primary` (none if one is running, or
        when `slot` has no free slot)."""
        if flight_key in self._flights:
            return
        if slot is not None and not slot.try_acquire():
            route.stats.refreshes_skipped += 1  # overloaded: the next stale hit tries again
            return
        route.stats.refreshes += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flights[flight_key] = done
        task = asyncio.create_task(
            self._refresh_call(dict(scope), route, primary, flight_key, done, slot)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_call(
        self,
        scope: Scope,
        route: CacheRoute,
        primary: str,
        flight_key: str,
        done: asyncio.Future[None],
        slot: Any = None,
    ) -> None:
        finished = asyncio.Event()
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def save(entry: Entry) -> None:
            await self._save(route, primary, scope, entry)

        capture = ResponseCapture(None, route.rule, False, save, self.clock)
        try:
            # bounded: a hung refresh would otherwise keep every later refresh of the key away
            async with asyncio.timeout(_REFRESH_TIMEOUT_S):
                await self.app(scope, receive, capture)
        except Exception:
            log.warning("background refresh of %s failed", route.label, exc_info=True)
        finally:
            if slot is not None:
                slot.release(time.monotonic(), -1.0)  # no latency sample: nobody waited on it
            finished.set()
            if self._flights.get(flight_key) is done:
                del self._flights[flight_key]
            done.set_result(None)

    # -- control ----------------------------------------------------------------------------
    async def invalidate(self, prefix: str) -> int:
        """Drop every entry whose key starts with `prefix` (keys start with the path), in every
        store; how many keys were dropped. Raises when a shared store cannot be reached."""
        dropped = await self.memory.invalidate(prefix)
        if self.redis is not None:
            dropped += await self.redis.invalidate(prefix)
        return dropped

    async def aclose(self) -> None:
        """Cancel the background refreshes still running."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def describe(self) -> dict[str, object]:
        """JSON-able figures for the status endpoint: stores and per-route counts."""
        stores = [self.memory.describe()]
        if self.redis is not None:
            stores.append(self.redis.describe())
        return {
            "emergency": self.emergency(),
            "stores": stores,
            "in_flight": len(self._flights),
            "routes": {label: stats.describe() for label, stats in self.stats.items()},
        }
