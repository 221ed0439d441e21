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

The key depends only on the peer address and the header's values, so it is cached in a dict
keyed by them (`cache_size` entries of at most `CACHEABLE_BYTES` of header each, cleared when
full: a client sending a new header value per request costs a parse each, never memory); a
request then costs a header scan and one lookup instead of parsing addresses.
`forwarded_client_key` is the uncached computation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from crisisctl.guard.types import Scope

UNKNOWN = "unknown"
X_FORWARDED_FOR = "x-forwarded-for"
FORWARDED = "forwarded"
PROXY_HEADERS = (X_FORWARDED_FOR, FORWARDED)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: entries of a key function's (peer, header values) -> key cache
CACHE_SIZE = 4096
#: header values longer than this (in all) are parsed every time, never kept
CACHEABLE_BYTES = 512


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
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _address(entry: str) -> str | None:
    """An X-Forwarded-For entry: "" when empty (skipped), None when not an address."""
    entry = entry.strip()
    if not entry:
        return ""
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
        self.header = proxy_header.encode("latin-1")
        self.rfc7239 = proxy_header == FORWARDED
        self.cache_size = cache_size
        #: (peer, the header's value, or the tuple of its values when there are none or
        #: several) -> key; cleared when it holds `cache_size` entries
        self.cache: dict[tuple[str, Any], str] = {}

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        peer: str = client[0] if client else UNKNOWN
        header = self.header
        # the cache key: (peer, the one value) in the common case of one header line, else
        # (peer, tuple of the values): one tuple per request, no list
        first: Any = None
        many: list[Any] | None = None
        for name, value in scope.get("headers", ()):
            if name == header:
                if many is not None:
                    many.append(value)
                elif first is None:
                    first = value
                else:
                    many = [first, value]
        if many is not None:
            entry: tuple[str, Any] = (peer, tuple(many))
        elif first is not None:
            entry = (peer, first)
        else:
            entry = (peer, ())
        cache = self.cache
        try:
            hit = cache.get(entry)
        except TypeError:  # a header value that is not bytes (unhashable): compute, keep nothing
            return forwarded_client_key(peer, _values(entry[1]), self.networks, self.rfc7239)
        if hit is not None:
            return hit
        values = _values(entry[1])
        key = forwarded_client_key(peer, values, self.networks, self.rfc7239)
        if self.cache_size > 0 and sum(len(value) for value in values) <= CACHEABLE_BYTES:
            if len(cache) >= self.cache_size:
                cache.clear()
            cache[entry] = key
        return key


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
) -> str:
    """The key of a request from `peer` carrying the proxy header's `values` (uncached)."""

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not trusted(peer):
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
        if hop and not trusted(hop):
            return hop
    first = chain[0] if chain else None
    return first if first else peer  # every hop trusted: the farthest one
