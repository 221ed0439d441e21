"""The response cache layer (guard/cache.py) driven in process: what it serves, stores, refuses.

A small ASGI origin counts its calls and answers as each test tells it; the layer's clock is a
settable number, so freshness windows are crossed without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from crisisctl.guard.cache import CacheLayer
from crisisctl.guard.cache_store import MemoryStore
from crisisctl.guard.config import CacheRule, RouteRule
from crisisctl.guard.types import Message, Receive, Scope, Send


@dataclass
class Origin:
    """Answers ``body-N`` (N = its call count) with the headers and status it is given."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: int = 1
    raise_error: bool = False
    #: raise after sending the response start (a 5xx start, then a crash)
    raise_after_start: bool = False
    delay_s: float = 0.0
    calls: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        n, status = self.calls, self.status  # as they are when the call arrives
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.raise_error:
            raise RuntimeError("origin down")
        echo = dict(scope["headers"]).get(b"accept-language", b"")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), *self.headers]})  # fmt: skip
        if self.raise_after_start:
            raise RuntimeError("origin crashed mid-response")
        for i in range(self.chunks):
            body = f"body-{n}".encode() + echo + (b"." * 100 if self.chunks > 1 else b"")
            more = i < self.chunks - 1
            await send({"type": "http.response.body", "body": body, "more_body": more})


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def cache(self) -> str:
        return self.headers.get(b"x-cache", b"").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def scope(path: str = "/items/1", method: str = "GET", query: bytes = b"",
          headers: Sequence[tuple[bytes, bytes]] = ()) -> Scope:  # fmt: skip
    return {"type": "http", "method": method, "path": path, "query_string": query,
            "headers": [(b"host", b"t"), *headers]}  # fmt: skip


async def call(app: Any, sc: Scope | None = None) -> Answer:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(sc or scope(), receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(start["status"], dict(start["headers"]), body)


def layer(origin: Origin, clock: Clock, **rule: Any) -> CacheLayer:
    rules = [
        RouteRule("/nocache/*"),
        RouteRule("/items/{id}", cache=CacheRule(**rule)),
    ]
    return CacheLayer(origin, rules, clock=clock)


async def test_a_fresh_entry_is_served_without_calling_the_origin() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock, ttl_s=10)
    first = await call(app)
    assert (first.cache, first.body) == ("miss", b"body-1")
    clock.now += 4.5
    second = await call(app)
    assert (second.cache, second.body, origin.calls) == ("hit", b"body-1", 1)
    assert second.headers[b"age"] == b"4"
    assert second.headers[b"content-length"] == b"6"
    clock.now += 6
    third = await call(app)
    assert (third.cache, third.body, origin.calls) == ("miss", b"body-2", 2)
    stats = app.stats["/items/{id}"]
    assert (stats.hits, stats.misses, stats.stored) == (1, 2, 2)


async def test_paths_without_a_cache_rule_pass_through_untouched() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock)
    for _ in range(2):
        answer = await call(app, scope("/nocache/x"))
        assert b"x-cache" not in answer.headers
    post = await call(app, scope(method="POST"))
    assert b"x-cache" not in post.headers
    assert origin.calls == 3


@pytest.mark.parametrize(
    "headers",
    [[(b"cache-control", b"no-store")], [(b"cache-control", b"private")],
     [(b"set-cookie", b"s=1")], [(b"vary", b"*")]],
)  # fmt: skip
async def test_responses_forbidding_storage_are_never_cached(
    headers: list[tuple[bytes, bytes]],
) -> None:
    origin, clock = Origin(headers=headers), Clock()
    app = layer(origin, clock)
    for n in (1, 2, 3):
        answer = await call(app)
        assert (answer.cache, answer.body) == ("miss", f"body-{n}".encode())
    assert app.stats["/items/{id}"].stored == 0


async def test_requests_with_credentials_or_no_store_bypass_the_cache() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock)
    await call(app)  # stored
    auth = await call(app, scope(headers=[(b"authorization", b"Bearer secret")]))
    assert auth.body == b"body-2" and b"x-cache" not in auth.headers
    nostore = await call(app, scope(headers=[(b"cache-control", b"no-store")]))
    assert nostore.body == b"body-3"
    fresh = await call(app, scope(headers=[(b"cache-control", b"no-cache")]))
    assert (fresh.cache, fresh.body) == ("miss", b"body-4")
    assert (await call(app)).body == b"body-4"  # the forced origin answer was stored
    assert app.stats["/items/{id}"].bypassed == 2


async def test_query_parameters_and_vary_headers_select_separate_entries() -> None:
    origin, clock = Origin(headers=[(b"vary", b"Accept-Language")]), Clock()
    app = layer(origin, clock, query_params=("page",))
    fr = [(b"accept-language", b"fr")]
    de = [(b"accept-language", b"de")]
    assert (await call(app, scope(query=b"page=1", headers=fr))).body == b"body-1fr"
    assert (await call(app, scope(query=b"page=1", headers=de))).body == b"body-2de"
    assert (await call(app, scope(query=b"page=1&utm=x", headers=fr))).body == b"body-1fr"
    assert (await call(app, scope(query=b"page=1", headers=de))).body == b"body-2de"
    assert (await call(app, scope(query=b"page=2", headers=fr))).body == b"body-3fr"
    assert origin.calls == 3


async def test_stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() -> None:
    origin, clock = Origin(delay_s=0.05), Clock()
    app = layer(origin, clock, ttl_s=10, stale_while_revalidate_s=30)
    await call(app)
    clock.now += 15
    answers = await asyncio.gather(*(call(app) for _ in range(5)))
    assert {(a.cache, a.body) for a in answers} == {("stale", b"body-1")}
    await asyncio.sleep(0.2)
    assert origin.calls == 2  # one refresh for five stale answers
    refreshed = await call(app)
    assert (refreshed.cache, refreshed.body) == ("hit", b"body-2")
    clock.now += 50
    assert (await call(app)).cache == "miss"  # past both windows: a plain miss


async def test_stale_if_error_masks_origin_errors_and_exceptions() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock, ttl_s=10, stale_if_error_s=100)
    await call(app)
    clock.now += 20
    origin.status = 503
    masked = await call(app)
    assert (masked.status, masked.cache, masked.body) == (200, "stale", b"body-1")
    origin.status, origin.raise_error = 200, True
    masked = await call(app)
    assert (masked.status, masked.cache, masked.body) == (200, "stale", b"body-1")
    origin.raise_error, origin.status, origin.raise_after_start = False, 502, True
    masked = await call(app)  # a 5xx start, then a crash: still the stale answer
    assert (masked.status, masked.cache, masked.body) == (200, "stale", b"body-1")
    origin.status, origin.raise_after_start = 200, False
    recovered = await call(app)
    assert (recovered.cache, recovered.body) == ("miss", b"body-5")
    assert app.stats["/items/{id}"].errors_masked == 3
    clock.now += 200
    origin.status = 503
    unmasked = await call(app)  # past the window: the error goes through
    assert (unmasked.status, unmasked.cache) == (503, "miss")


async def test_serve_stale_answers_for_an_open_breaker_only_inside_the_window() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock, ttl_s=10, stale_if_error_s=60)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    assert not await app.serve_stale(scope(), send)
    assert sent == []
    await call(app)
    clock.now += 30
    assert await app.serve_stale(scope(), send)
    assert dict(sent[0]["headers"])[b"x-cache"] == b"stale"
    assert sent[1]["body"] == b"body-1"
    clock.now += 60
    assert not await app.serve_stale(scope(), send)
    assert origin.calls == 1


async def test_concurrent_misses_of_one_key_make_one_origin_call() -> None:
    origin, clock = Origin(delay_s=0.05), Clock()
    app = layer(origin, clock)
    answers = await asyncio.gather(*(call(app) for _ in range(50)))
    assert origin.calls == 1
    assert {a.body for a in answers} == {b"body-1"}
    assert sorted(a.cache for a in answers).count("miss") == 1
    assert app.stats["/items/{id}"].coalesced == 49


async def test_a_failed_origin_call_is_not_handed_to_the_waiting_misses() -> None:
    origin, clock = Origin(delay_s=0.05, status=500), Clock()
    app = layer(origin, clock)
    first = asyncio.ensure_future(call(app))
    await asyncio.sleep(0.01)
    origin.status = 200  # the waiters' own calls succeed
    waiters = await asyncio.gather(*(call(app) for _ in range(3)))
    assert (await first).status == 500
    assert all(w.status == 200 for w in waiters)
    assert origin.calls == 4  # each waiter asked the origin itself


async def test_bodies_over_the_bound_stream_through_unstored() -> None:
    origin, clock = Origin(chunks=5), Clock()
    app = layer(origin, clock, max_body_bytes=300)
    first = await call(app)
    assert len(first.body) == 5 * 106 and first.cache == "miss"
    assert len((await call(app)).body) == 5 * 106
    assert origin.calls == 2
    small = layer(Origin(chunks=2), Clock(), max_body_bytes=300)
    await call(small)
    assert (await call(small)).cache == "hit"


async def test_head_is_served_from_the_get_entry_without_a_body() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock)
    head_miss = await call(app, scope(method="HEAD"))
    assert head_miss.cache == ""  # went to the app, nothing stored
    await call(app)
    head = await call(app, scope(method="HEAD"))
    assert (head.cache, head.body, head.headers[b"content-length"]) == ("hit", b"", b"6")


async def test_emergency_widens_the_windows_by_the_rule_factor() -> None:
    origin, clock = Origin(), Clock()
    emergency = {"on": False}
    app = CacheLayer(
        origin,
        [RouteRule("/items/{id}", cache=CacheRule(ttl_s=10, emergency_ttl_factor=3))],
        clock=clock,
        emergency=lambda: emergency["on"],
    )
    await call(app)
    clock.now += 20
    emergency["on"] = True
    assert (await call(app)).cache == "hit"
    emergency["on"] = False
    assert (await call(app)).cache == "miss"


async def test_invalidation_by_prefix_drops_the_entries_under_a_path() -> None:
    origin, clock = Origin(), Clock()
    app = layer(origin, clock)
    await call(app, scope("/items/1"))
    await call(app, scope("/items/2"))
    assert await app.invalidate("/items/1") == 1
    assert (await call(app, scope("/items/1"))).cache == "miss"
    assert (await call(app, scope("/items/2"))).cache == "hit"


async def test_the_memory_bound_is_shared_by_every_route() -> None:
    origin, clock = Origin(chunks=2), Clock()
    memory = MemoryStore(1200)
    app = CacheLayer(origin, [RouteRule("/items/{id}", cache=CacheRule())], memory=memory,
                     clock=clock)  # fmt: skip
    for i in range(10):
        await call(app, scope(f"/items/{i}"))
    assert memory.bytes <= 1200 and len(memory) < 10
    assert app.describe()["stores"] == [memory.describe()]


async def test_the_origin_age_counts_against_its_max_age() -> None:
    origin = Origin(headers=[(b"cache-control", b"max-age=10"), (b"age", b"4")])
    clock = Clock()
    app = layer(origin, clock, ttl_s=60)
    await call(app)
    clock.now += 3
    hit = await call(app)
    assert (hit.cache, hit.headers[b"age"]) == ("hit", b"7")
    clock.now += 3.5  # age 10.5 > max-age 10
    assert (await call(app)).cache == "miss"


async def test_a_matching_if_none_match_gets_304_from_the_cache() -> None:
    origin, clock = Origin(headers=[(b"etag", b'"v1"'), (b"cache-control", b"max-age=60")]), Clock()
    app = layer(origin, clock)
    await call(app)
    for tag in (b'"v1"', b'W/"v1"', b'"x", "v1"', b"*"):
        answer = await call(app, scope(headers=[(b"if-none-match", tag)]))
        assert (answer.status, answer.body, answer.cache) == (304, b"", "hit")
        assert answer.headers[b"etag"] == b'"v1"' and b"content-type" not in answer.headers
    other = await call(app, scope(headers=[(b"if-none-match", b'"v0"')]))
    assert (other.status, other.body) == (200, b"body-1")
    assert origin.calls == 1
