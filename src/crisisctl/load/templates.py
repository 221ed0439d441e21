"""Request templates: ``{name}`` placeholders in paths, queries, headers and bodies.

Values come from sources: an integer range (``range: [1, 1000]``), a list, or a CSV column,
drawn at random or in order. Every placeholder of one request gets one value per name, so
``/api/clients/{id}`` and ``{"id": "{id}"}`` agree. ``{{`` and ``}}`` are literal braces. In a
JSON body a string that is exactly one placeholder (``"{id}"``) takes the value with its type
(an integer stays an integer). Path and query values are percent-encoded.

`RequestTemplate.bind(extra_headers)` gives the `BoundRequest` a virtual user sends: the
fixed parts of the request are assembled once, so a request without placeholders costs
nothing per send. `FixedRequest` wraps bytes already built (the engine's plain URL runs).
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from crisisctl.load.target import Target

__all__ = [
    "BoundRequest",
    "FixedRequest",
    "JsonTemplate",
    "ListSource",
    "RangeSource",
    "RequestTemplate",
    "StringTemplate",
    "TemplateError",
    "ValueSource",
    "draw_values",
    "header_block",
    "load_csv_column",
    "query_text",
    "variable_sources",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_AGENT = "crisisctl-load/1"


class TemplateError(ValueError):
    """A template or value source that cannot be used (the message says why)."""


# -- value sources ---------------------------------------------------------------------------
class ValueSource(Protocol):
    """Gives one value per call (at random, or the next one in order)."""

    def next(self, rng: random.Random) -> object: ...


@dataclass(slots=True)
class RangeSource:
    """Integers from `low` to `high` inclusive."""

    low: int
    high: int
    sequential: bool = False
    _next: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise TemplateError(f"the range [{self.low}, {self.high}] is empty.")
        self._next = self.low

    def next(self, rng: random.Random) -> object:
        if not self.sequential:
            return rng.randint(self.low, self.high)
        value = self._next
        self._next = self.low if value >= self.high else value + 1
        return value


@dataclass(slots=True)
class ListSource:
    """Values of a list (or of a CSV column)."""

    values: Sequence[object]
    sequential: bool = False
    _next: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.values:
            raise TemplateError("a list of values must not be empty.")

    def next(self, rng: random.Random) -> object:
        if not self.sequential:
            return self.values[rng.randrange(len(self.values))]
        value = self.values[self._next]
        self._next = (self._next + 1) % len(self.values)
        return value


def load_csv_column(path: Path, column: str) -> list[str]:
    """The values of `column` (a header name) in the CSV file at `path`, in file order."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or column not in reader.fieldnames:
                found = ", ".join(reader.fieldnames or []) or "none"
                raise TemplateError(
                    f"the CSV file {path} has no column {column!r} (its columns: {found})."
                )
            values = [row[column] for row in reader if row.get(column) not in (None, "")]
    except OSError as exc:
        raise TemplateError(f"cannot read the CSV file {path} ({exc.strerror or exc}).") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TemplateError(f"the CSV file {path} is not valid UTF-8 CSV ({exc}).") from None
    if not values:
        raise TemplateError(f"the column {column!r} of {path} has no values.")
    return values


def draw_values(
    names: Sequence[str], sources: Mapping[str, ValueSource], rng: random.Random
) -> dict[str, object]:
    """One value for each name."""
    return {name: sources[name].next(rng) for name in names}


# -- string and JSON templates ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StringTemplate:
    """Literal text and placeholder names, alternating: ``parts[0] {names[0]} parts[1] …``."""

    parts: tuple[str, ...]
    names: tuple[str, ...]

    @classmethod
    def compile(cls, text: str) -> StringTemplate:
        """Split `text` at its ``{name}`` placeholders; TemplateError on a stray brace."""
        parts: list[str] = []
        names: list[str] = []
        literal: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char in "{}" and text[i : i + 2] in ("{{", "}}"):
                literal.append(char)
                i += 2
            elif char == "{":
                end = text.find("}", i)
                name = text[i + 1 : end] if end > 0 else ""
                if not _NAME.fullmatch(name):
                    raise TemplateError(
                        f"{text!r} has a '{{' that does not open a {{name}} placeholder "
                        "(write {{ for a literal brace)."
                    )
                parts.append("".join(literal))
                names.append(name)
                literal = []
                i = end + 1
            elif char == "}":
                raise TemplateError(f"{text!r} has a stray '}}' (write }}}} for a literal brace).")
            else:
                literal.append(char)
                i += 1
        parts.append("".join(literal))
        return cls(tuple(parts), tuple(names))

    @property
    def is_static(self) -> bool:
        """No placeholder."""
        return not self.names

    @property
    def single(self) -> str | None:
        """The name when the text is exactly one placeholder, else None."""
        if len(self.names) == 1 and self.parts == ("", ""):
            return self.names[0]
        return None

    def render(self, values: Mapping[str, object], encode: bool = False) -> str:
        """The text with each placeholder replaced (percent-encoded when `encode`)."""
        if not self.names:
            return self.parts[0]
        out = [self.parts[0]]
        for name, part in zip(self.names, self.parts[1:], strict=True):
            value = str(values[name])
            out.append(quote(value, safe="") if encode else value)
            out.append(part)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class JsonTemplate:
    """A JSON document whose strings may hold placeholders."""

    document: Any
    names: tuple[str, ...]

    @classmethod
    def compile(cls, document: Any) -> JsonTemplate:
        """Compile every string (keys stay literal); TemplateError on a bad placeholder."""
        names: list[str] = []

        def walk(node: Any) -> Any:
            if isinstance(node, str):
                template = StringTemplate.compile(node)
                names.extend(template.names)
                return template if template.names else template.parts[0]
            if isinstance(node, list):
                return [walk(item) for item in node]
            if isinstance(node, dict):
                return {str(key): walk(value) for key, value in node.items()}
            if node is None or isinstance(node, bool | int | float):
                return node
            raise TemplateError(f"{node!r} cannot be part of a JSON body.")

        compiled = walk(document)
        return cls(compiled, tuple(dict.fromkeys(names)))

    def render(self, values: Mapping[str, object]) -> bytes:
        """The JSON text (compact, UTF-8)."""

        def fill(node: Any) -> Any:
            if isinstance(node, StringTemplate):
                single = node.single
                return values[single] if single is not None else node.render(values)
            if isinstance(node, list):
                return [fill(item) for item in node]
            if isinstance(node, dict):
                return {key: fill(value) for key, value in node.items()}
            return node

        return json.dumps(fill(self.document), separators=(",", ":")).encode()


# -- requests --------------------------------------------------------------------------------
def header_block(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines; ValueError when a name or value holds a line break."""
    lines = []
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n") or not name or ":" in name:
            raise ValueError(f"header {name!r} is not a valid header line.")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class BoundRequest(Protocol):
    """What a virtual user sends for one operation: `render` gives a whole request."""

    @property
    def fixed(self) -> bytes | None: ...

    def render(self, rng: random.Random) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _StaticBound:
    fixed: bytes

    def render(self, rng: random.Random) -> bytes:
        return self.fixed


@dataclass(frozen=True, slots=True)
class FixedRequest:
    """A request already built (e.g. by `client.build_request`); `bind` adds header lines."""

    raw: bytes

    def bind(self, extra_headers: Mapping[str, str] | None = None) -> BoundRequest:
        """The request with `extra_headers` added to its head."""
        if not extra_headers:
            return _StaticBound(self.raw)
        head, sep, body = self.raw.partition(b"\r\n\r\n")
        return _StaticBound(head + b"\r\n" + header_block(extra_headers)[:-2] + sep + body)


@dataclass(frozen=True, slots=True)
class _TemplateBound:
    template: RequestTemplate
    head_fixed: bytes  # header lines that never change, ending in \r\n
    sources: Mapping[str, ValueSource]

    @property
    def fixed(self) -> bytes | None:
        return None

    def render(self, rng: random.Random) -> bytes:
        t = self.template
        values = {name: self.sources[name].next(rng) for name in t.names}
        target = t.path.render(values, encode=True)
        if t.query:
            target += "?" + "&".join(
                f"{quote(k.render(values), safe='')}={quote(v.render(values), safe='')}"
                for k, v in t.query
            )
        lines = [f"{t.method} {target} HTTP/1.1\r\n".encode("latin-1"), self.head_fixed]
        for name, value in t.headers:
            text = value.render(values)
            if "\r" in text or "\n" in text:
                text = text.replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}: {text}\r\n".encode("latin-1", "replace"))
        body: bytes | None = None
        if isinstance(t.body, JsonTemplate):
            body = t.body.render(values)
        elif t.body is not None:
            body = t.body.render(values).encode()
        if body is not None:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        if body is not None:
            lines.append(body)
        return b"".join(lines)


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """One operation's request: method, path, query, headers and body, with placeholders."""

    target: Target
    method: str
    path: StringTemplate
    query: tuple[tuple[StringTemplate, StringTemplate], ...] = ()
    headers: tuple[tuple[str, StringTemplate], ...] = ()
    body: JsonTemplate | StringTemplate | None = None
    content_type: str | None = None
    sources: Mapping[str, ValueSource] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Every placeholder name, once each, in order of appearance."""
        found: list[str] = list(self.path.names)
        for key, value in self.query:
            found += [*key.names, *value.names]
        for _, value in self.headers:
            found += value.names
        if self.body is not None:
            found += self.body.names
        return tuple(dict.fromkeys(found))

    def bind(self, extra_headers: Mapping[str, str] | None = None) -> BoundRequest:
        """The request a user sends, with `extra_headers` (e.g. a session cookie) added."""
        defaults = {"Host": self.target.host_header, "User-Agent": _USER_AGENT, "Accept": "*/*"}
        fixed: dict[str, tuple[str, str]] = {k.lower(): (k, v) for k, v in defaults.items()}
        if self.content_type is not None:
            fixed["content-type"] = ("Content-Type", self.content_type)
        templated = []
        for name, value in self.headers:
            if value.is_static:
                fixed[name.lower()] = (name, value.parts[0])
            else:
                fixed.pop(name.lower(), None)
                templated.append((name, value))
        for name, text in (extra_headers or {}).items():
            fixed[name.lower()] = (name, text)
        block = header_block(dict(fixed.values()))
        missing = [name for name in self.names if name not in self.sources]
        if missing:
            raise TemplateError(f"no values for {', '.join(missing)}.")
        template = RequestTemplate(
            self.target, self.method, self.path, self.query, tuple(templated), self.body,
            self.content_type, self.sources,
        )  # fmt: skip
        bound = _TemplateBound(template, block, self.sources)
        if not self.names:
            return _StaticBound(bound.render(random.Random(0)))
        return bound


class VariableSpec(Protocol):
    """What `variable_sources` reads of a scenario's variable (`scenario.VariableSpec`; a
    protocol, so the compiled request path's imports stay free of pydantic)."""

    @property
    def range(self) -> tuple[int, int] | None: ...
    @property
    def values(self) -> list[str | int | float | bool] | None: ...
    @property
    def csv(self) -> str | None: ...
    @property
    def column(self) -> str | None: ...
    @property
    def order(self) -> str: ...


#: where in a scenario a problem lies (pydantic-style location) and what it is
Problem = tuple[tuple[str | int, ...], str]


def variable_sources(
    specs: Mapping[str, VariableSpec], base_dir: Path, loc: tuple[str | int, ...]
) -> tuple[dict[str, ValueSource], list[Problem]]:
    """The value sources of a scenario's ``variables`` (or an operation's), and the problems
    found building them (a CSV file or column that is missing, an empty range), located under
    `loc`."""
    sources: dict[str, ValueSource] = {}
    problems: list[Problem] = []
    for name, spec in specs.items():
        sequential = spec.order == "sequential"
        try:
            if spec.range is not None:
                sources[name] = RangeSource(spec.range[0], spec.range[1], sequential)
            elif spec.values is not None:
                sources[name] = ListSource(list(spec.values), sequential)
            else:
                assert spec.csv is not None and spec.column is not None
                values = load_csv_column(base_dir / spec.csv, spec.column)
                sources[name] = ListSource(values, sequential)
        except TemplateError as exc:
            problems.append(((*loc, name, "csv" if spec.csv else "range"), str(exc)))
    return sources, problems


def query_text(value: object) -> str:
    """A query value as it goes in the URL (booleans lower-case, as YAML wrote them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
