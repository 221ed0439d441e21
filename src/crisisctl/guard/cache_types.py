"""What the response cache counts per route, and what it hands between its steps.

`RouteCacheStats`: one route's hits, misses, stale answers and bytes (status and metrics).
`Miss`: what `CacheLayer.begin` leaves for `fetch` and `end` when the cache could not answer
(the key, a stale-if-error entry, the single-flight future and Redis lock it leads).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from crisisctl.guard.cache_store import CacheStore, Entry
from crisisctl.guard.config import CacheRule

__all__ = ["PASS_THROUGH", "CacheRoute", "Miss", "RouteCacheStats"]


@dataclass(slots=True)
class RouteCacheStats:
    """What the cache did for one route (its rule's pattern)."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    #: requests the cache had to let through (credentials, ``no-store``)
    bypassed: int = 0
    #: misses that waited for another miss of the same key instead of calling the origin
    coalesced: int = 0
    stored: int = 0
    #: origin failures answered with a stale entry instead
    errors_masked: int = 0
    bytes_served: int = 0
    bytes_stored: int = 0
    #: stale-while-revalidate refreshes started, and those not started because the guard's
    #: concurrency limit had no free slot (the stale entry is served again meanwhile)
    refreshes: int = 0
    refreshes_skipped: int = 0

    @property
    def hit_ratio(self) -> float | None:
        served = self.hits + self.stale + self.misses
        return (self.hits + self.stale) / served if served else None

    def describe(self) -> dict[str, object]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "bypassed": self.bypassed,
            "coalesced": self.coalesced,
            "stored": self.stored,
            "errors_masked": self.errors_masked,
            "refreshes": self.refreshes,
            "refreshes_skipped": self.refreshes_skipped,
            "bytes_served": self.bytes_served,
            "bytes_stored": self.bytes_stored,
            "hit_ratio": self.hit_ratio,
        }


@dataclass(frozen=True, slots=True)
class CacheRoute:
    label: str
    rule: CacheRule
    store: CacheStore
    stats: RouteCacheStats


@dataclass(slots=True)
class Miss:
    """A request the cache could not answer (`CacheLayer.begin`): `route` None when the cache
    lets it through untouched, else the key, the stale-if-error entry, and the flight and
    Redis lock it leads (None when it follows a call that stored nothing)."""

    route: CacheRoute | None
    primary: str = ""
    flight_key: str = ""
    stale: Entry | None = None
    done: asyncio.Future[None] | None = None
    token: str | None = None


#: the cache lets the request through (not cacheable, bypassed, a HEAD miss)
PASS_THROUGH: Final = Miss(None)
