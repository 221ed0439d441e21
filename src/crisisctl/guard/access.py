"""Who may read the guard's control surface, and how often.

`<prefix>/health` is open to everyone: it reveals only "ok" and the mode, and load balancers
must reach it. Status, metrics and the mode history reveal the pid, the limits and every route
name, and cost the service some work, so by default (``control_read="trusted"``) they answer
only to

  * a client whose address lies in `control_networks` (loopback, RFC 1918, fc00::/7 and
    link-local by default), or
  * a request carrying ``Authorization: Bearer <read token>`` (the write token works too),
    compared in constant time.

Anyone else gets 403 (401 when a wrong token was sent). ``control_read="open"`` lets anyone read.

The client address is the TCP peer's, or, only when the peer is one of `trusted_proxies`, the
forwarded client that `clientkey` finds. A request that carries forwarding headers from a peer
that is *not* a trusted proxy is refused without a token: it came through a proxy the guard
cannot see past (say nginx on loopback), so its real origin is unknown and may be public.

Status and metrics, the reads that cost the service work, and every ``POST mode`` (a switch
or an attempt with a wrong token) also pass a small per-client GCRA limit of their own
(`control_rate_limit`, 10/second by default) answering 429 with Retry-After. Health and the
mode history are cheap and stay unlimited, so polling them is fine.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crisisctl.guard.clientkey import client_key_function, peer_address
from crisisctl.guard.config import GuardConfig, parse_limits
from crisisctl.guard.ratelimit import MemoryRateLimiter, RateLimitPolicy
from crisisctl.guard.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: request headers by which a proxy tells the client's address
FORWARDING_HEADERS = frozenset((b"x-forwarded-for", b"forwarded", b"x-real-ip"))


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer refusing a control request: status, JSON payload, extra headers."""

    status: int
    payload: dict[str, Any]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    retry_after: float | None = None


def bearer(scope: Scope) -> bytes | None:
    """The bearer token of the request's Authorization header, if any."""
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token:
                stripped: bytes = token.strip()
                return stripped
    return None


def parse_address(text: str) -> Address | None:
    """An IP address (IPv4-mapped IPv6 unwrapped), or None when `text` is not one."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ControlAccess:
    """Decides, for one control request, whether to answer it (None) or how to refuse it."""

    def __init__(
        self,
        config: GuardConfig,
        *,
        read_token: bytes | None,
        write_token: bytes | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.open = config.control_read == "open"
        self.tokens = tuple(t for t in (read_token, write_token) if t)
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in config.control_networks
        )
        self._proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies
        )
        self._forwarded_client = client_key_function(config.trusted_proxies)
        self._clock = clock
        self.limiter: MemoryRateLimiter | None = None
        if config.control_rate_limit:
            policy = RateLimitPolicy("control", parse_limits(config.control_rate_limit), "gcra")
            self.limiter = MemoryRateLimiter(policy)
        self._prefix = config.prefix

    # -- who is asking ---------------------------------------------------------------------
    def client(self, scope: Scope) -> str:
        """The client's address: the peer's, or the forwarded one behind a trusted proxy."""
        if self._proxies and self._is_proxy(peer_address(scope)):
            return self._forwarded_client(scope)
        return peer_address(scope)

    def _is_proxy(self, address: str) -> bool:
        ip = parse_address(address)
        return ip is not None and any(ip in net for net in self._proxies)

    def trusted_origin(self, scope: Scope) -> bool:
        """Whether the request comes from a trusted network (see the module docstring)."""
        peer = peer_address(scope)
        if self._proxies and self._is_proxy(peer):
            address = self._forwarded_client(scope)
        else:
            if any(key in FORWARDING_HEADERS for key, _ in scope.get("headers", ())):
                return False  # forwarded by a proxy the guard does not trust: origin unknown
            address = peer
        ip = parse_address(address)
        return ip is not None and any(ip in net for net in self.networks)

    def token_ok(self, scope: Scope) -> bool | None:
        """True for a valid read or write token, False for a wrong one, None when none sent."""
        given = bearer(scope)
        if given is None:
            return None
        ok = False
        for token in self.tokens:  # every token compared: no early exit on a match
            ok |= hmac.compare_digest(given, token)
        return ok

    # -- decisions -------------------------------------------------------------------------
    def check_rate(self, scope: Scope) -> Refusal | None:
        """The control surface's own rate limit, per client address."""
        limiter = self.limiter
        if limiter is None:
            return None
        now = self._clock()
        limiter.rotate(now)
        decision = limiter.hit(self.client(scope), now)
        if decision.allowed:
            return None
        limit = limiter.policy.limits[decision.limit_index]
        return Refusal(
            429,
            {"error": f"too many requests to the control surface ({limit.amount} per "
                      f"{limit.period:g} s per client); retry after the Retry-After delay",
             "reason": "rate_limited"},
            retry_after=decision.retry_after_s,
        )  # fmt: skip

    def check_read(self, scope: Scope) -> Refusal | None:
        """Whether this client may read status, metrics and the mode history."""
        if self.open:
            return None
        token = self.token_ok(scope)
        if token or self.trusted_origin(scope):
            return None  # (a wrong token from a trusted network may be the app's own bearer)
        if token is False and self.tokens:
            return Refusal(
                401,
                {"error": "wrong bearer token: send 'Authorization: Bearer <token>' with the "
                          "guard's read token (read_token) or its write token (token)"},
                headers=[(b"www-authenticate", b'Bearer realm="crisisctl"')],
            )  # fmt: skip
        return Refusal(
            403,
            {"error": f"reading {self._prefix} is allowed from loopback and private networks "
                      "only: send 'Authorization: Bearer <token>' with the guard's read token "
                      "(GuardConfig(read_token=…) or CRISISCTL_GUARD_READ_TOKEN), list your "
                      "proxy in trusted_proxies, or set control_read='open'"},
        )  # fmt: skip
