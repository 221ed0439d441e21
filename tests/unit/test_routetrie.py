"""The segment trie of route templates (guard/routetrie.py) against the regexes it stands for:
the guard's own (`routes.compile_template`, the first template in order wins) and Starlette's
(the framework's matching of the routes it discovers), on random route sets and paths made from
the same words, so that matches are frequent (issue 14, point 13)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from crisisctl.guard.routes import RouteTable, compile_template
from crisisctl.guard.routetrie import NO_MATCH, TemplateTrie, trie_segments

_WORDS = ("a", "ab", "b", "items", "42", "x.txt", "é", "{1x}", "a+b", "v1")
#: whole-segment parameters (the trie's), and what it leaves to the regex
_PARAMS = ("{id}", "{id:int}", "{name:str}")
_NOT_TRIE = ("{rest:path}", "v{id}", "{id}.txt", "{a}{b}", "{rest:path}.x")

word = st.sampled_from(_WORDS)
_NO_PART = st.just("")


@st.composite
def templates(draw: st.DrawFn, parts: st.SearchStrategy[str] = _NO_PART) -> str:
    segment = st.one_of(word, st.sampled_from(_PARAMS), parts, st.just(""))
    body = "/" + "/".join(draw(st.lists(segment, max_size=4)))
    return body + draw(st.sampled_from(["", "", "", "/", "*"]))


@st.composite
def starlette_templates(draw: st.DrawFn) -> str:
    """Starlette routes: words and whole-segment string parameters, named apart."""
    kinds = draw(
        st.lists(st.one_of(word, st.sampled_from(["{}", "{:str}"]), st.just("")), max_size=4)
    )
    parts = [
        k if k not in ("{}", "{:str}") else k.replace("{", f"{{p{i}", 1)
        for i, k in enumerate(kinds)
    ]
    return "/" + "/".join(parts) + draw(st.sampled_from(["", "", "/"]))


any_templates = templates(st.sampled_from(_NOT_TRIE)) | st.sampled_from(["", "a/b", "*"])
paths = st.builds(
    lambda parts, end: "/" + "/".join(parts) + end,
    st.lists(st.one_of(word, st.just("")), max_size=5),
    st.sampled_from(["", "", "/", "//"]),
)


def _endpoint(request: object) -> None:
    """(never called: the routes are only matched)"""


def _first_match(template_list: list[str], path: str) -> int:
    for index, template in enumerate(template_list):
        if compile_template(template).match(path):
            return index
    return NO_MATCH


@settings(max_examples=400)
@given(st.lists(any_templates, max_size=10), st.lists(paths, min_size=1, max_size=20))
def test_the_trie_and_its_fallback_find_the_first_template_the_regexes_match(
    template_list: list[str], path_list: list[str]
) -> None:
    trie = TemplateTrie(template_list)
    expressible = [i for i, t in enumerate(template_list) if trie_segments(t) is not None]
    assert sorted(expressible + trie.fallback) == list(range(len(template_list)))
    for path in path_list:
        first = _first_match(template_list, path)
        in_trie = trie.match(path)
        in_fallback = _first_match([template_list[i] for i in trie.fallback], path)
        fallback = NO_MATCH if in_fallback == NO_MATCH else trie.fallback[in_fallback]
        assert min(in_trie, fallback) == first, (template_list, path)
        # the trie alone: the first of its own templates
        first_expressible = next(
            (i for i in expressible if compile_template(template_list[i]).match(path)), NO_MATCH
        )
        assert in_trie == first_expressible


@settings(max_examples=300)
@given(
    st.lists(starlette_templates(), min_size=1, max_size=10, unique=True),
    st.lists(paths, min_size=1, max_size=20),
)
def test_the_guard_labels_a_path_with_the_route_starlette_routes_it_to(
    template_list: list[str], path_list: list[str]
) -> None:
    """Starlette routes with whole-segment string parameters (its `[^/]+`, as the guard's):
    the label is the first route Starlette routes the path to, or (the guard's templates take
    an optional trailing slash, where Starlette redirects) the path without its final slash."""
    starlette = [Route(t, _endpoint) for t in template_list]
    table: RouteTable[str] = RouteTable(
        (), [r.path for r in starlette], lambda resolved, method: resolved.label, max_labels=10**6
    )
    for path in path_list:
        unslashed = path[:-1] if len(path) > 1 and path.endswith("/") else path
        routed = next(
            (
                r.path
                for r in starlette
                if r.path_regex.match(path) or r.path_regex.match(unslashed)
            ),
            None,
        )
        label = table.resolve_fast("GET", path).label
        expected = "<unmatched>" if routed is None else routed.replace(":str}", "}")
        assert label == expected, (template_list, path)


def test_what_the_trie_expresses() -> None:
    assert trie_segments("/svc07/users/{user}/orders/{order_id:int}") == [
        "svc07",
        "users",
        None,
        "orders",
        None,
    ]
    assert trie_segments("/") == [""]
    assert trie_segments("/a/{1x}") == ["a", "{1x}"]  # not a parameter: a word
    for template in ("/files/{name}.txt", "/v{n}", "/static/{p:path}", "/mount/*", "a/b", ""):
        assert trie_segments(template) is None


def test_a_trailing_slash_and_empty_segments() -> None:
    trie = TemplateTrie(["/", "/a/{id}", "/a/{id}/b/", "/c//d"])
    assert trie.match("/") == 0
    assert trie.match("//") == 0
    assert trie.match("/a/1") == 1
    assert trie.match("/a/1/") == 1
    assert trie.match("/a//") == NO_MATCH  # a parameter is never empty
    assert trie.match("/a/1/b/") == 2
    assert trie.match("/a/1/b//") == 2
    assert trie.match("/a/1/b") == NO_MATCH
    assert trie.match("/c//d") == 3
    assert trie.match("/c/d") == NO_MATCH


def test_the_first_template_in_order_wins_whatever_the_branch() -> None:
    trie = TemplateTrie(["/a/{id}/x", "/a/b/{id}", "/a/b/x"])
    assert trie.match("/a/b/x") == 0
    trie = TemplateTrie(["/a/b/{id}", "/a/{id}/x"])
    assert trie.match("/a/b/x") == 0
    assert trie.match("/a/c/x") == 1
