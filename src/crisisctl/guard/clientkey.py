"""Rate-limit keys: the client's IP address, believing X-Forwarded-For only from trusted proxies.

Without trusted proxies the key is the TCP peer address, which a client cannot forge. With
them, the X-Forwarded-For chain is read right to left, skipping trusted hops; the first
untrusted address is the client (the leftmost entries are client-supplied and never believed
on their own).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from crisisctl.guard.types import Scope

UNKNOWN = "unknown"


def peer_address(scope: Scope) -> str:
    """The TCP peer's address, or "unknown"."""
    client = scope.get("client")
    if client:
        host: str = client[0]
        return host
    return UNKNOWN


def client_key_function(trusted_proxies: Sequence[str]) -> Callable[[Scope], str]:
    """The default key function for the given trusted proxies."""
    if not trusted_proxies:
        return peer_address
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in networks)

    def forwarded_client(scope: Scope) -> str:
        peer = peer_address(scope)
        if not trusted(peer):
            return peer
        chain: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                chain.extend(part.strip() for part in value.decode("latin-1").split(","))
        for hop in reversed(chain):
            if hop and not trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer
        return chain[0] if chain and chain[0] else peer

    return forwarded_client
