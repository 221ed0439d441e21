"""Rate-limit keys: the client's IP address, believing proxy headers only from trusted proxies.

Without trusted proxies the key is the TCP peer address, which a client cannot forge. With
them, the chain of addresses the proxies recorded is read right to left, skipping trusted
hops; the first untrusted entry is the client (the leftmost entries are client-supplied and
never believed on their own). An entry that is not an IP address (garbage, RFC 7239's
``unknown`` or an obfuscated ``_identifier``) stops the walk: the key is then the peer.

The chain comes from the one header the proxies are configured to write (`proxy_header`):

* ``x-forwarded-for`` (the default): ``X-Forwarded-For: client, proxy1, proxy2``;
* ``forwarded`` (RFC 7239): ``Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"``
  — each element's ``for`` parameter, a token or a quoted string, IPv6 in brackets, an
  optional port.

Only one of them is read, never both: a proxy that writes one passes the other through from
the client untouched, so believing both would let any client pick its own key.

The key depends only on the peer address and the header's values, so it is cached: per peer,
a dict keyed by the header's value (or the tuple of its values when there are none or several),
`cache_size` entries in all of at most `CACHEABLE_BYTES` of header each, cleared when full (a
client sending a new header value per request costs a parse each, never memory). A request then
costs a header scan and two lookups instead of parsing addresses; keyed by the value alone (the
peer is the proxy's, the same for every client behind it), a lookup builds, hashes and compares
no (peer, value) tuple.
`forwarded_client_key` is the uncached computation. A miss (a new client, or more clients than
the cache holds) reads IPv4 addresses in their canonical dotted-quad form with `ipv4_value`
and checks them against the trusted IPv4 networks as integers; anything else (IPv6, odd forms)
goes through `ipaddress`, whose verdicts those shortcuts must equal (tests/unit/
test_clientkey.py pins them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, Final

from crisisctl.guard.types import Scope

UNKNOWN: Final = "unknown"
X_FORWARDED_FOR: Final = "x-forwarded-for"
FORWARDED: Final = "forwarded"
PROXY_HEADERS = (X_FORWARDED_FOR, FORWARDED)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: entries of a key function's (peer, header values) -> key cache
CACHE_SIZE: Final = 4096
#: header values longer than this (in all) are parsed every time, never kept
CACHEABLE_BYTES: Final = 512
#: (network address, netmask) of trusted IPv4 networks, as integers
IPv4Nets = Sequence[tuple[int, int]]
_ZERO: Final = 48  # ord("0")
_NINE: Final = 57
_DOT: Final = 46
#: the cache of a peer not seen yet (never written)
_NOTHING: Final[dict[Any, str]] = {}


def ipv4_value(text: str) -> int:
    """The 32-bit value of `text` when it is an IPv4 address written canonically (four
    decimal octets 0-255 without leading zeros: what ``str(ipaddress.ip_address(text))``
    gives back unchanged), else -1 (not IPv4, or a form left to `ipaddress`)."""
    if len(text) < 7 or len(text) > 15:
        return -1
    value = 0
    octet = 0
    digits = 0
    dots = 0
    for char in text:
        code = ord(char)
        if code == _DOT:
            if digits == 0 or dots == 3:
                return -1
            value = (value << 8) | octet
            octet = 0
            digits = 0
            dots += 1
        elif _ZERO <= code <= _NINE:
            if digits and octet == 0:
                return -1  # a leading zero
            octet = octet * 10 + code - _ZERO
            if octet > 255:
                return -1
            digits += 1
        else:
            return -1
    if dots != 3 or digits == 0:
        return -1
    return (value << 8) | octet


def ipv4_networks(networks: Sequence[IPNetwork]) -> list[tuple[int, int]]:
    """The IPv4 networks among `networks`, as (network address, netmask) integers."""
    return [
        (int(net.network_address), int(net.netmask))
        for net in networks
        if isinstance(net, ipaddress.IPv4Network)
    ]


def is_trusted(address: str, networks: Sequence[IPNetwork], v4: IPv4Nets) -> bool:
    """Whether `address` (surrounding spaces allowed) lies in one of the trusted `networks`
    (`v4`: their IPv4 ones, from `ipv4_networks`); False when it is not an address."""
    value = ipv4_value(address)
    if value >= 0:
        return any(value & mask == network for network, mask in v4)
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def peer_address(scope: Scope) -> str:
    """The TCP peer's address, or "unknown"."""
    client = scope.get("client")
    if client:
        host: str = client[0]
        return host
    return UNKNOWN


def forwarded_for(value: str) -> list[str | None]:
    """The ``for`` node of each element of a ``Forwarded`` header value (RFC 7239), as written
    (unquoted, brackets and port kept); None for an element without one.

    A lenient reader: a malformed pair is skipped, never an error, and a comma or semicolon
    inside a quoted string does not split.
    """
    nodes: list[str | None] = []
    node: str | None = None
    i, n = 0, len(value)
    while i <= n:
        if i == n or value[i] == ",":
            nodes.append(node)
            node = None
            i += 1
            continue
        # one pair: token "=" (token | quoted-string), up to ";" or ","
        j = i
        while j < n and value[j] not in "=;,":
            j += 1
        name = value[i:j].strip().lower()
        if j < n and value[j] == "=":
            j += 1
            while j < n and value[j] in " \t":
                j += 1
            if j < n and value[j] == '"':
                chars: list[str] = []
                j += 1
                while j < n and value[j] != '"':
                    if value[j] == "\\" and j + 1 < n:
                        j += 1
                    chars.append(value[j])
                    j += 1
                j += 1  # the closing quote
                text = "".join(chars)
            else:
                k = j
                while j < n and value[j] not in ";,":
                    j += 1
                text = value[k:j].strip()
            if name == "for" and node is None:
                node = text
            while j < n and value[j] not in ";,":
                j += 1  # anything after a quoted string, up to the next separator
        if j < n and value[j] == ";":
            j += 1
        i = j
    return nodes


def node_address(node: str | None) -> str | None:
    """The IP address of an RFC 7239 node (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), or None
    for ``unknown``, an obfuscated identifier, a missing node or garbage."""
    if not node:
        return None
    node = node.strip()
    if node.startswith("["):
        end = node.find("]")
        host = node[1:end] if end > 0 else ""
    elif node.count(":") == 1:
        host = node.partition(":")[0]  # IPv4 with a port
    else:
        host = node
    if ipv4_value(host) >= 0:
        return host  # already canonical
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _address(entry: str) -> str | None:
    """An X-Forwarded-For entry: "" when empty (skipped), None when not an address."""
    entry = entry.strip()
    if not entry:
        return ""
    if ipv4_value(entry) >= 0:
        return entry  # already canonical
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_key_function(
    trusted_proxies: Sequence[str],
    proxy_header: str = X_FORWARDED_FOR,
    *,
    cache_size: int = CACHE_SIZE,
) -> Callable[[Scope], str]:
    """The default key function for the given trusted proxies and the header they write.

    Its results are cached per (peer, header values), at most `cache_size` of them (0: none).
    """
    if not trusted_proxies:
        return peer_address
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
    return ForwardedClientKey(networks, proxy_header, cache_size)


class ForwardedClientKey:
    """The key function behind trusted proxies: `forwarded_client_key`, cached."""

    def __init__(
        self,
        networks: Sequence[IPNetwork],
        proxy_header: str = X_FORWARDED_FOR,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.networks = list(networks)
        self.v4 = ipv4_networks(self.networks)
        self.header = proxy_header.encode("latin-1")
        self.rfc7239 = proxy_header == FORWARDED
        self.cache_size = cache_size
        #: peer -> (the header's value, or the tuple of its values when there are none or
        #: several) -> key; cleared when it holds `cache_size` entries in all (`size`)
        self.cache: dict[str, dict[Any, str]] = {}
        self.size = 0

    def __call__(self, scope: Scope) -> str:
        found: Any
        if isinstance(scope, dict):  # (always, from ASGI servers: compiled dict access)
            client = scope.get("client")
            found = scope.get("headers", ())
        else:
            client = scope.get("client")
            found = scope.get("headers", ())
        peer: str = client[0] if client else UNKNOWN
        header = self.header
        first: Any = None
        many: list[Any] | None = None
        # a list of (name, value) tuples from the servers: compiled list and tuple access
        headers: list[Any] = found if isinstance(found, list) else list(found)
        for item in headers:
            pair: tuple[Any, ...] = item if isinstance(item, tuple) else tuple(item)
            if pair[0] == header:
                value = pair[1]
                if many is not None:
                    many.append(value)
                elif first is None:
                    first = value
                else:
                    many = [first, value]
        # the cache key under the peer: the one value in the common case of one header line,
        # else the tuple of the values
        found_values: Any = tuple(many) if many is not None else first if first is not None else ()
        by_value = self.cache.get(peer)
        try:
            hit = (by_value if by_value is not None else _NOTHING).get(found_values)
        except TypeError:  # a header value that is not bytes (unhashable): compute, keep nothing
            return forwarded_client_key(
                peer, _values(found_values), self.networks, self.rfc7239, self.v4
            )
        if hit is not None:
            return hit
        values = _values(found_values)
        key = forwarded_client_key(peer, values, self.networks, self.rfc7239, self.v4)
        if self.cache_size > 0 and sum(len(value) for value in values) <= CACHEABLE_BYTES:
            if self.size >= self.cache_size:
                self.cache.clear()
                self.size = 0
                by_value = None
            if by_value is None:
                by_value = self.cache[peer] = {}
            by_value[found_values] = key
            self.size += 1
        return key

    def cached(self) -> dict[tuple[str, Any], str]:
        """The cache's entries as (peer, header value or values) -> key (for tests and
        debugging: a copy)."""
        return {
            (peer, found): key
            for peer, by_value in self.cache.items()
            for found, key in by_value.items()
        }


def _values(found: Any) -> tuple[Any, ...]:
    """The proxy header's values from a cache key's second item (a tuple of them, or the one)."""
    if type(found) is tuple:
        return found
    return (found,)


def forwarded_client_key(
    peer: str,
    values: Sequence[bytes],
    networks: Sequence[IPNetwork],
    rfc7239: bool,
    v4: IPv4Nets | None = None,
) -> str:
    """The key of a request from `peer` carrying the proxy header's `values` (uncached);
    `v4`: `ipv4_networks(networks)`, when the caller keeps it."""
    if v4 is None:
        v4 = ipv4_networks(networks)
    if not is_trusted(peer, networks, v4):
        return peer
    chain: list[str | None] = []
    for value in values:
        text = value.decode("latin-1")
        if rfc7239:
            chain.extend(node_address(node) for node in forwarded_for(text))
        else:
            chain.extend(_address(part) for part in text.split(","))
    for hop in reversed(chain):
        if hop is None:
            return peer  # unparsable, unknown or obfuscated: the proxy's own bucket
        if hop and not is_trusted(hop, networks, v4):
            return hop
    first = chain[0] if chain else None
    return first if first else peer  # every hop trusted: the farthest one
