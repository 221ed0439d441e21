"""The status document's "concurrency" part as JSON text, re-encoded only where it changed.

With per-route limits (`concurrency.scope="route"`) the part holds every route's limiter: at
500 routes, describing and encoding all of them took ~3 ms per status read, most of the read.
`LimitsJSON` keeps each route limiter's encoded description with the figures it was encoded
from (`signature`: everything `ConcurrencyLimiter._describe` reads that can change), and
re-encodes a limiter only when they differ: a read costs one tuple per route plus the
guard-wide summary. The text equals `json.dumps(limiter.describe())` (compact) of the same
state.
"""

from __future__ import annotations

import json

from crisisctl.guard.concurrency import ConcurrencyLimiter

_OFF = b'{"mode":"off"}'


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
        #: the route limiters' parts joined, and how many they were
        self._joined = b""
        self._joined_count = -1
        #: route limiters (re-)encoded so far (tests count them)
        self.encoded = 0

    def chunks(self, conc: ConcurrencyLimiter | None) -> list[bytes]:
        """`json.dumps(conc.describe())` (compact) as UTF-8 chunks to send one after another,
        re-encoding only the route limiters that changed; '{"mode":"off"}' without one."""
        if conc is None:
            return [_OFF]
        if not conc.ceiling_only:
            return [_compact(conc.describe()).encode()]
        summary = _compact(conc.describe(routes=False))
        cache = self._routes
        children = list(conc.children.items())
        changed = len(children) != self._joined_count
        for label, limiter in children:
            sig = signature(limiter)
            cached = cache.get(label)
            if cached is None or cached[0] != sig:
                self.encoded += 1
                cache[label] = (sig, f"{_compact(label)}:{_compact(limiter._describe())}")
                changed = True
        if changed:
            self._joined = ",".join([cache[label][1] for label, _ in children]).encode()
            self._joined_count = len(children)
        return [f'{summary[:-1]},"routes":{{'.encode(), self._joined, b"}}"]
