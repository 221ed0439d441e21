"""Client keys behind proxies: X-Forwarded-For and RFC 7239 Forwarded, believed only from
trusted proxies and only the header they are configured to write (issue 14, point 8)."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.clientkey import (
    ForwardedClientKey,
    client_key_function,
    forwarded_for,
    ipv4_networks,
    ipv4_value,
    is_trusted,
    node_address,
)
from crisisctl.guard.types import Scope

PROXY = "10.0.0.1"


def scope(peer: str, *headers: tuple[str, str]) -> Scope:
    return {
        "type": "http",
        "client": (peer, 4000),
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }


def test_forwarded_examples_of_rfc_7239() -> None:
    assert forwarded_for('for="_gazonk"') == ["_gazonk"]
    assert forwarded_for('For="[2001:db8:cafe::17]:4711"') == ["[2001:db8:cafe::17]:4711"]
    assert forwarded_for("for=192.0.2.60;proto=http;by=203.0.113.43") == ["192.0.2.60"]
    assert forwarded_for("for=192.0.2.43, for=198.51.100.17") == ["192.0.2.43", "198.51.100.17"]
    assert forwarded_for("proto=https;by=10.0.0.1, for=unknown") == [None, "unknown"]
    assert forwarded_for('for="a,b;c";by=x, for=1.2.3.4') == ["a,b;c", "1.2.3.4"]
    assert forwarded_for('for="\\"x\\""') == ['"x"']
    assert forwarded_for("") == [None]
    assert forwarded_for(";;=,=;") == [None, None]


def test_node_addresses() -> None:
    assert node_address("192.0.2.60") == "192.0.2.60"
    assert node_address("192.0.2.60:8080") == "192.0.2.60"
    assert node_address("[2001:db8:cafe::17]:4711") == "2001:db8:cafe::17"
    assert node_address("[2001:DB8::1]") == "2001:db8::1"
    assert node_address("2001:db8::1") == "2001:db8::1"  # unbracketed, lenient
    assert node_address("192.0.2.60:_port") == "192.0.2.60"
    for junk in ("unknown", "_hidden", "", None, "[::1", "example.com", "1.2.3.4.5"):
        assert node_address(junk) is None


def test_forwarded_is_believed_from_trusted_proxies_only() -> None:
    key = client_key_function([PROXY], "forwarded")
    header = ("Forwarded", 'for="[2001:db8::7]:5000";proto=https')
    assert key(scope(PROXY, header)) == "2001:db8::7"
    assert key(scope("203.0.113.9", header)) == "203.0.113.9"  # not a proxy: the peer
    # a forged element prepended by the client changes nothing: the rightmost untrusted wins
    forged = ("Forwarded", f"for=9.9.9.9, for=1.1.1.1, for={PROXY}")
    assert key(scope(PROXY, forged)) == "1.1.1.1"
    # obfuscated or unknown: the proxy's own bucket, as for garbage in X-Forwarded-For
    assert key(scope(PROXY, ("Forwarded", "for=_hidden"))) == PROXY
    assert key(scope(PROXY, ("Forwarded", "for=unknown"))) == PROXY
    assert key(scope(PROXY)) == PROXY
    # several header lines form one list, in order
    lines = ("Forwarded", "for=5.5.5.5"), ("Forwarded", "for=6.6.6.6")
    assert key(scope(PROXY, *lines)) == "6.6.6.6"


def test_only_the_configured_header_is_read() -> None:
    """A proxy writing one header passes the other through from the client: believing both
    would let any client choose its key."""
    both = ("X-Forwarded-For", "7.7.7.7"), ("Forwarded", "for=8.8.8.8")
    assert client_key_function([PROXY], "x-forwarded-for")(scope(PROXY, *both)) == "7.7.7.7"
    assert client_key_function([PROXY], "forwarded")(scope(PROXY, *both)) == "8.8.8.8"


def test_the_guard_takes_the_header_from_its_configuration() -> None:
    async def app(scope: Scope, receive: object, send: object) -> None:  # pragma: no cover
        pass

    guard = Guard(app, GuardConfig(token="", trusted_proxies=(PROXY,), proxy_header="forwarded"))
    assert guard._key(scope(PROXY, ("Forwarded", "for=4.4.4.4"))) == "4.4.4.4"


# -- properties --------------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.one_of(st.integers(min_value=1, max_value=65535).map(str), st.just("_p0rt"))
obfuscated = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=10).map(
    lambda s: "_" + s
)


@st.composite
def nodes(draw: st.DrawFn) -> tuple[str, str | None]:
    """(node as written in a Forwarded header, its IP address or None)."""
    kind = draw(st.sampled_from(["v4", "v6", "unknown", "obfuscated"]))
    with_port = draw(st.booleans())
    if kind == "v4":
        ip = draw(ipv4)
        return (f"{ip}:{draw(port)}" if with_port else ip), ip
    if kind == "v6":
        ip = draw(ipv6)
        return (f"[{ip}]:{draw(port)}" if with_port else f"[{ip}]"), ip
    if kind == "unknown":
        return "unknown", None
    return draw(obfuscated), None


def needs_quotes(node: str) -> bool:
    return any(c in node for c in ':[]"')


@st.composite
def elements(draw: st.DrawFn) -> tuple[str, str | None, str | None]:
    """(one Forwarded element, its `for` node or None, that node's address or None)."""
    has_for = draw(st.integers(0, 4)) > 0  # mostly with a `for`
    node, address = draw(nodes())
    quote = needs_quotes(node) or draw(st.booleans())
    value = f'"{node}"' if quote else node
    name = draw(st.sampled_from(["for", "For", "FOR"]))
    pairs = [f"{name}={value}"] if has_for else []
    for extra in draw(st.lists(st.sampled_from(["proto=https", 'by="[::1]:80"', "host=a.b"]))):
        pairs.insert(draw(st.integers(0, len(pairs))), extra)
    space = draw(st.sampled_from(["", " "]))
    return (
        (space + ";".join(pairs) + space),
        (node if has_for else None),
        (address if has_for else None),
    )


@given(st.lists(elements(), min_size=1, max_size=6))
def test_forwarded_parses_every_well_formed_header(items: list[tuple[str, Any, Any]]) -> None:
    header = ",".join(text for text, _, _ in items)
    assert forwarded_for(header) == [node for _, node, _ in items]
    assert [node_address(n) for n in forwarded_for(header)] == [a for _, _, a in items]


trusted_net = ipaddress.ip_network("10.0.0.0/8")
hop = st.one_of(ipv4, ipv6, st.sampled_from(["10.0.0.2", "10.1.2.3"]))


@given(st.lists(hop, min_size=0, max_size=6), st.sampled_from(["10.0.0.1", "203.0.113.5"]))
def test_forwarded_and_x_forwarded_for_agree_on_every_chain(chain: list[str], peer: str) -> None:
    xff = client_key_function(["10.0.0.0/8"], "x-forwarded-for")
    rfc = client_key_function(["10.0.0.0/8"], "forwarded")
    as_xff = ("X-Forwarded-For", ", ".join(chain)) if chain else None
    as_rfc = (
        ("Forwarded", ", ".join(f'for="[{h}]:1"' if ":" in h else f"for={h}" for h in chain))
        if chain
        else None
    )
    key_xff = xff(scope(peer, *([as_xff] if as_xff else [])))
    key_rfc = rfc(scope(peer, *([as_rfc] if as_rfc else [])))
    assert key_xff == key_rfc
    untrusted = [h for h in chain if ipaddress.ip_address(h) not in trusted_net]
    if peer != "10.0.0.1":
        assert key_xff == peer
    elif untrusted:
        assert key_xff == str(ipaddress.ip_address(untrusted[-1]))


# -- the cache (issue 14, point 13: parsing addresses per request was most of the key's cost) ----

header_value = st.one_of(
    st.lists(st.one_of(hop, st.sampled_from(["unknown", "garbage", " ", ""])), max_size=4).map(
        ", ".join
    ),
    st.lists(elements(), min_size=1, max_size=3).map(lambda xs: ",".join(t for t, _, _ in xs)),
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.9.9.9", "203.0.113.5", "2001:db8::1"]),
            st.lists(header_value, max_size=2),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["x-forwarded-for", "forwarded"]),
    st.integers(min_value=1, max_value=4),
)
def test_the_cached_key_equals_the_uncached_one(
    requests: list[tuple[str, list[str]]], header: str, cache_size: int
) -> None:
    """Same requests (repeated, so that some hit) into a small cache and into no cache."""
    cached = client_key_function(["10.0.0.0/8"], header, cache_size=cache_size)
    uncached = client_key_function(["10.0.0.0/8"], header, cache_size=0)
    for peer, values in requests + requests:
        request = scope(peer, *[(header, v) for v in values])
        assert cached(request) == uncached(request)
    assert isinstance(cached, ForwardedClientKey)
    assert len(cached.cached()) == cached.size <= cache_size


def test_a_repeated_client_is_parsed_once() -> None:
    """Repeats are answered from the cache (marked here), never parsed again. (The cache is
    observed rather than `forwarded_client_key` patched: compiled, the module calls it
    directly.)"""
    key = client_key_function([PROXY])
    assert isinstance(key, ForwardedClientKey)
    assert key(scope(PROXY, ("X-Forwarded-For", "4.4.4.4"))) == "4.4.4.4"
    assert key(scope(PROXY, ("X-Forwarded-For", "5.5.5.5"))) == "5.5.5.5"
    assert key.cached() == {(PROXY, b"4.4.4.4"): "4.4.4.4", (PROXY, b"5.5.5.5"): "5.5.5.5"}
    for by_value in key.cache.values():
        for value in by_value:
            by_value[value] = "cached " + by_value[value]
    for _ in range(2):
        assert key(scope(PROXY, ("X-Forwarded-For", "4.4.4.4"))) == "cached 4.4.4.4"
        assert key(scope(PROXY, ("X-Forwarded-For", "5.5.5.5"))) == "cached 5.5.5.5"
    assert len(key.cached()) == key.size == 2


def test_the_cache_is_bounded_whatever_the_clients_send() -> None:
    """A client inventing a header value per request (or a huge one) cannot grow memory."""
    key = client_key_function([PROXY], cache_size=100)
    assert isinstance(key, ForwardedClientKey)
    for i in range(1000):
        assert key(scope(PROXY, ("X-Forwarded-For", f"4.4.{i // 256}.{i % 256}"))) == (
            f"4.4.{i // 256}.{i % 256}"
        )
        assert len(key.cached()) == key.size <= 100
    key.cache.clear()
    key.size = 0
    huge = ", ".join(["4.4.4.4"] * 1000)
    assert key(scope(PROXY, ("X-Forwarded-For", huge))) == "4.4.4.4"
    assert key.cached() == {}
    for i in range(1000):  # a new peer per request: the peers' dicts count in the bound too
        assert key(scope(f"4.4.{i // 256}.{i % 256}")) == f"4.4.{i // 256}.{i % 256}"
        assert len(key.cached()) == key.size <= 100 and len(key.cache) <= 100


# -- the IPv4 shortcut of a cache miss (issue 14, point 13) ------------------------------------

dotted = st.lists(
    st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "", "1a", " 1"])),
    min_size=1,
    max_size=5,
).map(".".join)
address_text = st.one_of(dotted, ipv4, ipv6, st.text(alphabet="0123456789.: abcdef٣", max_size=16))
networks = st.lists(
    st.sampled_from(["10.0.0.0/8", "10.1.2.3", "0.0.0.0/0", "192.0.2.128/25", "2001:db8::/32"]),
    min_size=1,
    max_size=3,
).map(lambda nets: [ipaddress.ip_network(n) for n in nets])


def _reference_ipv4(text: str) -> int:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return -1
    return int(ip) if ip.version == 4 and str(ip) == text else -1


@given(address_text)
def test_ipv4_value_reads_exactly_the_canonical_ipv4_addresses(text: str) -> None:
    assert ipv4_value(text) == _reference_ipv4(text)


@given(st.one_of(address_text, address_text.map(lambda t: f" {t} ")), networks)
def test_the_trust_shortcut_equals_ipaddress(text: str, nets: list[Any]) -> None:
    try:
        ip = ipaddress.ip_address(text.strip())
        expected = any(ip in net for net in nets)
    except ValueError:
        expected = False
    assert is_trusted(text, nets, ipv4_networks(nets)) is expected


def test_ipv4_value_examples() -> None:
    assert ipv4_value("10.20.0.1") == int(ipaddress.ip_address("10.20.0.1"))
    assert ipv4_value("255.255.255.255") == 2**32 - 1
    assert ipv4_value("0.0.0.0") == 0
    for text in ("1.2.3.256", "1.2.3.01", "1.2.3", "1.2.3.4.5", "1..3.4", " 1.2.3.4", "1.2.3.٣"):
        assert ipv4_value(text) == -1, text
