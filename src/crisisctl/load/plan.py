"""From a validated `Scenario` to a running engine: compile, split, log in, execute.

`compile_operations` turns the scenario's operations into the engine's `Operation`s (request
templates with their value sources); template and data problems are reported like schema
problems, at ``file:line: field``. `share` gives one process its part of the load: the open
model's connections divided (its arrivals are split by `execute`: process *i* of *N* sends
arrivals i, i+N, … of the one schedule, `crisisctl.load.schedule.part_of`), the closed
model's users divided. `login` makes the scenario's login
request once per virtual user (or once per process in the open model) with httpx and keeps
the cookies and token it yields. `execute` does all of it and runs the engine.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from crisisctl.load.engine import Operation, run_closed_ops, run_open_ops
from crisisctl.load.recorder import Tick
from crisisctl.load.recording import LoadResult
from crisisctl.load.scenario import (
    ClosedModel,
    Login,
    OpenModel,
    Scenario,
    ScenarioError,
    Stage,
    locate,
)
from crisisctl.load.target import Target
from crisisctl.load.templates import (
    JsonTemplate,
    RequestTemplate,
    StringTemplate,
    TemplateError,
    query_text,
    variable_sources,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["RunError", "check_scenario", "compile_operations", "execute", "login", "share"]

#: Logins made at once (closed model: one per user).
LOGIN_CONCURRENCY = 16


class RunError(Exception):
    """A run that could not start; `code` is the exit code (2 bad input, 3 unreachable)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def compile_operations(
    scenario: Scenario, base_dir: Path, source: str = "scenario", root: yaml.Node | None = None
) -> list[Operation]:
    """The engine's operations; ScenarioError lists every template or data problem."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    shared, found = variable_sources(scenario.variables, base_dir, ("variables",))
    problems += found
    base = scenario.transport.target(scenario.base_url + "/", tool="crisisctl load")
    prefix = base.path.rstrip("/")
    operations = []
    names: set[str] = set()
    for i, spec in enumerate(scenario.operations):
        loc: tuple[str | int, ...] = ("operations", i)
        own, found = variable_sources(spec.variables, base_dir, (*loc, "variables"))
        problems += found
        sources = {**shared, **own}
        if spec.label in names:
            problems.append(((*loc, "name"), f"the operation name {spec.label!r} is used twice"))
        names.add(spec.label)
        parts: dict[str, Any] = {}
        fields: list[tuple[str, Any]] = [("path", prefix.replace("{", "{{") + spec.path)]
        fields += [("query", (k, query_text(v))) for k, v in spec.query.items()]
        headers = {**scenario.headers, **spec.headers}
        fields += [("headers", (k, v)) for k, v in headers.items()]
        if spec.json_body is not None:
            fields.append(("json", spec.json_body))
        elif spec.body is not None:
            fields.append(("body", spec.body))
        for field, value in fields:
            try:
                if field == "json":
                    compiled: Any = JsonTemplate.compile(value)
                elif isinstance(value, tuple):
                    key = StringTemplate.compile(value[0]) if field == "query" else value[0]
                    compiled = (key, StringTemplate.compile(value[1]))
                else:
                    compiled = StringTemplate.compile(value)
            except TemplateError as exc:
                problems.append(((*loc, field), str(exc)))
                continue
            if isinstance(compiled, tuple):
                parts.setdefault(field, []).append(compiled)
                used = [n for part in compiled if hasattr(part, "names") for n in part.names]
            else:
                parts[field] = compiled
                used = list(compiled.names)
            unknown = sorted({n for n in used if n not in sources})
            if unknown:
                problems.append(
                    ((*loc, field), f"no variable named {', '.join(unknown)} (define it in "
                     "variables, at the top or in the operation)")
                )  # fmt: skip
        if problems:
            continue
        content_type = None
        if spec.json_body is not None and not any(k.lower() == "content-type" for k in headers):
            content_type = "application/json"
        template = RequestTemplate(
            target=base,
            method=spec.method.upper(),
            path=parts["path"],
            query=tuple(parts.get("query", ())),
            headers=tuple(parts.get("headers", ())),
            body=parts.get("json", parts.get("body")),
            content_type=content_type,
            sources=dict(sources),
        )
        expect = frozenset(spec.expect_status) if spec.expect_status else None
        operations.append(
            Operation(spec.label, template, spec.weight, expect, spec.method.upper(), spec.path)
        )
    for i, t in enumerate(scenario.thresholds):
        if t.operation is not None and t.operation not in names:
            problems.append(
                (("thresholds", i, "operation"), f"there is no operation named {t.operation!r}")
            )
    if problems:
        lines = []
        for loc, message in problems:
            line, field = locate(root, loc)
            where = f"{source}:{line}" if line is not None else source
            lines.append(f"{where}: {field}: {message}")
        raise ScenarioError(source, lines)
    return operations


def check_scenario(
    scenario: Scenario, base_dir: Path, source: str = "scenario", root: yaml.Node | None = None
) -> None:
    """Everything checked before a run (operations' templates, or a journey's steps, feeders
    and extraction rules); ScenarioError lists every problem at ``file:line``."""
    if scenario.steps:
        from crisisctl.load.journey import compile_journey  # (a run of operations never needs it)

        compile_journey(scenario, base_dir, source, root)
        names = {step.label for step in scenario.steps}
    else:
        compile_operations(scenario, base_dir, source, root)
        names = {op.label for op in scenario.operations}
    problems = []
    for i, rule in enumerate(scenario.abort_rules()):
        scope = rule.condition.operation
        if scope is not None and scope not in names:
            line, field = locate(root, ("abort_on", i))
            where = f"{source}:{line}" if line is not None else source
            problems.append(f"{where}: {field}: there is no step or operation named {scope!r}")
    if problems:
        raise ScenarioError(source, problems)


def _scale(stages: list[Stage], factor: float) -> list[Stage]:
    return [Stage(duration=s.duration, target=s.target * factor) for s in stages]


def share(scenario: Scenario, index: int, count: int) -> Scenario:
    """Process `index` of `count`'s part: connections or users divided evenly.

    The open model keeps its whole schedule: `execute` (given the same `index` and `count`)
    sends only this process's arrivals of it (`schedule.part_of`), so the rate is split
    exactly and the processes' arrivals interleave.
    """
    if count <= 1:
        return scenario
    bound = scenario.max_requests
    if bound is not None:  # split exactly: the shares add up to the bound
        bound = bound // count + (1 if index < bound % count else 0)
        scenario = scenario.model_copy(update={"max_requests": bound})
    model = scenario.model
    new: OpenModel | ClosedModel
    if isinstance(model, OpenModel):
        new = model.model_copy(update={"connections": max(1, math.ceil(model.connections / count))})
    elif model.stages:
        new = model.model_copy(
            update={"users": model.users / count, "stages": _scale(model.stages, 1.0 / count)}
        )
    else:
        users = model.users // count + (1 if index < model.users % count else 0)
        new = model.model_copy(update={"users": users})
    return scenario.model_copy(update={"model": new})


def _token(data: Any, path: str) -> str | None:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return None if isinstance(data, dict | list) or data is None else str(data)


async def _login_once(
    client: httpx.AsyncClient, spec: Login, url: str, target: Target
) -> dict[str, str]:
    import httpx

    kwargs: dict[str, Any] = {}
    send_url, sent = url, dict(spec.headers)
    if target.connect_host != target.host:
        # a --resolve pin: connect to the pinned address, keep the name for Host, SNI and
        # the certificate check (httpx resolves the URL's host otherwise)
        parsed = httpx.URL(url)
        send_url = str(parsed.copy_with(host=target.connect_host))
        sent = {"Host": parsed.netloc.decode("ascii"), **spec.headers}
        if target.ssl is not None:
            kwargs["extensions"] = {"sni_hostname": target.server_hostname or target.host}
    if spec.json_body is not None:
        kwargs["json"] = spec.json_body
    elif spec.form is not None:
        kwargs["data"] = spec.form
    elif spec.body is not None:
        kwargs["content"] = spec.body.encode()
    where = f"the login step ({spec.method.upper()} {url})"
    try:
        response = await client.request(spec.method.upper(), send_url, headers=sent, **kwargs)
    except httpx.ConnectError:
        raise RunError(f"{where} could not connect; is the service running?", 3) from None
    except httpx.HTTPError as exc:
        raise RunError(f"{where} failed: {exc!r}.", 3) from None
    allowed = spec.expect_status or list(range(200, 400))
    if response.status_code not in allowed:
        raise RunError(
            f"{where} got status {response.status_code}; check the login request and its "
            "credentials in the scenario."
        )
    headers: dict[str, str] = {}
    cookies = "; ".join(f"{c.name}={c.value}" for c in response.cookies.jar)
    if cookies:
        headers["Cookie"] = cookies
    if spec.token is not None:
        try:
            token = _token(response.json(), spec.token.json_field)
        except ValueError:
            token = None
        if token is None:
            raise RunError(f"{where} answered without {spec.token.json_field!r} in its JSON body.")
        headers[spec.token.header] = spec.token.prefix + token
    return headers


async def login(scenario: Scenario, count: int) -> list[dict[str, str]]:
    """`count` sessions: the extra headers (cookie, token) each login yields."""
    if scenario.login is None or count < 1:
        return []
    # only a run with a login step pays for httpx (and http.cookiejar's urllib) at start-up
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    import httpx

    spec = scenario.login
    url = scenario.base_url + spec.path
    target = scenario.transport.target(url, tool="crisisctl load")
    headers = {**scenario.headers, **spec.headers}
    spec = spec.model_copy(update={"headers": headers})
    gate = asyncio.Semaphore(LOGIN_CONCURRENCY)
    limits = httpx.Limits(max_connections=LOGIN_CONCURRENCY)
    # a jar that keeps nothing: each login starts without the cookies of the others
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    verify = target.ssl if target.ssl is not None else True
    async with httpx.AsyncClient(
        trust_env=False, timeout=scenario.timeout, limits=limits, cookies=jar, verify=verify
    ) as client:

        async def one() -> dict[str, str]:
            async with gate:
                return await _login_once(client, spec, url, target)

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _target(scenario: Scenario, operations: list[Operation]) -> tuple[Target, str]:
    base = scenario.transport.target(scenario.base_url + "/", tool="crisisctl load")
    url = scenario.base_url + (operations[0].path if len(operations) == 1 else "")
    return base, url


async def execute(
    scenario: Scenario,
    base_dir: Path,
    *,
    on_tick: Callable[[Tick], None] | None = None,
    stop: Callable[[], str | None] | None = None,
    on_ready: Callable[[], Awaitable[float | None]] | None = None,
    part: int = 0,
    parts: int = 1,
) -> LoadResult:
    """Compile, log in, then run the engine on process `part` of `parts`'s `scenario` (see
    `share`).

    `on_ready` runs after the logins, right before the first request, and may return the
    monotonic instant the schedule starts at (multi-process runs synchronise their starts
    there). Each process draws its template values from ``seed + part``; the open model's
    arrivals come from ``seed`` itself, the same schedule in every process.
    """
    if scenario.steps:
        return await _execute_journey(scenario, base_dir, on_tick, stop, on_ready, part, parts)
    operations = compile_operations(scenario, base_dir)
    target, url = _target(scenario, operations)
    model = scenario.model
    seed = scenario.seed
    own_seed = None if seed is None else seed + part
    if isinstance(model, OpenModel):
        sessions = await login(scenario, 1)
        start_at = await on_ready() if on_ready is not None else None
        return await run_open_ops(
            target, operations, schedule=model.schedule(), connections=model.connections,
            timeout_s=scenario.timeout, sessions=sessions, url=url, seed=own_seed,
            on_tick=on_tick, stop=stop, arrival=model.arrival, arrival_seed=seed, part=part,
            parts=parts, start_at=start_at, max_requests=scenario.max_requests,
        )  # fmt: skip
    schedule = model.schedule()
    users = math.ceil(max(max(r0, r1) for _, r0, r1 in schedule.segments) - 1e-9)
    sessions = await login(scenario, users)
    if on_ready is not None:
        await on_ready()
    return await run_closed_ops(
        target, operations, users=schedule, think=model.think.think_time(),
        timeout_s=scenario.timeout, sessions=sessions, url=url, seed=own_seed,
        on_tick=on_tick, stop=stop, max_requests=scenario.max_requests,
    )  # fmt: skip


async def _execute_journey(
    scenario: Scenario,
    base_dir: Path,
    on_tick: Callable[[Tick], None] | None,
    stop: Callable[[], str | None] | None,
    on_ready: Callable[[], Awaitable[float | None]] | None,
    part: int,
    parts: int,
) -> LoadResult:
    # journeys only: their modules (jmespath, http.cookies) stay out of other runs' start-up
    from crisisctl.load.journey import compile_journey
    from crisisctl.load.journey_open import run_journeys_open
    from crisisctl.load.journey_run import run_journeys

    journey = compile_journey(scenario, base_dir).part(part, parts)
    model = scenario.model
    target = scenario.transport.target(scenario.base_url + "/", tool="crisisctl load")
    start_at = await on_ready() if on_ready is not None else None
    seed = None if scenario.seed is None else scenario.seed + part
    if isinstance(model, OpenModel):
        return await run_journeys_open(
            journey, target, scenario.base_url, schedule=model.schedule(),
            connections=model.connections, timeout_s=scenario.timeout, seed=seed,
            arrival=model.arrival, arrival_seed=scenario.seed, part=part, parts=parts,
            start_at=start_at, on_tick=on_tick, stop=stop, max_requests=scenario.max_requests,
        )  # fmt: skip
    return await run_journeys(
        journey, target, scenario.base_url, users=model.schedule(), think=model.think.think_time(),
        timeout_s=scenario.timeout, seed=seed, on_tick=on_tick, stop=stop,
        max_requests=scenario.max_requests,
    )  # fmt: skip
