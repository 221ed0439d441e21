"""Route resolution: raw request path -> (route template label, matching rule).

Metrics are labelled by route *template* (``/api/scans/{id}``), never by raw path, so label
cardinality stays bounded. Templates come from the wrapped app when it exposes Starlette-style
routes (Starlette, FastAPI, Mounts within them) and from the guard's own rules; any path that
matches neither folds into the single label ``<unmatched>``, and once `max_labels` distinct
labels exist, new ones fold into ``<other>``.

Resolution (and whatever the caller builds from it) is cached per (method, path) in a bounded
dict, so the steady-state cost per request is two dict lookups; the cache is cleared when it
fills (paths with ids can be unbounded).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from crisisctl.guard.config import RouteRule

T = TypeVar("T")

UNMATCHED = "<unmatched>"
OTHER = "<other>"
_CACHE_LIMIT = 8192
_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_]+))?\}")


def compile_template(template: str) -> re.Pattern[str]:
    """Regex for a route template: ``{x}`` one segment, ``{x:path}`` or trailing ``*`` the rest."""
    prefix_match = template.endswith("*")
    body = template[:-1] if prefix_match else template
    out = ["^"]
    pos = 0
    for match in _PARAM.finditer(body):
        out.append(re.escape(body[pos : match.start()]))
        out.append(".*" if match.group(2) == "path" else "[^/]+")
        pos = match.end()
    out.append(re.escape(body[pos:]))
    out.append(".*$" if prefix_match else "/?$")
    return re.compile("".join(out))


def normalise_template(template: str) -> str:
    """Drop converters (``{id:int}`` -> ``{id}``) so labels read the same whatever the app."""
    return _PARAM.sub(
        lambda m: "{" + m.group(1) + ("" if m.group(2) != "path" else ":path") + "}", template
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the guard needs to know about a request's route."""

    label: str
    rule: RouteRule | None


def discover_templates(app: Any) -> list[str]:
    """Route templates of a Starlette/FastAPI app (following Mounts), most specific first.

    Walks `app.routes` / `app.router.routes` through middleware layers (`.app`). Returns [] for
    apps that expose no routes — the guard then labels by its rules only.
    """
    seen: set[int] = set()
    node = app
    for _ in range(32):
        if node is None or id(node) in seen:
            break
        seen.add(id(node))
        routes = getattr(node, "routes", None)
        if routes is None:
            router = getattr(node, "router", None)
            routes = getattr(router, "routes", None)
        if isinstance(routes, Sequence) and not isinstance(routes, str):
            return _walk(routes, "")
        node = getattr(node, "app", None)
    return []


def _walk(routes: Iterable[Any], prefix: str) -> list[str]:
    found: list[str] = []
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        children = getattr(route, "routes", None)
        if children and not isinstance(children, str):
            found.extend(_walk(children, prefix + path.rstrip("/")))
        elif children is not None or type(route).__name__ == "Mount":
            found.append(prefix + path.rstrip("/") + "/{path:path}")
        else:
            found.append(prefix + path)
    return found


class RouteTable(Generic[T]):
    """Resolves (method, path) to `build(resolved, method)`, caching the results (bounded)."""

    def __init__(
        self,
        rules: Sequence[RouteRule],
        templates: Sequence[str],
        build: Callable[[Resolved, str], T],
        *,
        max_labels: int = 500,
    ) -> None:
        self._build = build
        self._rules = [(compile_template(rule.pattern), rule) for rule in rules]
        self._templates = [(compile_template(t), normalise_template(t)) for t in templates]
        self._max_labels = max_labels
        self._labels: set[str] = set()
        self.cache: dict[str, dict[str, T]] = {}
        self._cache_size = 0

    @property
    def labels(self) -> frozenset[str]:
        """Labels handed out so far."""
        return frozenset(self._labels)

    def lookup(self, method: str, path: str) -> T:
        """The built object for one request; cached. (The guard inlines the cache hit.)"""
        by_path = self.cache.get(method)
        if by_path is not None:
            hit = by_path.get(path)
            if hit is not None:
                return hit
        else:
            by_path = self.cache[method] = {}
        built = self._build(self.resolve(method, path), method)
        if self._cache_size >= _CACHE_LIMIT:
            for cached in self.cache.values():
                cached.clear()
            self._cache_size = 0
        by_path[path] = built
        self._cache_size += 1
        return built

    def resolve(self, method: str, path: str) -> Resolved:
        rule: RouteRule | None = None
        rule_label: str | None = None
        for regex, candidate in self._rules:
            if candidate.methods is not None and method not in candidate.methods:
                continue
            if regex.match(path):
                rule, rule_label = candidate, normalise_template(candidate.pattern)
                break
        label = None
        for regex, template in self._templates:
            if regex.match(path):
                label = template
                break
        if label is None:
            label = rule_label if rule_label is not None else UNMATCHED
        if label not in self._labels:
            if len(self._labels) >= self._max_labels:
                label = OTHER
            else:
                self._labels.add(label)
        return Resolved(label, rule)
