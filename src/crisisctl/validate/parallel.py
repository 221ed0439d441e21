"""Concurrency control's traffic: requests sent alone, then a paced parallel burst.

What `shedding.evaluate_concurrency` needs to tell concurrency shedding from a rate limit:

1. `ALONE_BEFORE` requests one at a time (in-flight 1): a concurrency limit never refuses
   them; their median time W sets the burst's span;
2. the parallel burst: `connections` workers in a closed loop, at most `total` requests, for a
   span of clamp(3 × W, 1 s, 5 s). A worker sends again at once after a served response (the
   service stays as full as the connections can make it) and waits after a refusal, a random
   0.5–1.5 × pause with pause = connections × span ÷ total, so that fast refusals cannot spend
   the whole burst in the first milliseconds: the burst lasts long enough to show what the
   service admits once the first requests end (a concurrency limit admits one per completion,
   a rate limit only what its refill allows). The wait is random so that the workers refused
   together do not come back together: in step, they would meet a rate limit's refilled
   allowance as one batch, just as they would meet a concurrency limit;
3. up to `ALONE_AFTER` requests one at a time again, once the burst is over (a rate limit's
   allowance is then spent, a concurrency limit's slots are free again).

Every exchange is recorded with its send and end times (`exchange.Exchange`), in the lists the
caller passes, so a burst cut short by its time cap keeps what it measured.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Sequence

import httpx

from crisisctl.validate.exchange import Exchange, exchange

#: requests sent alone before the burst (they also measure the service time W)
ALONE_BEFORE = 3
#: requests sent alone after the burst
ALONE_AFTER = 10
#: time cap of each sequence of requests sent alone (seconds)
ALONE_CAP_S = 3.0
#: the burst lasts SPAN_FACTOR × W, within [MIN_SPAN_S, MAX_SPAN_S]
SPAN_FACTOR = 3.0
MIN_SPAN_S = 1.0
MAX_SPAN_S = 5.0
#: the shortest wait after a refusal (seconds)
MIN_PAUSE_S = 0.01
#: the body of POST/PUT/PATCH requests and its headers
JSON_BODY = b'{"test": "crisisctl-validate"}'
JSON_HEADERS = {"Content-Type": "application/json"}
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def span_for(alone: Sequence[Exchange]) -> float:
    """The burst's span from the served requests sent alone: clamp(3 × median, 1 s, 5 s)."""
    times = [ex.done - ex.sent for ex in alone if ex.served]
    w = statistics.median(times) if times else 0.0
    return min(MAX_SPAN_S, max(MIN_SPAN_S, SPAN_FACTOR * w))


def pause_for(connections: int, total: int, span_s: float) -> float:
    """The mean wait after a refusal that spreads `total` requests over `span_s` at worst."""
    return max(MIN_PAUSE_S, connections * span_s / max(total, 1))


def jittered(pause: float, rng: random.Random) -> float:
    """One wait after a refusal: uniform in [0.5, 1.5] × `pause`."""
    return pause * rng.uniform(0.5, 1.5)


class Route:
    """One method and path, with the small JSON body that methods with a body carry."""

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.body = None if method in BODYLESS_METHODS else JSON_BODY
        self.headers = None if self.body is None else JSON_HEADERS

    async def send(self, client: httpx.AsyncClient, origin: float) -> Exchange:
        """One request of this route."""
        return await exchange(client, origin, self.path, self.method, self.body, self.headers)


async def send_alone(
    client: httpx.AsyncClient, origin: float, route: Route, count: int, out: list[Exchange]
) -> None:
    """Up to `count` requests one after the other, for at most `ALONE_CAP_S`."""
    deadline = time.perf_counter() + ALONE_CAP_S
    for _ in range(count):
        if time.perf_counter() >= deadline:
            return
        out.append(await route.send(client, origin))


async def paced_burst(
    client: httpx.AsyncClient,
    origin: float,
    route: Route,
    *,
    connections: int,
    total: int,
    span_s: float,
    out: list[Exchange],
    rng: random.Random | None = None,
) -> None:
    """The parallel burst (module docstring): `connections` workers, ≤ `total` requests."""
    pause = pause_for(connections, total, span_s)
    rng = rng or random.Random()
    end = time.perf_counter() + span_s
    left = [total]

    async def worker() -> None:
        while left[0] > 0 and time.perf_counter() < end:
            left[0] -= 1
            ex = await route.send(client, origin)
            out.append(ex)
            if not ex.served:
                wait = jittered(pause, rng)
                await asyncio.sleep(min(wait, max(end - time.perf_counter(), 0.0)))

    async with asyncio.TaskGroup() as group:
        for _ in range(min(connections, total)):
            group.create_task(worker())
