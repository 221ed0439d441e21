"""Journeys compiled: steps with templates, extraction rules, feeders; errors at file:line.

A journey runs in either model (`crisisctl.load.journey_run`, `crisisctl.load.journey_open`).
`compile_journey(scenario, base_dir, source, root)` checks everything a journey needs before
the run: every ``{name}`` of a step is a scenario variable, a feeder column or a value an
EARLIER step extracts (one used before the step that extracts it, or never extracted, is an
error at the step's ``file:line``); the feeders' files are read (a missing file or column is
an error too); JMESPath expressions and regular expressions compile; step names are unique
and every threshold scoped to a step names one. `Extractor.apply` takes a value out of a
response (None when it is not there: the run counts that request as failed, error kind
``extract``). `Step.render` gives the method, target, headers and body for one request.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jmespath
import yaml
from jmespath.exceptions import JMESPathError

from crisisctl.load.feeders import Feeder, FeederError, columns_of, load_rows
from crisisctl.load.journey_spec import ExtractSpec, StepSpec
from crisisctl.load.scenario import ClosedModel, Scenario, ScenarioError, locate
from crisisctl.load.templates import (
    JsonTemplate,
    StringTemplate,
    TemplateError,
    ValueSource,
    query_text,
    variable_sources,
)

__all__ = ["Extractor", "Journey", "Step", "compile_extractor", "compile_journey"]

#: the error kind of a request whose response lacked a value a step extracts
EXTRACT_ERROR = "extract"


@dataclass(frozen=True, slots=True)
class Extractor:
    """One ``extract`` rule: `kind` is ``json``, ``header`` or ``regex``."""

    name: str
    kind: str
    expression: str
    compiled: Any = None

    def apply(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """The value in a response (`headers`: names lower-cased), or None."""
        if self.kind == "header":
            value = headers.get(self.expression)
            return value if value else None
        text = body.decode("utf-8", "replace")
        if self.kind == "regex":
            match = self.compiled.search(text)
            if match is None:
                return None
            return str(match.group(1) if match.re.groups else match.group(0))
        try:
            data = json.loads(text)
        except ValueError:
            return None
        found = self.compiled.search(data)
        if found is None or isinstance(found, dict | list):
            return None
        return str(found).lower() if isinstance(found, bool) else str(found)


def _compile_regex(pattern: str) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": still valid
        return re.compile(pattern)


def compile_extractor(name: str, spec: ExtractSpec) -> Extractor:
    """The rule, compiled; TemplateError for a bad JMESPath expression or regex."""
    if spec.header is not None:
        if not spec.header.strip() or any(c in spec.header for c in ":\r\n"):
            raise TemplateError(f"{spec.header!r} is not a header name.")
        return Extractor(name, "header", spec.header.strip().lower())
    if spec.regex is not None:
        try:
            return Extractor(name, "regex", spec.regex, _compile_regex(spec.regex))
        except re.error as exc:
            raise TemplateError(f"the regex {spec.regex!r} is not valid ({exc}).") from None
    assert spec.json_path is not None
    try:
        return Extractor(name, "json", spec.json_path, jmespath.compile(spec.json_path))
    except JMESPathError as exc:
        message = str(exc).splitlines()[0]
        raise TemplateError(
            f"{spec.json_path!r} is not a JMESPath expression ({message}); write e.g. "
            "data.token or items[0].id."
        ) from None


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled step."""

    name: str
    method: str
    path: StringTemplate
    query: tuple[tuple[StringTemplate, StringTemplate], ...]
    headers: tuple[tuple[str, StringTemplate], ...]
    body: JsonTemplate | StringTemplate | None
    form: tuple[tuple[str, StringTemplate], ...] | None
    content_type: str | None
    expect: frozenset[int] | None
    extractors: tuple[Extractor, ...]
    names: tuple[str, ...]
    spec_path: str

    def render(self, values: Mapping[str, object]) -> tuple[str, dict[str, str], bytes | None]:
        """The request target (path and query), headers and body for `values`."""
        target = self.path.render(values, encode=True)
        if self.query:
            target += "?" + "&".join(
                f"{quote(k.render(values), safe='')}={quote(v.render(values), safe='')}"
                for k, v in self.query
            )
        headers = {}
        for name, value in self.headers:
            text = value.render(values)
            headers[name] = text.replace("\r", " ").replace("\n", " ")
        if self.content_type is not None:
            headers.setdefault("Content-Type", self.content_type)
        body: bytes | None = None
        if isinstance(self.body, JsonTemplate):
            body = self.body.render(values)
        elif self.body is not None:
            body = self.body.render(values).encode()
        elif self.form is not None:
            body = urlencode([(k, v.render(values)) for k, v in self.form]).encode()
        return target, headers, body


@dataclass(slots=True)
class Journey:
    """A scenario's steps, its value sources and its feeders."""

    steps: list[Step]
    sources: dict[str, ValueSource] = field(default_factory=dict)
    feeders: list[Feeder] = field(default_factory=list)

    def part(self, index: int, count: int) -> Journey:
        """Process `index` of `count`'s journey (unique feeders' rows split between them)."""
        return Journey(self.steps, self.sources, [f.part(index, count) for f in self.feeders])


def _step(
    index: int,
    spec: StepSpec,
    prefix: str,
    scenario: Scenario,
    known: set[str],
    later: Mapping[str, int],
    problems: list[tuple[tuple[str | int, ...], str]],
) -> Step | None:
    loc: tuple[str | int, ...] = ("steps", index)
    fields: list[tuple[str, Any]] = [("path", prefix.replace("{", "{{") + spec.path)]
    fields += [("query", (k, query_text(v))) for k, v in spec.query.items()]
    headers = {**scenario.headers, **spec.headers}
    fields += [("headers", (k, v)) for k, v in headers.items()]
    fields += [("form", (k, v)) for k, v in (spec.form or {}).items()]
    if spec.json_body is not None:
        fields.append(("json", spec.json_body))
    elif spec.body is not None:
        fields.append(("body", spec.body))
    parts: dict[str, Any] = {}
    names: list[str] = []
    ok = True
    for name, value in fields:
        try:
            if name == "json":
                compiled: Any = JsonTemplate.compile(value)
            elif isinstance(value, tuple):
                key = value[0] if name in ("headers", "form") else StringTemplate.compile(value[0])
                compiled = (key, StringTemplate.compile(value[1]))
            else:
                compiled = StringTemplate.compile(value)
        except TemplateError as exc:
            problems.append(((*loc, name), str(exc)))
            ok = False
            continue
        if isinstance(compiled, tuple):
            parts.setdefault(name, []).append(compiled)
            used = [n for part in compiled if hasattr(part, "names") for n in part.names]
        else:
            parts[name] = compiled
            used = list(compiled.names)
        names += used
        for unknown in sorted({n for n in used if n not in known}):
            ok = False
            if unknown in later:
                message = (
                    f"{{{unknown}}} is used before it is extracted (by steps[{later[unknown]}]); "
                    "a step can only use values extracted by the steps before it"
                )
            else:
                message = (
                    f"no variable named {unknown} (define it in variables, as a feeder column, "
                    "or extract it in an earlier step)"
                )
            problems.append(((*loc, name), message))
    extractors = []
    for name, rule in spec.extract.items():
        try:
            extractors.append(compile_extractor(name, rule))
        except TemplateError as exc:
            problems.append(((*loc, "extract", name), str(exc)))
            ok = False
    if not ok:
        return None
    content_type = None
    if spec.json_body is not None:
        content_type = "application/json"
    elif spec.form is not None:
        content_type = "application/x-www-form-urlencoded"
    if any(k.lower() == "content-type" for k in headers):
        content_type = None
    return Step(
        name=spec.label,
        method=spec.method.upper(),
        path=parts["path"],
        query=tuple(parts.get("query", ())),
        headers=tuple(parts.get("headers", ())),
        body=parts.get("json", parts.get("body")),
        form=tuple(parts.get("form", ())) if spec.form is not None else None,
        content_type=content_type,
        expect=frozenset(spec.expect_status) if spec.expect_status else None,
        extractors=tuple(extractors),
        names=tuple(dict.fromkeys(names)),
        spec_path=spec.path,
    )


def _unique_rows_needed(scenario: Scenario) -> tuple[int, str]:
    """How many rows a unique feeder needs: one per closed-model user, or one per open-model
    arrival (counted from the schedule; an unseeded Poisson count gets a 4-sigma margin)."""
    model = scenario.model
    if isinstance(model, ClosedModel):
        users = max([model.users] + [s.target for s in model.stages])
        return int(users + 0.999999), "users"
    schedule = model.schedule()
    if model.arrival == "poisson" and scenario.seed is None:
        expected = schedule.expected()
        return math.ceil(expected + 4 * math.sqrt(expected)), "arrivals"
    return sum(1 for _ in schedule.arrivals(model.arrival, scenario.seed)), "arrivals"


def compile_journey(
    scenario: Scenario, base_dir: Path, source: str = "scenario", root: yaml.Node | None = None
) -> Journey:
    """The scenario's journey; ScenarioError lists every problem at ``file:line: field``."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    sources, found = variable_sources(scenario.variables, base_dir, ("variables",))
    problems += found
    known = set(sources)
    feeders = []
    for i, feed in enumerate(scenario.feeders):
        kind = "csv" if feed.csv is not None else "jsonl"
        try:
            rows = load_rows(base_dir / feed.file, kind)
        except FeederError as exc:
            problems.append((("feeders", i, kind), str(exc)))
            continue
        feeders.append(Feeder(rows, feed.mode, f"feeder {feed.file}"))
        known |= columns_of(rows)
    if any(feeder.mode == "unique" for feeder in feeders):
        needed, what = _unique_rows_needed(scenario)
        for i, feeder in enumerate(feeders):
            try:
                feeder.check_unique(needed, what)
            except FeederError as exc:
                problems.append((("feeders", i, "mode"), str(exc)))
    later: dict[str, int] = {}
    for i, spec in enumerate(scenario.steps):
        for name in spec.extract:
            later.setdefault(name, i)
    prefix = scenario.base_url.split("://", 1)[-1].partition("/")[2]
    prefix = "/" + prefix.rstrip("/") if prefix.strip("/") else ""
    steps = []
    labels: set[str] = set()
    for i, spec in enumerate(scenario.steps):
        if spec.label in labels:
            problems.append((("steps", i, "name"), f"the step name {spec.label!r} is used twice"))
        labels.add(spec.label)
        step = _step(i, spec, prefix, scenario, known, later, problems)
        if step is not None:
            steps.append(step)
        known |= set(spec.extract)
    for i, t in enumerate(scenario.thresholds):
        scope = t.threshold().operation
        if scope is not None and scope not in labels:
            problems.append(
                (("thresholds", i), f"there is no step named {scope!r} (steps: "
                 f"{', '.join(sorted(labels))})")
            )  # fmt: skip
    if problems:
        raise ScenarioError(source, _located(problems, source, root))
    return Journey(steps, sources, feeders)


def _located(
    problems: Sequence[tuple[tuple[str | int, ...], str]], source: str, root: yaml.Node | None
) -> list[str]:
    lines = []
    for loc, message in problems:
        line, name = locate(root, loc)
        where = f"{source}:{line}" if line is not None else source
        lines.append(f"{where}: {name}: {message}")
    return lines
