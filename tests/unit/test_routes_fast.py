"""The fast resolver (`RouteTable.resolve_fast`, one combined regex per list) against the
readable reference (`RouteTable.resolve`, one regex per template, rule and critical path):
the same random tables and requests into both, every result compared (issue 14, point 13)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.guard import RouteRule
from crisisctl.guard.routes import (
    OTHER_METHOD,
    Resolved,
    RouteTable,
    combine,
    compile_template,
    literal_first_segment,
)

_WORDS = ("a", "ab", "b", "items", "users", "42", "7f3a9c2e1b4d5f60aa")
_PARAMS = ("{id}", "{id:int}", "{name:str}", "{rest:path}")
_METHODS = ("GET", "POST", "DELETE", "PROPFIND", "BREW", OTHER_METHOD)

segment = st.sampled_from(_WORDS)
template_segment = st.one_of(segment, st.sampled_from(_PARAMS))


@st.composite
def templates(draw: st.DrawFn) -> str:
    body = "/" + "/".join(draw(st.lists(template_segment, max_size=4)))
    return body + draw(st.sampled_from(["", "", "/", "*", "/*"]))


paths = st.builds(
    lambda lead, parts, end: lead + "/".join(parts) + end,
    st.sampled_from(["/", "/", "/", ""]),  # rarely a path not starting with "/"
    st.lists(st.one_of(segment, st.just("")), max_size=5),
    st.sampled_from(["", "/", "", "/", "\n", "/\n"]),  # "$" matches before a final newline
)
rules = st.builds(
    RouteRule,
    pattern=templates(),
    methods=st.one_of(st.none(), st.sets(st.sampled_from(_METHODS[:4]), min_size=1).map(tuple)),
)


def _build(resolved: Resolved, method: str) -> Resolved:
    return resolved


def _two_tables(
    rule_list: list[RouteRule], template_list: list[str], critical: list[str], max_labels: int
) -> tuple[RouteTable[Resolved], RouteTable[Resolved]]:
    """Two tables of the same configuration: the reference's and the one under test."""

    def table() -> RouteTable[Resolved]:
        return RouteTable(
            rule_list, template_list, _build, max_labels=max_labels, critical_paths=critical
        )

    return table(), table()


#: random tables (rules, templates, critical paths, a label budget) and requests
_tables = st.builds(
    _two_tables,
    st.lists(rules, max_size=5),
    st.lists(templates(), max_size=8),
    st.lists(templates(), max_size=2),
    st.integers(min_value=1, max_value=6),
)
_requests = st.lists(st.tuples(st.sampled_from(_METHODS), paths), min_size=1, max_size=20)


@settings(max_examples=300)
@given(_tables, _requests)
def test_resolve_fast_agrees_with_resolve(
    tables: tuple[RouteTable[Resolved], RouteTable[Resolved]], requests: list[tuple[str, str]]
) -> None:
    reference, fast = tables
    for method, path in requests + requests:
        assert fast.resolve_fast(method, path) == reference.resolve(method, path)
    assert fast.labels == reference.labels


@settings(max_examples=300)
@given(_tables, _requests)
def test_lookup_and_its_shortcut_per_template_agree_with_resolve(
    tables: tuple[RouteTable[Resolved], RouteTable[Resolved]], requests: list[tuple[str, str]]
) -> None:
    # `lookup` keeps, per method no rule names, each template's built object and hands it out
    # without resolving again: three passes, so that the shortcut serves the later ones
    reference, fast = tables
    for method, path in requests * 3:
        expected = reference.resolve(reference.method_label(method), path)
        assert fast.lookup(method, path) == expected
    assert fast.labels == reference.labels


def test_the_shortcut_never_hands_a_critical_path_its_templates_value() -> None:
    table: RouteTable[Resolved] = RouteTable(
        [], ["/items/{id}", "/health"], _build, critical_paths=["/items/health", "/health"]
    )
    for _ in range(3):
        assert not table.lookup("GET", "/items/7").critical
        assert table.lookup("GET", "/items/health").critical
        assert table.lookup("GET", "/health").critical
        assert table.lookup("GET", "/items/8").label == "/items/{id}"


@given(st.lists(templates(), min_size=1, max_size=10), paths)
def test_the_combined_regex_names_the_first_template_that_matches(
    template_list: list[str], path: str
) -> None:
    regexes = [compile_template(t) for t in template_list]
    combined = combine(regexes)
    assert combined is not None
    first = next((i for i, r in enumerate(regexes) if r.match(path)), None)
    found = combined.match(path)
    assert (None if found is None else found.lastindex) == (None if first is None else first + 1)


def test_combined_regexes_hold_many_routes() -> None:
    """500 routes in one alternation: the last one and a miss resolve right."""
    many = [f"/svc{k:03d}/items/{{item_id:int}}" for k in range(500)]
    table = RouteTable((), many, _build)
    assert combine([]) is None
    assert table.lookup("GET", "/svc499/items/7") == Resolved("/svc499/items/{item_id}", None)
    assert table.lookup("GET", "/svc500/items/7").label == "<unmatched>"


@given(templates(), paths)
def test_a_template_with_a_literal_first_segment_matches_only_paths_starting_with_it(
    template: str, path: str
) -> None:
    first = literal_first_segment(template)
    if first is not None and compile_template(template).match(path) and "\n" not in path:
        assert path.startswith("/") and path[1:].split("/")[0] == first


def test_literal_first_segments() -> None:
    assert literal_first_segment("/svc07/items/{id}") == "svc07"
    assert literal_first_segment("/svc07") == "svc07"
    assert literal_first_segment("/svc07/*") == "svc07"
    for template in ("/a*", "/*", "/", "/{id}/x", "/{rest:path}", "//x", "x/y"):
        assert literal_first_segment(template) is None


def test_paths_the_segment_index_cannot_key_resolve_like_the_reference() -> None:
    """``$`` also matches before a final newline (a decoded ``%0A``); a path without a leading
    slash has no first segment: both go through the whole alternation, as in the reference."""
    table = RouteTable((), ["/a", "/items/{id}", "/b*"], _build)
    for path in ("/a\n", "/a/\n", "/items/1\n", "/b\n", "a", "", "/bcd", "/items/1/"):
        assert table.resolve_fast("GET", path) == table.resolve("GET", path), path
