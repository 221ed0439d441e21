"""The memory store (guard/cache_store.py): a least-recently-used cache bounded by bytes, and
the entry encoding the Redis store uses."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.guard.cache_store import (
    ENTRY_OVERHEAD,
    Entry,
    MemoryStore,
    RedisStore,
    decode_entry,
    encode_entry,
)


def entry(body: bytes, status: int = 200, at: float = 0.0) -> Entry:
    return Entry(status, ((b"content-type", b"text/plain"),), body, at, 60.0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "invalidate"]),
        st.sampled_from(["/a", "/a/1", "/a/2", "/b", "/b/1", "/c"]),
        st.integers(0, 3000),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(ENTRY_OVERHEAD, 8000))
def test_the_memory_store_never_holds_more_bytes_than_its_bound(
    ops: list[tuple[str, str, int]], max_bytes: int
) -> None:
    async def run() -> None:
        store = MemoryStore(max_bytes)
        for op, key, size in ops:
            if op == "set":
                stored = await store.set(key, entry(b"x" * size), 100.0, 0.0)
                fits = entry(b"x" * size).size <= max_bytes
                assert stored == fits
                if fits:  # the newest entry is never the one evicted
                    assert await store.get(key, 1.0) is not None
            elif op == "get":
                await store.get(key, 1.0)
            else:
                await store.invalidate(key)
                assert all(not k.startswith(key) for k in store._entries)
            assert store.bytes <= max_bytes
            assert store.bytes == sum(e.size for e, _ in store._entries.values())

    asyncio.run(run())


async def test_the_least_recently_used_entry_is_evicted_first() -> None:
    size = entry(b"x" * 100).size
    store = MemoryStore(3 * size)
    for key in ("/1", "/2", "/3"):
        await store.set(key, entry(b"x" * 100), 100.0, 0.0)
    await store.get("/1", 0.0)  # now /2 is the coldest
    await store.set("/4", entry(b"x" * 100), 100.0, 0.0)
    assert await store.get("/2", 0.0) is None
    assert all([await store.get(k, 0.0) for k in ("/1", "/3", "/4")])
    assert store.evictions == 1


async def test_an_entry_is_gone_once_its_retention_ends() -> None:
    store = MemoryStore()
    await store.set("/k", entry(b"v"), 10.0, 100.0)
    assert await store.get("/k", 109.9) is not None
    assert await store.get("/k", 110.0) is None
    assert store.bytes == 0 and len(store) == 0


async def test_invalidation_drops_exactly_the_keys_under_a_prefix() -> None:
    store = MemoryStore()
    for key in ("/api/items?", "/api/items/1?", "/api/itemsx?", "/other?"):
        await store.set(key, entry(b"v"), 10.0, 0.0)
    assert await store.invalidate("/api/items/") == 1
    assert await store.invalidate("/api/items") == 2
    assert await store.get("/other?", 0.0) is not None


@given(
    st.integers(0, 599),
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=5),
    st.binary(max_size=500),
    st.floats(0, 2e9, allow_nan=False),
    st.lists(st.text(max_size=10), max_size=3),
)
def test_an_encoded_entry_decodes_to_itself(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, at: float, vary: list[str]
) -> None:
    original = Entry(status, tuple(headers), body, at, 5.0, 1.0, 2.0, 3.0, tuple(vary))
    assert decode_entry(encode_entry(original)) == original


@given(st.binary(max_size=200))
def test_decoding_garbage_gives_none_never_an_exception(data: bytes) -> None:
    decoded = decode_entry(data)
    assert decoded is None or isinstance(decoded, Entry)


def test_redis_keys_of_one_primary_key_share_a_cluster_hash_tag() -> None:
    store = RedisStore.__new__(RedisStore)
    store.prefix = "app:cache"
    assert store.redis_key("/p?a=1") == "{app:cache:/p?a=1}"
    assert store.redis_key("/p?a=1#abc") == "{app:cache:/p?a=1}#abc"
