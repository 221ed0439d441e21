"""Client tiers: who a request is (a key) and which class of client it belongs to (a tier).

A *tiered key function* takes the ASGI scope and returns either a key (``"10.0.0.7"``) or a
key and a tier (``("apikey:3f2a…", "pro")``): the tier comes from something the service has
verified, e.g. a signed token's claim or a table of API keys (`ApiKeyTable` is such a key
function). `TierTable` turns the configured `TierConfig`s into per-request lookups:

* `TierTable.identify(scope)` -> `ClientIdentity(key, tier)`. A key function that raises, or
  returns something that is not a key, puts the request under the fallback key (its peer
  address) in the default tier and logs why, at most once per `LOG_INTERVAL_S` per reason:
  a broken key function never fails a request nor floods the log. A tier the table does not
  know is the default tier too (logged the same way).
* `TierTable.rate_limit(tier, route_limit)` -> the limit string the rate limiter applies;
* `TierTable.max_concurrent_per_key(tier, rule_value, emergency)` -> the per-key quota.

Nothing here does I/O: every lookup is a dict access.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from crisisctl.guard.clientkey import peer_address
from crisisctl.guard.config import TierConfig
from crisisctl.guard.types import Scope

__all__ = [
    "ApiKeyTable",
    "ClientIdentity",
    "RateLimitedLog",
    "TierTable",
    "TieredKeyFunc",
    "api_key_id",
]

log = logging.getLogger("crisisctl.guard")

#: a key function that may also name the tier: scope -> key, or scope -> (key, tier)
TieredKeyFunc = Callable[[Scope], "str | tuple[str, str]"]
#: at most one log line per reason in this many seconds
LOG_INTERVAL_S = 60.0
#: distinct reasons remembered by a RateLimitedLog (then it forgets them all)
_MAX_REASONS = 256


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The key a request is counted under and its tier."""

    key: str
    tier: str


class RateLimitedLog:
    """Warnings at most once per `interval_s` per reason, with how many were suppressed."""

    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        #: reason -> (monotonic time of the last line, occurrences suppressed since)
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, reason: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `reason` was logged less than `interval_s` ago."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last[0] < self.interval_s:
            self._last[reason] = (last[0], last[1] + 1)
            return False
        if len(self._last) >= _MAX_REASONS:
            self._last.clear()
        suppressed = last[1] if last is not None else 0
        self._last[reason] = (now, 0)
        if suppressed:
            message += " (%d more like it suppressed)"
            args = (*args, suppressed)
        log.warning(message, *args)
        return True


class TierTable:
    """The configured tiers, looked up per request."""

    def __init__(
        self,
        tiers: Iterable[TierConfig] = (),
        default_tier: str = "free",
        *,
        key_func: TieredKeyFunc | None = None,
        warnings: RateLimitedLog | None = None,
    ) -> None:
        self.tiers: dict[str, TierConfig] = {tier.name: tier for tier in tiers}
        self.default_tier = default_tier
        self.key_func: TieredKeyFunc = key_func if key_func is not None else peer_address
        self.warnings = warnings if warnings is not None else RateLimitedLog()
        #: requests identified per tier (bounded: configured tiers and the default one)
        self.seen: dict[str, int] = {}

    def tier_of(self, name: str | None) -> str:
        """`name` if it is a configured tier (or the default one), else the default tier."""
        if name is None or name == self.default_tier:
            return self.default_tier
        if name in self.tiers:
            return name
        self.warnings.warning(
            "unknown-tier",
            "the key function named tier %r, which is not configured; using tier %r "
            "(configure it under `tiers`)",
            name[:40],
            self.default_tier,
        )
        return self.default_tier

    def identify(self, scope: Scope) -> ClientIdentity:
        """The request's key and tier; never raises (see the module docstring)."""
        identity = self._identify(scope)
        seen = self.seen
        seen[identity.tier] = seen.get(identity.tier, 0) + 1
        return identity

    def _identify(self, scope: Scope) -> ClientIdentity:
        try:
            found = self.key_func(scope)
        except Exception as exc:
            self.warnings.warning(
                "key-func-raised:" + type(exc).__name__,
                "the key function raised %s; the request is counted under its peer "
                "address in tier %r",
                type(exc).__name__,
                self.default_tier,
            )
            return ClientIdentity(peer_address(scope), self.default_tier)
        if type(found) is str:
            return ClientIdentity(found, self.default_tier)
        if (
            isinstance(found, tuple)
            and len(found) == 2
            and isinstance(found[0], str)
            and isinstance(found[1], str)
        ):
            return ClientIdentity(found[0], self.tier_of(found[1]))
        self.warnings.warning(
            "key-func-result",
            "the key function returned a %s, not a key or a (key, tier) pair of strings; "
            "the request is counted under its peer address in tier %r",
            type(found).__name__,
            self.default_tier,
        )
        return ClientIdentity(peer_address(scope), self.default_tier)

    def rate_limit(self, tier: str, route_limit: str | None) -> str | None:
        """The rate limit for a request of `tier` on a route whose own limit is `route_limit`."""
        config = self.tiers.get(tier)
        if config is not None and config.rate_limit is not None:
            return config.rate_limit
        return route_limit

    def max_concurrent_per_key(
        self,
        tier: str,
        rule_value: int | None,
        *,
        emergency: bool = False,
        emergency_rule_value: int | None = None,
        emergency_factor: float = 0.5,
    ) -> int | None:
        """The per-key quota of `tier` on a route whose rule sets `rule_value` (None: none).

        In emergency: the tier's emergency value, else the rule's emergency value (when the
        tier sets no normal value of its own), else the normal value times `emergency_factor`
        (at least 1).
        """
        config = self.tiers.get(tier)
        normal = rule_value
        if config is not None and config.max_concurrent_per_key is not None:
            normal = config.max_concurrent_per_key
        if not emergency:
            return normal
        if config is not None and config.emergency_max_concurrent_per_key is not None:
            return config.emergency_max_concurrent_per_key
        if emergency_rule_value is not None and (
            config is None or config.max_concurrent_per_key is None
        ):
            return emergency_rule_value
        return tightened(normal, emergency_factor)


def tightened(value: int | None, factor: float) -> int | None:
    """`value` times `factor`, rounded down, at least 1 (None stays None)."""
    if value is None:
        return None
    return max(1, int(value * factor))


def api_key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key: ``apikey:`` + 16 hex digits of its SHA-256.

    Keys end up in Redis key names, metrics and logs; the secret itself never does.
    """
    return "apikey:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class ApiKeyTable:
    """A tiered key function reading an API key from a header and its tier from a table.

        ApiKeyTable({"k-123": "pro", "k-ops": "internal"}, header="x-api-key")

    A request with a known key is counted under `api_key_id(key)` in that key's tier; one
    without the header, or with a key not in the table, under its peer address in
    `anonymous_tier` (None: the table's default tier; the key is not believed, so an unknown
    key never buys a tier of its own). The table holds only SHA-256 digests of the keys.
    """

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        header: str = "x-api-key",
        anonymous_tier: str | None = None,
    ) -> None:
        self.header = header.lower().encode("latin-1")
        self.anonymous_tier = anonymous_tier
        #: sha256 digest of a key -> (its id, its tier)
        self._by_digest: dict[bytes, tuple[str, str]] = {
            hashlib.sha256(key.encode()).digest(): (api_key_id(key), tier)
            for key, tier in keys.items()
        }

    def __call__(self, scope: Scope) -> str | tuple[str, str]:
        for name, value in scope.get("headers", ()):
            if name == self.header:
                found = self._by_digest.get(hashlib.sha256(value.strip()).digest())
                if found is not None:
                    return found
                break
        if self.anonymous_tier is None:
            return peer_address(scope)
        return (peer_address(scope), self.anonymous_tier)
