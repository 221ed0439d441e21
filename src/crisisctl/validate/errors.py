"""Error handling's requests: find a route that takes a body, then send three wrong requests.

Malformed JSON only tests a service's input handling when it reaches a handler that reads a
body: a 405 from a GET-only route says nothing about it. So `find_body_route` looks, in order:

1. at the suite's own routes (``--burst-path``, ``--concurrency-path``) given with POST, PUT
   or PATCH: the user named them;
2. at the ``Allow`` header the service returns to ``OPTIONS`` on each of the suite's paths
   (the burst path, the concurrency path, ``--path``): 2xx and 405 answers both carry it in
   the frameworks that send one; the first of POST, PUT, PATCH it lists is used.

When no route is found, the malformed-JSON case is *not applicable* and says what was tried.
The other two cases always apply: GET of a random unknown path must be 404, and a method the
burst path does not allow (DELETE, else PATCH, else PUT, chosen from its ``Allow`` when known)
must be 405.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from crisisctl.validate.checks import NOT_JUDGED, ErrorCase
from crisisctl.validate.exchange import Exchange, exchange

#: methods whose requests carry a body, in the order they are preferred
BODY_METHODS = ("POST", "PUT", "PATCH")
#: methods tried for the wrong-method case, in order
WRONG_METHODS = ("DELETE", "PATCH", "PUT")
MALFORMED_JSON = b'{"crisisctl": "validate", "broken": '
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class BodyRoute:
    """Where malformed JSON goes (`method` None: nowhere, and `note` says why)."""

    method: str | None
    path: str
    note: str


def _unique(routes: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The routes without repeats of the same method and path (the first option name kept)."""
    out: list[tuple[str, str, str]] = []
    for method, path, option in routes:
        if all((method, path) != (m, p) for m, p, _ in out):
            out.append((method, path, option))
    return out


async def find_body_route(
    client: httpx.AsyncClient,
    origin: float,
    routes: Sequence[tuple[str, str, str]],
    allows: dict[str, tuple[str, ...]],
) -> BodyRoute:
    """The route malformed JSON is sent to; `routes` are (method, path, option name).

    `allows` is filled with the ``Allow`` methods read for each path asked.
    """
    for method, path, option in routes:
        if method in BODY_METHODS:
            return BodyRoute(method, path, f"{method} from {option}")
    asked: list[str] = []
    for _, path, _ in routes:
        if path in allows or path in asked:
            continue
        asked.append(path)
        answer = await exchange(client, origin, path, "OPTIONS")
        allows[path] = answer.allow
        for method in BODY_METHODS:
            if method in answer.allow:
                return BodyRoute(method, path, f"{method} listed by the Allow of OPTIONS {path}")
    listed = "; ".join(
        f"OPTIONS {p} allowed {', '.join(sorted(allows[p])) if allows.get(p) else 'nothing said'}"
        for p in asked
    )
    return BodyRoute(
        None, routes[0][1] if routes else "/", f"no route of the suite accepts a body ({listed})"
    )


def wrong_method(allow: tuple[str, ...]) -> str:
    """A method the route does not allow (DELETE when its Allow is unknown)."""
    return next((m for m in WRONG_METHODS if m not in allow), "DELETE") if allow else "DELETE"


def _case(name: str, ex: Exchange, method: str, path: str, expected: str | int) -> ErrorCase:
    excluded = NOT_JUDGED if name == "malformed_json" else frozenset()
    return ErrorCase(name, method, path, expected, ex.status, ex.error, ex.ms, excluded=excluded)


async def error_cases(
    client: httpx.AsyncClient,
    routes: Sequence[tuple[str, str, str]],
    out: list[ErrorCase],
) -> None:
    """Send the three wrong requests, appending each case to `out` as it ends.

    `routes` are the suite's (method, path, option) in order; the first is the burst route.
    """
    origin = time.perf_counter()
    routes = _unique(routes)
    allows: dict[str, tuple[str, ...]] = {}
    target = await find_body_route(client, origin, routes, allows)
    if target.method is None:
        out.append(ErrorCase("malformed_json", "POST", target.path, "4xx", excluded=NOT_JUDGED,
                             applicable=False, note=target.note))  # fmt: skip
    else:
        ex = await exchange(client, origin, target.path, target.method, MALFORMED_JSON,
                            JSON_HEADERS)  # fmt: skip
        case = _case("malformed_json", ex, target.method, target.path, "4xx")
        out.append(dataclasses.replace(case, note=target.note))
    unknown = f"/crisisctl-validate-{secrets.token_hex(6)}"
    ex = await exchange(client, origin, unknown)
    out.append(_case("unknown_route", ex, "GET", unknown, 404))
    path = routes[0][1]
    method = wrong_method(allows.get(path, ()))
    ex = await exchange(client, origin, path, method)
    out.append(_case("wrong_method", ex, method, path, 405))
