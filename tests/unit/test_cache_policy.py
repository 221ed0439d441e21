"""The response cache's rules (guard/cache_policy.py): Cache-Control, keys, freshness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.guard.cache_policy import (
    freshness,
    parse_cache_control,
    primary_key,
    request_bypasses,
    request_wants_origin,
    response_verdict,
    variant_key,
    vary_names,
)
from crisisctl.guard.config import CacheRule, GuardConfigError, RouteRule

RULE = CacheRule(ttl_s=60.0, stale_while_revalidate_s=10.0, stale_if_error_s=300.0)

names = st.sampled_from(
    ["no-store", "no-cache", "private", "public", "must-revalidate", "proxy-revalidate", "x-ext"]
)
deltas = st.sampled_from(["max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"])


@st.composite
def directives(draw: st.DrawFn) -> tuple[list[str], dict[str, int]]:
    """Cache-Control text pieces and the delta values they carry (each delta at most once)."""
    flags = draw(st.lists(names, max_size=5))
    values = draw(st.dictionaries(deltas, st.integers(0, 10**6), max_size=4))
    parts = list(flags)
    for name, value in values.items():
        quoted = draw(st.booleans())
        parts.append(f'{name.upper() if draw(st.booleans()) else name}="{value}"' if quoted
                     else f"{name}={value}")  # fmt: skip
    order = draw(st.permutations(parts))
    return list(order), values


@given(directives(), st.sampled_from([",", ", ", " ,  "]))
def test_every_directive_is_read_whatever_its_case_order_or_quoting(
    drawn: tuple[list[str], dict[str, int]], sep: str
) -> None:
    parts, values = drawn
    control = parse_cache_control([sep.join(parts)])
    assert control.max_age == values.get("max-age")
    assert control.s_maxage == values.get("s-maxage")
    assert control.stale_while_revalidate == values.get("stale-while-revalidate")
    assert control.stale_if_error == values.get("stale-if-error")
    lowered = [p.lower() for p in parts]
    assert control.no_store == ("no-store" in lowered)
    assert control.private == ("private" in lowered)
    assert control.must_revalidate == (
        "must-revalidate" in lowered or "proxy-revalidate" in lowered
    )


@given(st.text(max_size=200))
def test_the_parser_never_raises_on_any_header_text(text: str) -> None:
    parse_cache_control([text])


def test_a_malformed_or_repeated_age_directive_is_read_conservatively() -> None:
    assert parse_cache_control(["max-age=abc"]).max_age == 0
    assert parse_cache_control(["max-age=60, max-age=5"]).max_age == 5
    assert parse_cache_control(['private="set-cookie, x", max-age=9']).max_age == 9
    assert parse_cache_control(["max-age=10", "no-store"]).no_store


@given(
    st.lists(st.tuples(st.sampled_from("abcxyz"), st.text("0123456789 &=%é", max_size=4)),
             max_size=6),
    st.randoms(),
)  # fmt: skip
def test_the_order_of_query_parameters_does_not_change_the_key(
    pairs: list[tuple[str, str]], rnd: object
) -> None:
    from urllib.parse import urlencode

    shuffled = list(pairs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    one = primary_key("/p", urlencode(pairs).encode(), [], RULE)
    two = primary_key("/p", urlencode(shuffled).encode(), [], RULE)
    assert one == two
    assert one.startswith("/p?")


others = st.lists(
    st.tuples(st.sampled_from(["a", "b", "pages", "Page"]), st.text("0123xyz", max_size=3)),
    max_size=4,
)


@given(others, others, st.text("0123", max_size=3))
def test_only_the_chosen_query_parameters_are_in_the_key(
    one: list[tuple[str, str]], two: list[tuple[str, str]], page: str
) -> None:
    from urllib.parse import urlencode

    rule = CacheRule(query_params=("page",))
    k1 = primary_key("/p", urlencode([*one, ("page", page)]).encode(), [], rule)
    k2 = primary_key("/p", urlencode([("page", page), *two]).encode(), [], rule)
    assert k1 == k2
    assert k1 != primary_key("/p", urlencode([("page", page + "9")]).encode(), [], rule)


def test_keys_differ_by_every_keyed_part_and_start_with_the_path() -> None:
    rule = CacheRule(headers=("Accept-Language",), query_params=("q",))
    base = primary_key("/a", b"q=1&z=9", [(b"accept-language", b"fr")], rule)
    assert base == primary_key("/a", b"z=0&q=1", [(b"Accept-Language", b"fr")], rule)
    assert base != primary_key("/a", b"q=2", [(b"accept-language", b"fr")], rule)
    assert base != primary_key("/a", b"q=1", [(b"accept-language", b"de")], rule)
    assert base != primary_key("/b", b"q=1", [(b"accept-language", b"fr")], rule)
    assert base.startswith("/a?")
    # every parameter is keyed when the rule names none
    assert primary_key("/a", b"x=1", [], RULE) != primary_key("/a", b"x=2", [], RULE)


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_header_value_cannot_forge_another_keys_parts(one: str, two: str) -> None:
    rule = CacheRule(headers=("a", "b"))
    enc = "latin-1"
    try:
        h1 = [(b"a", one.encode(enc)), (b"b", two.encode(enc))]
    except UnicodeEncodeError:
        return
    k1 = primary_key("/p", b"", h1, rule)
    swapped = [(b"a", (one + "|b=" + two).encode(enc))]
    if two or "|b=" in one:
        assert k1 != primary_key("/p", b"", swapped, rule)


def test_vary_variants_are_keyed_by_the_named_headers_only() -> None:
    fr = [(b"accept-language", b"fr"), (b"user-agent", b"x")]
    fr2 = [(b"accept-language", b"fr"), (b"user-agent", b"y")]
    de = [(b"accept-language", b"de")]
    assert variant_key("/p?", ("accept-language",), fr) == variant_key(
        "/p?", ("accept-language",), fr2
    )
    assert variant_key("/p?", ("accept-language",), fr) != variant_key(
        "/p?", ("accept-language",), de
    )
    assert vary_names([(b"Vary", b"Accept-Language, accept-encoding")]) == (
        "accept-encoding",
        "accept-language",
    )
    assert vary_names([(b"vary", b"*")]) is None


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        (200, [(b"cache-control", b"no-store")], "response no-store"),
        (200, [(b"cache-control", b"private, max-age=60")], "response private"),
        (200, [(b"cache-control", b"no-cache")], "response no-cache"),
        (200, [(b"set-cookie", b"s=1")], "response sets a cookie"),
        (200, [(b"vary", b"*")], "response Vary: *"),
        (500, [], "status 500"),
        (404, [], "status 404"),
        (200, [(b"cache-control", b"max-age=5"), (b"age", b"9")], "response already stale"),
    ],
)
def test_responses_that_must_not_be_stored_are_refused(
    status: int, headers: list[tuple[bytes, bytes]], reason: str
) -> None:
    verdict = response_verdict(status, headers, RULE)
    assert not verdict.store
    assert verdict.reason == reason


def test_the_response_max_age_and_s_maxage_bound_the_rule_ttl() -> None:
    assert response_verdict(200, [], RULE).lifetime_s == 60.0
    assert response_verdict(200, [(b"cache-control", b"max-age=5")], RULE).lifetime_s == 5.0
    both = [(b"cache-control", b"max-age=5, s-maxage=30")]
    assert response_verdict(200, both, RULE).lifetime_s == 30.0
    assert response_verdict(200, [(b"cache-control", b"max-age=600")], RULE).lifetime_s == 60.0
    revalidate = response_verdict(200, [(b"cache-control", b"must-revalidate")], RULE)
    assert revalidate.store
    assert revalidate.stale_if_error_s == revalidate.stale_while_revalidate_s == 0.0
    assert response_verdict(404, [], CacheRule(statuses=(200, 404))).store


def test_requests_with_credentials_or_no_store_bypass_unless_the_rule_allows() -> None:
    assert request_bypasses([(b"authorization", b"Bearer x")], RULE) is not None
    assert request_bypasses([(b"cookie", b"s=1")], RULE) is not None
    assert request_bypasses([(b"cache-control", b"no-store")], RULE) is not None
    assert request_bypasses([(b"accept", b"*/*")], RULE) is None
    allowed = CacheRule(cache_authorized=True)
    assert request_bypasses([(b"authorization", b"Bearer x")], allowed) is None
    assert request_wants_origin([(b"cache-control", b"no-cache")])
    assert request_wants_origin([(b"cache-control", b"max-age=0")])
    assert request_wants_origin([(b"pragma", b"no-cache")])
    assert not request_wants_origin([(b"cache-control", b"max-age=10")])


@given(
    st.floats(0, 1e4), st.floats(0, 100), st.floats(0.1, 1e3), st.floats(0, 1e3),
    st.floats(0, 1e3), st.floats(0, 1e4), st.floats(1, 10),
)  # fmt: skip
def test_freshness_windows_nest_and_widen_with_the_emergency_factor(
    stored: float, initial: float, life: float, swr: float, sie: float, later: float, f: float
) -> None:
    now = stored + later
    normal = freshness(stored, initial, life, swr, sie, now)
    wide = freshness(stored, initial, life, swr, sie, now, f)
    assert normal.age_s == pytest.approx(initial + later)
    if normal.fresh:
        assert normal.revalidate_stale and normal.error_stale
    for window in ("fresh", "revalidate_stale", "error_stale"):
        if getattr(normal, window):
            assert getattr(wide, window)


def test_cache_rules_are_checked_and_read_from_plain_data() -> None:
    rule = RouteRule(
        "/api/items/{id}",
        cache={"ttl_s": 5, "headers": "Accept-Language, X-Tenant", "query_params": ["page"]},
    )
    assert isinstance(rule.cache, CacheRule)
    assert rule.cache.headers == ("accept-language", "x-tenant")
    assert rule.cache.query_params == ("page",)
    with pytest.raises(GuardConfigError, match="not cacheable"):
        CacheRule(statuses=(200, 500))
    with pytest.raises(GuardConfigError, match="unknown cache store"):
        CacheRule(store="disk")  # type: ignore[arg-type]
    with pytest.raises(GuardConfigError, match="ttl_s"):
        CacheRule(ttl_s=0)
