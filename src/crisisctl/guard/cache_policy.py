"""What the response cache may store and serve: Cache-Control, keys, freshness (RFC 9111).

Pure rules, no I/O and no clock of their own (the caller passes `now`, wall-clock seconds).

Cache-Control (§5.2): a comma-separated list of directives, ``name`` or ``name=value`` with
the value a token or a quoted string; names are case-insensitive. A repeated or malformed
delta-seconds directive (``max-age=abc``) is taken as 0, the conservative reading §4.2.1 asks
for; an unknown directive is ignored.

Keys. A request's *primary key* is ``PATH?QUERY`` followed by one ``|name=value`` per keyed
request header. QUERY holds the rule's query parameters (all of them when the rule names none),
sorted, each re-encoded, so ``?b=2&a=1`` and ``?a=1&b=2`` share an entry. The path comes first
so that invalidating by a key prefix (``/api/items``) drops every entry under a path. A
response with ``Vary`` is stored under the *variant key* ``PRIMARY#<sha256 of the request's
values of the Vary headers>``, and the primary key then holds a marker naming those headers.

Freshness (§4.2): with ``lifetime = min(rule ttl, s-maxage or max-age)`` and
``age = initial age (the response's Age) + (now - stored_at)``, an entry is fresh while
``age < lifetime × f``, stale-while-revalidate while ``age < (lifetime + swr) × f`` and
stale-if-error while ``age < (lifetime + sie) × f``, where ``f`` is the rule's emergency TTL
factor in emergency mode and 1 otherwise. ``must-revalidate``/``proxy-revalidate`` forbid
serving it stale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from crisisctl.guard.config import CacheRule

__all__ = [
    "HOP_BY_HOP",
    "NOT_MODIFIED_HEADERS",
    "CacheControl",
    "Freshness",
    "StoreVerdict",
    "freshness",
    "header_values",
    "not_modified",
    "parse_cache_control",
    "primary_key",
    "read_request",
    "request_bypasses",
    "response_verdict",
    "variant_key",
]

#: headers a cache never stores or replays (RFC 9110 §7.6.1), plus its own Age and X-Cache
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"age",
        b"x-cache",
    }
)

#: a rule allowing credentials, to read a request's wishes whatever it carries
_ANY_RULE = CacheRule(cache_authorized=True)
_DELTA_DIRECTIVES = ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error")


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one Cache-Control header (requests and responses use a subset)."""

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None


def _delta_seconds(value: str | None) -> int:
    """A delta-seconds value; 0 when malformed (RFC 9111 §1.2.2, §4.2.1)."""
    if value is None or not value.isdigit() or not value.isascii():
        return 0
    return min(int(value), 2**31)


def _split_directives(text: str) -> Iterable[tuple[str, str | None]]:
    """(lower-cased name, value or None) of each directive; commas inside quotes kept."""
    pos, size = 0, len(text)
    while pos < size:
        end = pos
        in_quotes = False
        while end < size:
            char = text[end]
            if char == '"':
                in_quotes = not in_quotes
            elif char == "\\" and in_quotes:
                end += 1
            elif char == "," and not in_quotes:
                break
            end += 1
        part = text[pos:end].strip()
        pos = end + 1
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not eq:
            yield name, None
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        yield name, value


def parse_cache_control(headers: Sequence[str]) -> CacheControl:
    """The directives of every Cache-Control header value in `headers` (all combined)."""
    flags: set[str] = set()
    deltas: dict[str, int] = {}
    for header in headers:
        for name, value in _split_directives(header):
            if name in _DELTA_DIRECTIVES:
                seconds = _delta_seconds(value)
                # a repeated directive is invalid: keep the most conservative (smallest)
                deltas[name] = min(seconds, deltas.get(name, seconds))
            else:
                flags.add(name)
    return CacheControl(
        no_store="no-store" in flags,
        no_cache="no-cache" in flags,
        private="private" in flags,
        public="public" in flags,
        must_revalidate="must-revalidate" in flags or "proxy-revalidate" in flags,
        max_age=deltas.get("max-age"),
        s_maxage=deltas.get("s-maxage"),
        stale_while_revalidate=deltas.get("stale-while-revalidate"),
        stale_if_error=deltas.get("stale-if-error"),
    )


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The latin-1 values of every header called `name` (lower-case bytes)."""
    return [v.decode("latin-1") for k, v in headers if k.lower() == name]


def _joined(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    return ",".join(v.strip() for v in header_values(headers, name))


def primary_key(
    path: str, query_string: bytes, headers: Sequence[tuple[bytes, bytes]], rule: CacheRule
) -> str:
    """The primary key of a request under `rule` (see the module docstring)."""
    if not query_string and not rule.headers:
        return path + "?"
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if rule.query_params is not None:
        wanted = set(rule.query_params)
        pairs = [(k, v) for k, v in pairs if k in wanted]
    pairs.sort()
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    key = f"{path}?{query}"
    for name in rule.headers:
        value = _joined(headers, name.encode("latin-1"))
        key += f"|{name}={quote(value, safe='')}"
    return key


def variant_key(primary: str, vary: Sequence[str], headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The key of the variant of `primary` the request's values of the `vary` headers select."""
    digest = hashlib.sha256()
    for name in vary:
        digest.update(name.encode("latin-1") + b"\x00")
        digest.update(_joined(headers, name.encode("latin-1")).encode("latin-1") + b"\x00")
    return f"{primary}#{digest.hexdigest()[:32]}"


def vary_names(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, ...] | None:
    """The response's Vary header names, sorted and lower-cased; None for ``Vary: *``."""
    names: set[str] = set()
    for value in header_values(headers, b"vary"):
        for name in value.split(","):
            name = name.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


_REQUEST_HEADERS = frozenset({b"cache-control", b"pragma", b"authorization", b"cookie"})


def read_request(
    headers: Sequence[tuple[bytes, bytes]], rule: CacheRule
) -> tuple[str | None, bool]:
    """(why the request bypasses the cache or None, whether it asks for the origin), from one
    pass over its headers.

    Bypass: ``no-store`` (§5.2.1.5), and credentials (``Authorization``, ``Cookie``: §3.5)
    unless the rule caches authorized requests; the request is then neither served from nor
    stored in the cache. Origin: ``no-cache``, ``max-age=0`` or ``Pragma: no-cache``; the
    answer comes from the origin but may still be stored (§5.2.1.4).
    """
    controls: list[str] = []
    credentials = False
    pragma_no_cache = False
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _REQUEST_HEADERS:
            continue
        if lowered == b"cache-control":
            controls.append(value.decode("latin-1"))
        elif lowered == b"pragma":
            pragma_no_cache = pragma_no_cache or b"no-cache" in value.lower()
        else:
            credentials = True
    if not controls:
        if credentials and not rule.cache_authorized:
            return "request carries credentials", False
        return None, pragma_no_cache
    control = parse_cache_control(controls)
    if control.no_store:
        return "request no-store", False
    if credentials and not rule.cache_authorized:
        return "request carries credentials", False
    return None, pragma_no_cache or control.no_cache or control.max_age == 0


def request_bypasses(headers: Sequence[tuple[bytes, bytes]], rule: CacheRule) -> str | None:
    """Why a request must neither be served from nor stored in the cache; None if it may."""
    return read_request(headers, rule)[0]


def request_wants_origin(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """The request asks for a fresh answer (``no-cache``, ``max-age=0``, ``Pragma: no-cache``)."""
    return read_request(headers, _ANY_RULE)[1]


#: the headers a 304 answer carries (RFC 9110 §15.4.5), besides the cache's own
NOT_MODIFIED_HEADERS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)


def not_modified(
    request_headers: Sequence[tuple[bytes, bytes]], stored_headers: Sequence[tuple[bytes, bytes]]
) -> bool:
    """The request's If-None-Match names the stored response's ETag (weak comparison, RFC 9110
    §13.1.2: ``W/"x"`` matches ``"x"``; ``*`` matches any): answer 304 instead of the body."""
    etags = header_values(stored_headers, b"etag")
    if not etags:
        return False
    ours = etags[0].strip().removeprefix("W/")
    for value in header_values(request_headers, b"if-none-match"):
        for tag in value.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == ours:
                return True
    return False


@dataclass(frozen=True, slots=True)
class StoreVerdict:
    """Whether a response may be stored, and for how long (seconds, before the factor)."""

    store: bool
    reason: str = ""
    lifetime_s: float = 0.0
    initial_age_s: float = 0.0
    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0
    vary: tuple[str, ...] = ()


def response_verdict(
    status: int, headers: Sequence[tuple[bytes, bytes]], rule: CacheRule
) -> StoreVerdict:
    """May this response be stored under `rule` (§3), and with which windows (§4.2)?"""
    if status not in rule.statuses:
        return StoreVerdict(False, f"status {status}")
    control = parse_cache_control(header_values(headers, b"cache-control"))
    if control.no_store:
        return StoreVerdict(False, "response no-store")
    if control.private:
        return StoreVerdict(False, "response private")
    if control.no_cache:
        return StoreVerdict(False, "response no-cache")
    if header_values(headers, b"set-cookie"):
        return StoreVerdict(False, "response sets a cookie")
    vary = vary_names(headers)
    if vary is None:
        return StoreVerdict(False, "response Vary: *")
    lifetime = rule.ttl_s
    origin = control.s_maxage if control.s_maxage is not None else control.max_age
    if origin is not None:
        lifetime = min(lifetime, float(origin))
    ages = header_values(headers, b"age")
    initial_age = float(_delta_seconds(ages[0].strip())) if ages else 0.0
    if lifetime <= initial_age:
        return StoreVerdict(False, "response already stale")
    stale = not control.must_revalidate
    return StoreVerdict(
        True,
        lifetime_s=lifetime,
        initial_age_s=initial_age,
        stale_while_revalidate_s=rule.stale_while_revalidate_s if stale else 0.0,
        stale_if_error_s=rule.stale_if_error_s if stale else 0.0,
        vary=vary,
    )


@dataclass(frozen=True, slots=True)
class Freshness:
    """What an entry may be used for at one moment."""

    age_s: float
    fresh: bool
    revalidate_stale: bool
    error_stale: bool


def freshness(
    stored_at: float,
    initial_age_s: float,
    lifetime_s: float,
    swr_s: float,
    sie_s: float,
    now: float,
    factor: float = 1.0,
) -> Freshness:
    """The entry's age and windows at `now` (see the module docstring)."""
    age = initial_age_s + max(0.0, now - stored_at)
    return Freshness(
        age_s=age,
        fresh=age < lifetime_s * factor,
        revalidate_stale=age < (lifetime_s + swr_s) * factor,
        error_stale=age < (lifetime_s + sie_s) * factor,
    )


def retention_s(verdict: StoreVerdict, factor: float) -> float:
    """How long a store must keep an entry: its longest window, widened by `factor`."""
    longest = max(verdict.stale_while_revalidate_s, verdict.stale_if_error_s)
    return max(0.001, (verdict.lifetime_s + longest) * factor - verdict.initial_age_s)
