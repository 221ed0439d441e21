"""Route resolution: templates, discovery on Starlette/FastAPI apps, labels, rules, the cache."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from crisisctl.guard import RouteRule, routes
from crisisctl.guard.routes import (
    OTHER,
    OTHER_METHOD,
    UNMATCHED,
    Resolved,
    RouteTable,
    compile_template,
    discover_templates,
    normalise_template,
)
from crisisctl.guard.types import Receive, Scope, Send

# -- compile_template --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        (
            "/items/{id}",
            ["/items/1", "/items/abc", "/items/1/"],
            ["/items/", "/items/1/x", "/items"],
        ),
        ("/a/{x}/b/{y}", ["/a/1/b/2"], ["/a/1/b", "/a/1/c/2", "/a//b/2"]),
        ("/files/{p:path}", ["/files/a", "/files/a/b/c", "/files/"], ["/file/a"]),
        ("/static/*", ["/static/", "/static/css/x.css"], ["/stat", "/other/static/"]),
        ("/a.b", ["/a.b"], ["/aXb", "/a.bc"]),
        ("/v1/items/{id:int}", ["/v1/items/42"], ["/v1/items"]),
        ("/", ["/"], ["/x"]),
    ],
)
def test_compile_template(template: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_template(template)
    for path in matches:
        assert regex.match(path), (template, path)
    for path in misses:
        assert not regex.match(path), (template, path)


def test_normalise_template_drops_converters_but_path() -> None:
    assert normalise_template("/items/{id:int}") == "/items/{id}"
    assert normalise_template("/f/{rest:path}") == "/f/{rest:path}"
    assert normalise_template("/plain") == "/plain"


# -- discover_templates ------------------------------------------------------------------------


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _ws(websocket: WebSocket) -> None:  # pragma: no cover
    await websocket.close()


async def _raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
    raise AssertionError("not called")


def _starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", _ok),
            Route("/items/{item_id:int}", _ok),
            Mount(
                "/api",
                routes=[
                    Route("/users/{name}", _ok),
                    Mount("/v2", routes=[Route("/scans/{scan_id}", _ok, methods=["POST"])]),
                ],
            ),
            Mount("/static", app=_raw_asgi),
            WebSocketRoute("/ws", _ws),
        ],
        middleware=[Middleware(GZipMiddleware)],
    )


def test_discover_templates_follows_mounts_in_app_order() -> None:
    assert discover_templates(_starlette_app()) == [
        "/",
        "/items/{item_id:int}",
        "/api/users/{name}",
        "/api/v2/scans/{scan_id}",
        "/static/*",  # a sub-app without routes: the guard cannot see inside
        "/ws",
    ]


class _Wrapper:
    """A plain ASGI middleware layer in front of the app."""

    def __init__(self, app: object) -> None:
        self.app = app


def test_discover_templates_through_middleware_and_fastapi() -> None:
    api = FastAPI()

    @api.get("/reports/{report_id}")
    async def report(report_id: int) -> dict[str, int]:  # pragma: no cover
        return {"id": report_id}

    templates = discover_templates(_Wrapper(_Wrapper(api)))
    assert "/reports/{report_id}" in templates
    assert discover_templates(_raw_asgi) == []
    assert discover_templates(_Wrapper(None)) == []


def test_discover_templates_survives_a_cycle() -> None:
    a = _Wrapper(None)
    b = _Wrapper(a)
    a.app = b
    assert discover_templates(a) == []


# -- RouteTable --------------------------------------------------------------------------------


def _table(
    rules: tuple[RouteRule, ...] = (), templates: tuple[str, ...] = (), max_labels: int = 500
) -> tuple[RouteTable[Resolved], list[tuple[str, str]]]:
    built: list[tuple[str, str]] = []

    def build(resolved: Resolved, method: str) -> Resolved:
        built.append((method, resolved.label))
        return resolved

    return RouteTable(rules, templates, build, max_labels=max_labels), built


def test_labels_come_from_templates_never_raw_paths() -> None:
    table, _ = _table(templates=tuple(discover_templates(_starlette_app())))
    assert table.lookup("GET", "/items/1").label == "/items/{item_id}"
    assert table.lookup("GET", "/items/2").label == "/items/{item_id}"
    assert table.lookup("POST", "/api/v2/scans/77").label == "/api/v2/scans/{scan_id}"
    assert table.lookup("GET", "/nope/123").label == UNMATCHED
    assert table.lookup("GET", "/nope/456").label == UNMATCHED
    assert table.labels == {"/items/{item_id}", "/api/v2/scans/{scan_id}", UNMATCHED}


def test_rule_patterns_label_paths_the_app_does_not_expose() -> None:
    rule = RouteRule("/legacy/{id}", rate_limit="1/s")
    table, _ = _table(rules=(rule,), templates=("/items/{id}",))
    resolved = table.lookup("GET", "/legacy/9")
    assert resolved == Resolved("/legacy/{id}", rule)
    # an app template wins the label; the rule still applies
    rule2 = RouteRule("/items/{item:int}")
    table, _ = _table(rules=(rule2,), templates=("/items/{id}",))
    assert table.lookup("GET", "/items/3") == Resolved("/items/{id}", rule2)


def test_first_matching_rule_wins_and_methods_filter() -> None:
    post_only = RouteRule("/api/scans", methods=("POST",), rate_limit="2/minute")
    catch_all = RouteRule("/api/*", priority="low")
    table, _ = _table(rules=(post_only, catch_all))
    assert table.lookup("POST", "/api/scans").rule is post_only
    assert table.lookup("GET", "/api/scans").rule is catch_all
    assert table.lookup("GET", "/api/other/deep").rule is catch_all
    assert table.lookup("GET", "/elsewhere").rule is None
    # a wildcard rule names a group, not a route: nothing discovered, so each path its label
    assert table.lookup("GET", "/api/other/deep").label == "/api/other/deep"
    assert table.lookup("GET", "/elsewhere").label == "/elsewhere"
    table, _ = _table(rules=(catch_all,), templates=("/items/{id}",))
    assert table.lookup("GET", "/api/x").label == UNMATCHED  # the app routes nothing there


def test_labels_beyond_max_fold_into_other() -> None:
    templates = tuple(f"/r{i}" for i in range(5))
    table, _ = _table(templates=templates, max_labels=3)
    assert [table.lookup("GET", f"/r{i}").label for i in range(5)] == [
        "/r0",
        "/r1",
        "/r2",
        OTHER,
        OTHER,
    ]
    assert table.lookup("GET", "/r1").label == "/r1"  # known labels stay
    assert len(table.labels) == 3


def test_lookup_is_cached_per_method_and_static_path() -> None:
    table, built = _table(templates=("/items/{id}", "/about"))
    first = table.lookup("GET", "/items/1")
    assert table.lookup("GET", "/items/1") is first
    table.lookup("HEAD", "/items/1")
    # another path of the same route: resolved, but built once per method and route only
    assert table.lookup("GET", "/items/2") is first
    assert built == [("GET", "/items/{id}"), ("HEAD", "/items/{id}")]
    about = table.lookup("GET", "/about")
    assert table.cache["GET"] == {"/about": about}  # a static path is cached
    # paths with parameters, 404s: resolved each time, never kept (the cache would hold every
    # id and every scanner's path, and the allocator reuse none of their memory)
    table.lookup("GET", "/nowhere/at/all")
    assert table.cache["GET"] == {"/about": about}


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "_CACHE_LIMIT", 10)
    table, built = _table(templates=tuple(f"/page-{c}" for c in "abcdefghijklmnopqrstuvwxyz"))
    for c in "abcdefghijklmnopqrstuvwxyz" * 4:
        table.lookup("GET", f"/page-{c}")
        table.lookup("POST", f"/page-{c}")
        assert sum(len(by_path) for by_path in table.cache.values()) <= 10
    # built once per method and route (bounded: labels × rules × methods)
    assert len(built) == 2 * 26
    # after a clear, entries are resolved again (the same way), and not rebuilt
    assert table.lookup("GET", "/page-a").label == "/page-a"
    assert len(built) == 2 * 26
    assert len(table.labels) == 26


# -- what discovery cannot see -----------------------------------------------------------------


def test_an_undiscoverable_app_gets_one_label_per_path_with_ids_folded() -> None:
    table, _ = _table()
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    assert table.lookup("GET", "/health").label == "/health"
    assert table.lookup("GET", "/users/42/orders/7").label == "/users/{id}/orders/{id}"
    assert table.lookup("GET", f"/scans/{uuid}").label == "/scans/{id}"
    assert table.lookup("GET", "/blobs/0123456789abcdef0123").label == "/blobs/{id}"
    assert table.lookup("GET", "/blobs/cafe").label == "/blobs/cafe"  # short hex: a name
    assert table.lookup("GET", "/t/" + "x" * 65).label == "/t/{id}"
    assert table.labels == {
        "/health", "/users/{id}/orders/{id}", "/scans/{id}", "/blobs/{id}", "/blobs/cafe",
        "/t/{id}",
    }  # fmt: skip


def test_a_mounted_sub_app_gets_one_label_per_path_below_its_mount() -> None:
    table, _ = _table(templates=tuple(discover_templates(_starlette_app())))
    assert table.lookup("GET", "/static/css/site.css").label == "/static/css/site.css"
    assert table.lookup("GET", "/static/img/12.png").label == "/static/img/12.png"
    assert table.lookup("GET", "/static/img/12").label == "/static/img/{id}"
    assert table.lookup("GET", "/items/3").label == "/items/{item_id}"


def test_per_path_labels_are_bounded_by_max_labels() -> None:
    table, _ = _table(max_labels=10)
    labels = {table.lookup("GET", f"/page-{chr(97 + i % 26)}{i}").label for i in range(200)}
    assert len(table.labels) == 10
    assert OTHER in labels
    assert len(labels) == 11


_SEGMENT = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.uuids().map(str),
    st.text("0123456789abcdef", min_size=16, max_size=40),
    st.text("abcdefghijklmnopqrstuvwxyz-_.", min_size=1, max_size=12),
)


@given(st.lists(_SEGMENT, min_size=1, max_size=6))
def test_path_label_folds_identifiers_and_nothing_else(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    label = routes.path_label(path)
    folded = label.split("/")[1:]
    assert len(folded) == len(segments)
    for segment, out in zip(segments, folded, strict=True):
        looks_like_id = segment.isdigit() or (
            len(segment) >= 16 and all(c in "0123456789abcdef-" for c in segment)
        )
        assert (out == "{id}") == looks_like_id, (segment, out)
    assert routes.path_label(label) == label  # a label is its own label


# -- critical paths and methods ----------------------------------------------------------------


def test_critical_is_judged_on_the_raw_path_whatever_the_label() -> None:
    critical = ("/health", "/healthz")
    # an app whose routes are discovered but do not include the health check (an outer
    # middleware answers it): the path is <unmatched>, like any 404, yet critical
    table = RouteTable((), ("/items/{id}",), lambda r, m: r, critical_paths=critical)
    health = table.lookup("GET", "/healthz")
    assert health == Resolved(UNMATCHED, None, critical=True)
    assert table.lookup("GET", "/nope").critical is False
    # a catch-all rule and label overflow do not matter either
    rule = RouteRule("/{rest:path}", rate_limit="1/minute")
    table = RouteTable((rule,), ("/a",), lambda r, m: r, max_labels=1, critical_paths=critical)
    assert table.lookup("GET", "/a") == Resolved("/a", rule, critical=False)
    assert table.lookup("GET", "/health") == Resolved(OTHER, rule, critical=True)
    assert table.lookup("GET", "/health/").critical is True
    assert table.lookup("GET", "/health/x").critical is False


def test_unknown_methods_share_one_label_and_one_cache_entry() -> None:
    rule = RouteRule("/dav", methods=("PROPFIND",))
    table, built = _table(rules=(rule,), templates=("/dav", "/x"))
    for i in range(1000):
        table.lookup(f"M{i}", "/x")
    assert set(table.cache) == {OTHER_METHOD}
    assert built == [(OTHER_METHOD, "/x")]
    assert table.lookup("PROPFIND", "/dav").rule is rule  # a method a rule names is known
    assert table.method_label("PROPFIND") == "PROPFIND"
    assert table.method_label("GET") == "GET"
    assert table.method_label("BREW") == OTHER_METHOD
