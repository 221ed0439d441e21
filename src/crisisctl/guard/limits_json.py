"""The status document's "concurrency" part as JSON text, re-encoded only where it changed.

With per-route limits (`concurrency.scope="route"`) the part holds every route's limiter: at
500 routes, describing and encoding all of them took ~3 ms per status read, most of the read.
`LimitsJSON` keeps each route limiter's encoded description with the figures it was encoded
from (`signature`: everything `ConcurrencyLimiter._describe` reads that can change), and
re-encodes a limiter only when they differ (`refresh`). On a busy service every route's limit
moves every window, so the re-encoding is left to the status document's background refresh
(`guard/refresher.py`), like the rest of the document: a read re-encodes for at most its
budget and serves the other limiters as last encoded, within the same staleness bound. The
text equals `json.dumps(limiter.describe())` (compact) of the state it was encoded from.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Final

from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.digest import MIN_INLINE, SLICE_S

_OFF: Final = b'{"mode":"off"}'


def signature(limiter: ConcurrencyLimiter) -> tuple[object, ...]:
    """Every figure of `limiter`'s description that can change (its configuration cannot):
    equal signatures, equal descriptions."""
    return (
        limiter.effective,
        limiter.limit,
        limiter.factor,
        limiter.in_flight,
        limiter.queued,
        limiter.episode_start is not None and limiter._overloaded(limiter._clock()),
        limiter.rtt_noload,
        limiter.last_rtt,
        limiter._ceiling,
        limiter.updates,
        limiter.shed_queue_full,
        limiter.shed_queue_timeout,
        limiter.shed_overloaded,
        limiter._regain,
    )


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class LimitsJSON:
    """The "concurrency" part of the status document, kept per route limiter."""

    def __init__(self) -> None:
        #: route label -> (signature, '"label":{description}')
        self._routes: dict[str, tuple[tuple[object, ...], str]] = {}
        #: the route limiters' parts joined (None: to join again), and how many they were
        self._joined: bytes | None = None
        self._joined_count = -1
        #: route limiters (re-)encoded so far (tests count them), and the loop thread's CPU
        #: time `refresh` has spent (seconds)
        self.encoded = 0
        self.work_s = 0.0

    async def refresh(self, conc: ConcurrencyLimiter | None, budget_s: float = 0.0) -> bool:
        """Re-encode the route limiters whose figures changed, in slices of about `SLICE_S`
        of the loop's CPU with a yield between them; True once all are current. With a
        `budget_s` (> 0): in one stretch, stopping once that much CPU is spent (after at
        least `MIN_INLINE` limiters): False then, the others keep their last encoding."""
        if conc is None or not conc.ceiling_only:
            return True
        cache = self._routes
        started = time.thread_time()
        done = 0
        for label, limiter in list(conc.children.items()):
            sig = signature(limiter)
            cached = cache.get(label)
            if cached is not None and cached[0] == sig:
                continue
            self._encode(label, limiter, sig)
            done += 1
            if budget_s > 0.0:
                if done >= MIN_INLINE and time.thread_time() - started >= budget_s:
                    self.work_s += time.thread_time() - started
                    return False
            elif time.thread_time() - started >= SLICE_S:
                self.work_s += time.thread_time() - started
                await asyncio.sleep(0)
                started = time.thread_time()
        self.work_s += time.thread_time() - started
        return True

    def _encode(self, label: str, limiter: ConcurrencyLimiter, sig: tuple[object, ...]) -> None:
        self.encoded += 1
        self._routes[label] = (sig, f"{_compact(label)}:{_compact(limiter._describe())}")
        self._joined = None

    def chunks(self, conc: ConcurrencyLimiter | None) -> list[bytes]:
        """`json.dumps(conc.describe())` (compact) as UTF-8 chunks to send one after another:
        the route limiters as `refresh` last encoded them (a limiter new since then is
        encoded now); '{"mode":"off"}' without a limiter."""
        if conc is None:
            return [_OFF]
        if not conc.ceiling_only:
            return [_compact(conc.describe()).encode()]
        summary = _compact(conc.describe(routes=False))
        children = list(conc.children.items())
        cache = self._routes
        if len(children) != self._joined_count:
            for label, limiter in children:
                if label not in cache:
                    self._encode(label, limiter, signature(limiter))
        joined = self._joined
        if joined is None or len(children) != self._joined_count:
            joined = self._joined = ",".join([cache[label][1] for label, _ in children]).encode()
            self._joined_count = len(children)
        return [f'{summary[:-1]},"routes":{{'.encode(), joined, b"}}"]
