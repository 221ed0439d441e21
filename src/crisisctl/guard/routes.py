"""Route resolution: raw request path -> (route label, matching rule, whether it is critical).

Metrics, breakers and per-route state are keyed by route *label*, so label cardinality stays
bounded. Labels come, in this order, from:

1. the wrapped app's route templates when it exposes Starlette-style routes (Starlette,
   FastAPI, Mounts within them): ``/api/scans/{id}``;
2. the guard's own rules: a rule's pattern labels the paths it matches, unless the pattern
   ends in a wildcard (``*`` or ``{x:path}``), which names a group, not a route;
3. the raw path itself, for what discovery cannot see (a plain ASGI app, a sub-app mounted
   without routes): segments that look like identifiers (all digits, a UUID, 16 or more hex
   digits, or longer than 64 characters) become ``{id}``, so ``/users/42/orders/7`` is
   labelled ``/users/{id}/orders/{id}``. One failing path then breaks only its own circuit.

A path the discovered app does not route (a 404) folds into the single label ``<unmatched>``,
and once `max_labels` distinct labels exist new ones fold into ``<other>``. These two labels
are aggregates, not routes: the guard gives them no circuit breaker.

Critical paths (health checks) are recognised on the *raw* path, whatever its label: two paths
sharing a label (``<unmatched>``, ``<other>``, a rule's group) never share a critical flag.

Methods outside the HTTP standard set (and those named by a rule) resolve as ``OTHER``, so a
client inventing a method per request cannot grow any table or metric.

Resolution (and whatever the caller builds from it) is cached per (method, path) in a bounded
dict, so the steady-state cost per request is two dict lookups; the cache is cleared when it
fills (paths with ids can be unbounded). A miss resolves with `RouteTable.resolve_fast`: the
templates through a segment trie (guard/routetrie.py: a dict lookup per path segment), those
the trie cannot express, the rules allowed for the method and the critical paths through one
combined regex each, an alternation in priority order whose matching group (``lastindex``)
names the winner, so a miss costs at most three ``match`` calls whatever the number of
routes. A path with ids (never cached) whose template has no rule and whose first segment
cannot start a critical path costs the trie's walk and one list index: each template keeps
its resolved value once its label is booked. `RouteTable.resolve` is the readable reference
it must agree with (tests/unit/test_routes_fast.py and tests/unit/test_routetrie.py pin the
two).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from crisisctl.guard.config import RouteRule
from crisisctl.guard.routetrie import NO_MATCH, TemplateTrie

T = TypeVar("T")

UNMATCHED: Final = "<unmatched>"
OTHER: Final = "<other>"
#: the method label of every method outside `STANDARD_METHODS` (and the rules' methods)
OTHER_METHOD: Final = "OTHER"
#: the method label of WebSocket handshakes (their scope has no method)
WEBSOCKET_METHOD: Final = "WEBSOCKET"
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_CACHE_LIMIT = 8192
_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_]+))?\}")
#: identifier-like path segments: digits, UUIDs, long hex (hashes, object ids)
_ID_SEGMENT = re.compile(
    r"\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}"
)
#: a segment longer than this is an identifier too (nobody names a route that way)
_LONG_SEGMENT: Final = 64
ID_LABEL: Final = "{id}"
#: a rule and the label it gives (None for a wildcard rule)
_RuleEntry = tuple[RouteRule, str | None]


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


def combine(regexes: Sequence[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex matching where the first of `regexes` that matches does, group *i* + 1 set.

    Each regex comes from `compile_template` (anchored by ``^``, no groups of its own), so
    alternative *i* is group *i* + 1 and ``match.lastindex - 1`` is the index of the winner;
    the alternation is tried left to right, like a scan in order. None when `regexes` is empty.
    """
    if not regexes:
        return None
    return re.compile("|".join("(" + r.pattern.removeprefix("^") + ")" for r in regexes))


def literal_first_segment(template: str) -> str | None:
    """The first segment every path the template matches starts with (``/svc07/items/{id}``
    -> ``svc07``), or None when it is not a fixed word (a parameter, ``/a*``, ``/*``)."""
    body = template[:-1] if template.endswith("*") else template
    if not body.startswith("/"):
        return None
    first, slash, _ = body[1:].partition("/")
    if not first or "{" in first or (not slash and body != template):
        return None  # empty, a parameter (or a brace), or a prefix match: "/a*" matches "/ab"
    return first


def normalise_template(template: str) -> str:
    """Drop converters (``{id:int}`` -> ``{id}``) so labels read the same whatever the app."""
    return _PARAM.sub(
        lambda m: "{" + m.group(1) + ("" if m.group(2) != "path" else ":path") + "}", template
    )


def is_wildcard(template: str) -> bool:
    """Whether a template matches whole subtrees (trailing ``*`` or a ``{x:path}`` parameter)."""
    return template.endswith("*") or any(m.group(2) == "path" for m in _PARAM.finditer(template))


def path_label(path: str) -> str:
    """The label of a path no template names: identifier-like segments become ``{id}``."""
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if len(segment) > _LONG_SEGMENT or _ID_SEGMENT.fullmatch(segment):
            segments[i] = ID_LABEL
    return "/".join(segments)


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the guard needs to know about a request's route."""

    label: str
    rule: RouteRule | None
    #: the raw path is one of the critical paths (never limited, queued, shed or broken)
    critical: bool = False
    #: its index among its table's interned values (-1: not interned), where the table keeps
    #: what it built from it: a list index, not a dict lookup of its id
    serial: int = field(default=-1, compare=False)


def discover_templates(app: Any) -> list[str]:
    """Route templates of a Starlette/FastAPI app (following Mounts), most specific first.

    Walks `app.routes` / `app.router.routes` through middleware layers (`.app`). A Mount of an
    app without routes comes out as ``<mount path>/*``: the guard cannot see inside it and
    labels its paths one by one. Returns [] for apps that expose no routes.
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
            found.append(prefix + path.rstrip("/") + "/*")
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
        critical_paths: Sequence[str] = (),
    ) -> None:
        self._build = build
        self._rules = [
            (compile_template(rule.pattern), rule, _rule_label(rule.pattern)) for rule in rules
        ]
        #: (regex, label, opaque): an opaque template (``/mount/*``) labels by path below it
        self._templates = [
            (compile_template(t), normalise_template(t), t.endswith("*")) for t in templates
        ]
        self._critical = [compile_template(p) for p in critical_paths]
        #: the fast path (`resolve_fast`): the templates as one alternation (for paths the
        #: trie does not take), and as a trie plus an alternation of those it cannot express
        self._templates_re = combine([regex for regex, _, _ in self._templates])
        self._trie = TemplateTrie(templates)
        self._fallback = self._trie.fallback
        self._fallback_re = combine([self._templates[i][0] for i in self._fallback])
        #: the smallest index the fallback regex can give: a trie winner below it is final
        self._fallback_least = self._fallback[0] if self._fallback else NO_MATCH
        #: (label, id of the rule or -1, critical) -> the one Resolved of that value (bounded:
        #: labels by `max_labels`, rules by the configuration)
        self._resolved: dict[tuple[str, int, bool], Resolved] = {}
        #: label -> the Resolved of that label with no rule, not critical (the common value:
        #: found without building a tuple)
        self._plain: dict[str, Resolved] = {}
        #: template index -> that Resolved of the template's label, once its label is booked
        #: (an opaque template's label is the path's: never kept here)
        self._plain_by_template: list[Resolved | None] = [None] * len(self._templates)
        #: method -> `serial` of a Resolved (interned above) -> what `build` made of it: a
        #: path's route is built once per distinct value, not once per path
        self._built: dict[str, list[T | None]] = {}
        #: method (one no rule names) -> template index -> what `build` made of the template's
        #: own value (no rule, not critical): `lookup`'s shortcut past `resolve_fast`
        self._direct: dict[str, list[T | None]] = {}
        self._critical_re = combine(self._critical)
        #: a critical path can only match paths starting with one of these segments, unless
        #: one of them starts with something else than a fixed word (`_critical_any`)
        critical_firsts = [literal_first_segment(p) for p in critical_paths]
        self._critical_firsts = frozenset(f for f in critical_firsts if f is not None)
        #: their first characters (the words are never empty): most paths are told apart by
        #: the one (cached) character after their first "/"
        self._critical_c1 = frozenset(f[0] for f in self._critical_firsts)
        self._critical_any = None in critical_firsts
        #: method -> (combined regex of the rules allowed for it, their (rule, label))
        self._rules_re: dict[str, tuple[re.Pattern[str] | None, list[_RuleEntry]]] = {}
        self._methods = STANDARD_METHODS.union(
            m for rule in rules if rule.methods is not None for m in rule.methods
        ) | {WEBSOCKET_METHOD}
        self._max_labels = max_labels
        self._labels: set[str] = set()
        self.cache: dict[str, dict[str, T]] = {}
        self._cache_size = 0

    @property
    def labels(self) -> frozenset[str]:
        """Labels handed out so far."""
        return frozenset(self._labels)

    def method_label(self, method: str) -> str:
        """`method`, or ``OTHER`` when it is neither standard nor named by a rule."""
        return method if method in self._methods else OTHER_METHOD

    def lookup(self, method: str, path: str, *, probed: bool = False) -> T:
        """The built object for one request; cached for a path that is its own label (a static
        route). (The guard reads the cache itself, and says `probed` when it found nothing under
        a method the table knows: not probed again.)
        """
        by_path = self.cache.get(method)
        if by_path is None:  # (the cache has a table only under the methods it knows)
            if method not in self._methods:
                method = OTHER_METHOD
                probed = False  # the caller looked under the method, not under OTHER
                by_path = self.cache.get(method)
            if by_path is None:
                by_path = self.cache[method] = {}
        if not probed:
            hit = by_path.get(path)
            if hit is not None:
                return hit
        direct = self._direct.get(method)
        if direct is None:
            resolved = self.resolve_fast(method, path)
            index = NO_MATCH
        else:
            # a method no rule names: a path of a template seen before is its built object
            # (not critical, the template not opaque) without a Resolved looked up or made
            plain = path.startswith("/") and "\n" not in path
            index = self._template_index(path, plain)
            if index != NO_MATCH:
                known = direct[index]
                if known is not None and not self._is_critical(path, plain):
                    return known
            resolved = self._resolve_indexed(method, path, plain, index)
        by_serial = self._built.get(method)
        if by_serial is None:
            by_serial = self._built[method] = []
        serial = resolved.serial
        if serial < 0:  # (every value resolve_fast gives is interned)
            return self._build(resolved, method)
        if serial >= len(by_serial):
            by_serial.extend([None] * (serial + 1 - len(by_serial)))
        built = by_serial[serial]
        if built is None:
            built = by_serial[serial] = self._build(resolved, method)
        if direct is not None and index != NO_MATCH and resolved is self._plain_by_template[index]:
            direct[index] = built  # (the template's own value: no rule, not critical)
        if resolved.label != path:
            # a path with parameters (an id: rarely the same twice), a 404 or a folded label:
            # not kept, or the cache would hold (and the allocator never reuse) every path seen
            return built
        if self._cache_size >= _CACHE_LIMIT:
            for cached in self.cache.values():
                cached.clear()
            self._cache_size = 0
        by_path[path] = built
        self._cache_size += 1
        return built

    def resolve(self, method: str, path: str) -> Resolved:
        """The route of (method, path): the readable reference of `resolve_fast`."""
        rule: RouteRule | None = None
        rule_label: str | None = None
        for regex, candidate, candidate_label in self._rules:
            if candidate.methods is not None and method not in candidate.methods:
                continue
            if regex.match(path):
                rule, rule_label = candidate, candidate_label
                break
        label = None
        for regex, template, opaque in self._templates:
            if regex.match(path):
                label = path_label(path) if opaque else template
                break
        if label is None:
            if rule_label is not None:
                label = rule_label
            elif self._templates:
                label = UNMATCHED  # the app routes nothing here: a 404
            else:
                label = path_label(path)  # nothing discovered: each path its own label
        if label not in self._labels:
            if len(self._labels) >= self._max_labels:
                label = OTHER
            else:
                self._labels.add(label)
        critical = any(regex.match(path) for regex in self._critical)
        return Resolved(label, rule, critical)

    def resolve_fast(self, method: str, path: str) -> Resolved:
        """`resolve` with one combined regex per list (same result, same label bookkeeping)."""
        # the trie and the index of critical paths by first segment take paths starting with
        # "/" and without "\n" ("$" also matches before a final "\n"): the regexes the others
        plain = path.startswith("/") and "\n" not in path
        return self._resolve_indexed(method, path, plain, self._template_index(path, plain))

    def _template_index(self, path: str, plain: bool) -> int:
        """The index of the first template matching `path` (`plain`: as `resolve_fast` says),
        or NO_MATCH."""
        if not self._templates:
            return NO_MATCH
        if plain:
            index = self._trie.match(path)
            fallback_re = self._fallback_re
            if index > self._fallback_least and fallback_re is not None:
                found = fallback_re.match(path)
                if found is not None:
                    index = min(index, self._fallback[_winner(found)])
            return index
        templates_re = self._templates_re
        found = templates_re.match(path) if templates_re is not None else None
        return _winner(found) if found is not None else NO_MATCH

    def _resolve_indexed(self, method: str, path: str, plain: bool, index: int) -> Resolved:
        """`resolve_fast` once the path's template is known (`index`, or NO_MATCH)."""
        rules = self._rules_re.get(method)
        if rules is None:
            rules = self._rules_for(method)
        rule: RouteRule | None = None
        rule_label: str | None = None
        rules_re = rules[0]
        if rules_re is not None:
            found = rules_re.match(path)
            if found is not None:
                rule, rule_label = rules[1][_winner(found)]
        label = None
        judged = False  # (`critical` below is judged once)
        critical = False
        if index != NO_MATCH:
            _, template, opaque = self._templates[index]
            if rule is None and not opaque:
                known = self._plain_by_template[index]
                if known is not None:
                    critical = self._is_critical(path, plain)
                    judged = True
                    if not critical:
                        return known
            label = path_label(path) if opaque else template
        if label is None:
            if rule_label is not None:
                label = rule_label
            elif self._templates:
                label = UNMATCHED
            else:
                label = path_label(path)
        if label not in self._labels:
            if len(self._labels) >= self._max_labels:
                label = OTHER
            else:
                self._labels.add(label)
        if not judged:
            critical = self._is_critical(path, plain)
        if rule is None and not critical:
            resolved = self._plain.get(label)
            if resolved is None:
                resolved = self._plain[label] = self._interned(label, rule, critical)
            if index != NO_MATCH and not self._templates[index][2]:
                self._plain_by_template[index] = resolved  # (its label is booked by now)
            return resolved
        return self._interned(label, rule, critical)

    def _is_critical(self, path: str, plain: bool) -> bool:
        """Whether `path` is one of the critical paths (`plain`: as `resolve_fast` says)."""
        critical_re = self._critical_re
        if critical_re is None:
            return False
        if plain and not self._critical_any:
            if len(path) < 2 or path[1] not in self._critical_c1:
                return False
            end = path.find("/", 1)
            first = path[1:] if end < 0 else path[1:end]
            return first in self._critical_firsts and critical_re.match(path) is not None
        return critical_re.match(path) is not None

    def _interned(self, label: str, rule: RouteRule | None, critical: bool) -> Resolved:
        """The one Resolved of this value (bounded: labels by `max_labels`, rules by the
        configuration)."""
        value = (label, -1 if rule is None else id(rule), critical)
        resolved = self._resolved.get(value)
        if resolved is None:
            serial = len(self._resolved)
            resolved = self._resolved[value] = Resolved(label, rule, critical, serial)
        return resolved

    def _rules_for(self, method: str) -> tuple[re.Pattern[str] | None, list[_RuleEntry]]:
        """The rules allowed for `method`, in order, and their combined regex (cached)."""
        allowed = [
            (regex, rule, label)
            for regex, rule, label in self._rules
            if rule.methods is None or method in rule.methods
        ]
        entry = (combine([regex for regex, _, _ in allowed]), [(r, lb) for _, r, lb in allowed])
        if method in self._methods or method == OTHER_METHOD:
            self._rules_re[method] = entry  # bounded: the table's methods only
            if entry[0] is None and self._templates:
                self._direct[method] = [None] * len(self._templates)
        return entry


def _winner(found: re.Match[str]) -> int:
    """Index of the alternative of a `combine` regex that matched."""
    index = found.lastindex
    assert index is not None  # every alternative is a group
    return index - 1


def _rule_label(pattern: str) -> str | None:
    """A rule's pattern as a label, unless it is a wildcard (a group of routes, not one)."""
    return None if is_wildcard(pattern) else normalise_template(pattern)
