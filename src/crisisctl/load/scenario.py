"""Load scenarios: the YAML file format, validated with pydantic, with errors at file:line.

A scenario holds ``base_url`` (any host, http:// or https://), ``transport`` (``--resolve`` pins
and TLS options), default ``headers``, a ``timeout``, an optional ``login`` step, the load
``model`` (``open``: arrival rate and stages, ``arrival: constant`` (evenly spaced) or
``poisson`` (exponential gaps, seeded by ``seed``); ``closed``: users, ramp-up, think time and
stages), ``variables`` (value sources for templates), weighted ``operations`` — or a journey:
ordered ``steps`` with ``feeders`` (`crisisctl.load.journey_spec`) — and ``thresholds``.
Header values and the transport's credential paths may be ``env:NAME``
(`crisisctl.load.scenario_env`). `load_scenario(path)` reads and validates a file; every
problem is reported as ``file:line: field: what is wrong`` (the line comes from the YAML node
the pydantic error location points at). The quick form of ``crisisctl load URL`` builds the
same `Scenario` from its options. Compiling the templates (`crisisctl.load.plan`) is a second
validation step whose errors carry locations too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from crisisctl.load.abort import AbortRule, parse_abort_on
from crisisctl.load.engine import RateSchedule, ThinkTime
from crisisctl.load.journey_spec import FeederSpec, StepSpec
from crisisctl.load.scenario_env import resolve_env
from crisisctl.load.target import parse_url
from crisisctl.load.thresholds import Threshold, parse_threshold
from crisisctl.transport.settings import TransportSpec
from crisisctl.units import parse_duration

__all__ = [
    "ClosedModel",
    "Login",
    "OpenModel",
    "OperationSpec",
    "Scenario",
    "ScenarioError",
    "ThresholdSpec",
    "VariableSpec",
    "load_scenario",
    "locate",
    "parse_duration",
    "read_yaml",
    "scenario_problems",
]


def _duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a text such as 30s or 500ms")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError("a duration must be a finite number of seconds ≥ 0")
        return float(value)
    if isinstance(value, str):
        return parse_duration(value)
    return value


#: Seconds, written as 30s / 500ms / 2m / 1h or a number.
Duration = Annotated[float, BeforeValidator(_duration)]


class ScenarioError(ValueError):
    """An invalid scenario; `problems` are ``file:line: field: message`` lines."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = sorted(problems, key=_line_of)
        if len(self.problems) == 1:
            text = f"{source} is not a valid scenario: {self.problems[0]}"
        else:
            text = f"{source} has {len(self.problems)} problems:\n" + "\n".join(
                f"  {p}" for p in self.problems
            )
        super().__init__(text)


def _line_of(problem: str) -> int:
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Stage(_Model):
    """Ramp linearly to `target` (requests/s or users) over `duration`."""

    duration: Duration = Field(gt=0)
    target: float = Field(ge=0, allow_inf_nan=False)


def _stage_list(start: float, stages: Sequence[Stage]) -> RateSchedule:
    return RateSchedule.from_stages(start, [(s.duration, s.target) for s in stages])


class OpenModel(_Model):
    """Arrivals on a schedule: `rate` for `duration`, or from `rate` through `stages`; evenly
    spaced (``arrival: constant``) or a Poisson process (``arrival: poisson``)."""

    type: Literal["open"]
    rate: float = Field(0.0, ge=0, allow_inf_nan=False)
    duration: Duration | None = Field(None, gt=0)
    stages: list[Stage] = Field(default_factory=list)
    connections: int = Field(64, ge=1, le=20_000)
    arrival: Literal["constant", "poisson"] = "constant"

    @model_validator(mode="after")
    def _complete(self) -> OpenModel:
        if self.stages and self.duration is not None:
            raise ValueError("give either duration (a constant rate) or stages, not both")
        if not self.stages and (self.duration is None or self.rate <= 0):
            raise ValueError("an open model needs rate > 0 and a duration, or stages")
        return self

    def schedule(self) -> RateSchedule:
        """The arrival rate over time."""
        if self.stages:
            return _stage_list(self.rate, self.stages)
        assert self.duration is not None
        return RateSchedule.constant(self.rate, self.duration)


class Think(_Model):
    """A closed-model user's pause: constant `value`, uniform `min`..`max`, exponential `mean`."""

    distribution: Literal["constant", "uniform", "exponential"] = "constant"
    value: Duration = 0.0
    mean: Duration | None = None
    min: Duration | None = None
    max: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"value": data} if isinstance(data, str | int | float) else data

    @model_validator(mode="after")
    def _complete(self) -> Think:
        if self.distribution == "uniform" and (
            self.min is None or self.max is None or self.max < self.min
        ):
            raise ValueError("a uniform think time needs min and max with min ≤ max")
        return self

    def think_time(self) -> ThinkTime:
        """The engine's form."""
        if self.distribution == "uniform":
            assert self.min is not None and self.max is not None
            return ThinkTime("uniform", self.min, self.max)
        if self.distribution == "exponential":
            return ThinkTime("exponential", self.mean if self.mean is not None else self.value)
        return ThinkTime("constant", self.value)


class ClosedModel(_Model):
    """Virtual users that send, wait, think and repeat; `stages` ramp the number of users."""

    type: Literal["closed"]
    users: int = Field(0, ge=0, le=100_000)
    duration: Duration | None = Field(None, gt=0)
    ramp_up: Duration = 0.0
    think: Think = Field(default_factory=Think)
    stages: list[Stage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> ClosedModel:
        if self.stages:
            if self.duration is not None or self.ramp_up:
                raise ValueError("give either users/duration/ramp_up or stages, not both")
            if max([self.users] + [s.target for s in self.stages]) < 1:
                raise ValueError("the stages never reach one user")
        elif self.users < 1 or self.duration is None:
            raise ValueError("a closed model needs users ≥ 1 and a duration, or stages")
        elif self.ramp_up > self.duration:
            raise ValueError("ramp_up must not be longer than the duration")
        return self

    def schedule(self) -> RateSchedule:
        """Active users over time (user i runs while the schedule is above i)."""
        if self.stages:
            return _stage_list(self.users, self.stages)
        assert self.duration is not None
        if self.ramp_up > 0:
            steps = [(self.ramp_up, self.users), (self.duration - self.ramp_up, self.users)]
            return RateSchedule.from_stages(0, [s for s in steps if s[0] > 0])
        return RateSchedule.constant(self.users, self.duration)


class VariableSpec(_Model):
    """A value source: ``range: [lo, hi]``, ``list: [...]`` or ``csv: file`` + ``column``."""

    range: tuple[int, int] | None = None
    values: list[str | int | float | bool] | None = Field(None, alias="list")
    csv: str | None = None
    column: str | None = None
    order: Literal["random", "sequential"] = "random"

    @model_validator(mode="after")
    def _one_source(self) -> VariableSpec:
        given = [k for k in ("range", "values", "csv") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of range, list or csv")
        if self.range is not None and self.range[1] < self.range[0]:
            raise ValueError("the range's second number must be ≥ its first")
        if self.values is not None and not self.values:
            raise ValueError("the list must not be empty")
        if (self.csv is None) != (self.column is None):
            raise ValueError("csv and column go together")
        return self


class ThresholdSpec(_Model):
    """``expr`` (k6-like), optionally scoped to an `operation`, with abort_on_fail."""

    expr: str
    operation: str | None = None
    abort_on_fail: bool = False
    delay_abort_eval: Duration = 0.0

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"expr": data} if isinstance(data, str) else data

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_threshold(value)
        return value

    @model_validator(mode="after")
    def _scoped(self) -> ThresholdSpec:
        self.threshold()  # a whole-run metric cannot be scoped to an operation
        return self

    def threshold(self, operation: str | None = None) -> Threshold:
        """The parsed threshold (`operation` overrides the scope, for per-operation lists)."""
        return parse_threshold(
            self.expr,
            operation=operation or self.operation,
            abort_on_fail=self.abort_on_fail,
            delay_abort_eval_s=self.delay_abort_eval,
        )


_METHOD = r"^[A-Za-z]+$"


def _status_list(value: Any) -> Any:
    return [value] if isinstance(value, int) else value


StatusList = Annotated[list[Annotated[int, Field(ge=100, le=599)]], BeforeValidator(_status_list)]


class TokenSpec(_Model):
    """Take a token from the login response's JSON and send it in a header."""

    json_field: str
    header: str = "Authorization"
    prefix: str = "Bearer "


class Login(_Model):
    """A request made once per virtual user (or per process) before the run."""

    method: str = Field("POST", pattern=_METHOD)
    path: str = Field(pattern=r"^/")
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    form: dict[str, str] | None = None
    body: str | None = None
    expect_status: StatusList = Field(default_factory=list)
    token: TokenSpec | None = None


class OperationSpec(_Model):
    """One weighted operation; `path`, `query`, `headers` and bodies may hold ``{name}``."""

    name: str | None = None
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    method: str = Field("GET", pattern=_METHOD)
    path: str = Field(pattern=r"^/")
    query: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    body: str | None = None
    expect_status: StatusList = Field(default_factory=list)
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    thresholds: list[ThresholdSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_body(self) -> OperationSpec:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        for spec in self.thresholds:
            spec.threshold(self.label)  # a whole-run metric cannot be an operation's
        return self

    @property
    def label(self) -> str:
        """The operation's name (default: ``METHOD path``)."""
        return self.name or f"{self.method.upper()} {self.path}"


class Scenario(_Model):
    """A whole load test."""

    name: str = "scenario"
    base_url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(10.0, gt=0)
    login: Login | None = None
    model: Annotated[OpenModel | ClosedModel, Field(discriminator="type")]
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    operations: list[OperationSpec] = Field(default_factory=list)
    #: a journey (`crisisctl.load.journey_spec`): ordered steps instead of operations
    steps: list[StepSpec] = Field(default_factory=list)
    feeders: list[FeederSpec] = Field(default_factory=list)
    thresholds: list[ThresholdSpec] = Field(default_factory=list)
    seed: int | None = None
    #: --resolve pins and TLS options (``transport:`` in YAML; the CLI's flags override)
    transport: TransportSpec = Field(default_factory=TransportSpec)
    #: the run stops once this many requests have started (exact; ``--max-requests``)
    max_requests: int | None = Field(None, ge=0)
    #: rules that stop a run hurting its target, e.g. ``error_rate > 50% for 10s``
    abort_on: list[str] = Field(default_factory=list)
    #: the values read from ``env:NAME`` (`crisisctl.load.scenario_env`): redacted in reports
    _secrets: tuple[str, ...] = PrivateAttr(default=())

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values the file read from the environment (for the run's redactor)."""
        return self._secrets

    @field_validator("abort_on")
    @classmethod
    def _abort_rules(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_abort_on(text)
        return value

    def abort_rules(self) -> list[AbortRule]:
        """The parsed ``abort_on`` rules."""
        return [parse_abort_on(text) for text in self.abort_on]

    @model_validator(mode="wrap")
    @classmethod
    def _some_work(cls, data: Any, handler: ModelWrapValidatorHandler[Scenario]) -> Scenario:
        """Neither operations nor steps: reported at ``operations`` with the other problems."""
        extra: list[Any] = []
        if isinstance(data, dict) and not data.get("steps") and not data.get("operations"):
            if "operations" not in data:
                extra = [{"type": "missing", "loc": ("operations",), "input": data}]
            else:
                extra = [
                    {
                        "type": "too_short",
                        "loc": ("operations",),
                        "input": data["operations"],
                        "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0},
                    }
                ]
        try:
            scenario = handler(data)
        except ValidationError as exc:
            if not extra:
                raise
            errors: list[Any] = [*exc.errors(), *extra]
            raise ValidationError.from_exception_data(exc.title, errors) from None
        if extra:
            raise ValidationError.from_exception_data(cls.__name__, extra)
        return scenario

    @model_validator(mode="after")
    def _operations_or_steps(self) -> Scenario:
        if self.operations and self.steps:
            raise ValueError("give either operations (weighted requests) or steps (a journey)")
        if self.steps:
            if self.login is not None:
                raise ValueError("with steps, make the login the journey's first step")
        elif self.feeders:
            raise ValueError("feeders feed a journey's steps; use variables with operations")
        return self

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_url(value, tool="crisisctl load")
        return value.rstrip("/")

    def all_thresholds(self) -> list[Threshold]:
        """Global thresholds, then each operation's (scoped to it)."""
        out = [spec.threshold() for spec in self.thresholds]
        for op in self.operations:
            out += [spec.threshold(op.label) for spec in op.thresholds]
        return out

    @property
    def duration_s(self) -> float:
        """How long the run sends."""
        return self.model.schedule().duration_s


# -- locations -------------------------------------------------------------------------------
def read_yaml(
    text: str, source: str, error: Callable[[str, list[str]], Exception]
) -> tuple[yaml.Node | None, Any]:
    """(the node tree for `locate`, the data) of a YAML text; a syntax error raises
    ``error(source, ["source:line: YAML syntax error: …"])``."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(source, [f"{where}: YAML syntax error: {problem}"]) from None


def locate(root: yaml.Node | None, loc: Sequence[int | str]) -> tuple[int | None, str]:
    """The 1-based line of the YAML node at `loc` (or of its nearest existing parent) and the
    dotted field name (``operations[2].weight``); location parts that name no node (pydantic's
    union tags) are skipped."""
    node = root
    line = None if root is None else root.start_mark.line + 1
    field = ""
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        if child is None and node is None:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else part)
            continue
        if child is None:
            if (
                isinstance(node, yaml.MappingNode)
                and isinstance(part, str)
                and part not in ("open", "closed")
                and "[" not in part
            ):
                field += f".{part}" if field else part  # a missing field, named anyway
            continue
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        node = child
        line = child.start_mark.line + 1
    return line, field


def _message(error: Any) -> str:
    msg = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def scenario_problems(
    exc: ValidationError, source: str, root: yaml.Node | None = None
) -> list[str]:
    """One ``source:line: field: message`` line per pydantic error."""
    out = []
    for error in exc.errors():
        line, field = locate(root, error["loc"])
        where = f"{source}:{line}" if line is not None else source
        out.append(f"{where}: {field or 'scenario'}: {_message(error)}")
    return out


def field_problems(
    exc: ValidationError,
    source: str,
    root: yaml.Node | None,
    what: str,
    plain: Callable[[Sequence[int | str]], Sequence[int | str]] = lambda loc: loc,
) -> list[str]:
    """One ``source:line: field: message`` line per distinct pydantic error of a config file
    (`what` names the whole file; `plain` drops location parts that name no YAML node); an
    unknown field says to check its spelling."""
    problems: list[str] = []
    for error in exc.errors():
        line, field = locate(root, plain(error["loc"]))
        where = f"{source}:{line}" if line is not None else source
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field (check its spelling)"
        out = f"{where}: {field or what}: {message}"
        if out not in problems:
            problems.append(out)
    return problems


def load_scenario(path: Path) -> tuple[Scenario, yaml.Node]:
    """Read and validate a scenario file; ScenarioError lists every problem with its line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(source, [f"cannot be read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ScenarioError(source, ["is not UTF-8 text"]) from None
    root, data = read_yaml(text, source, ScenarioError)
    if root is None or not isinstance(data, dict):
        raise ScenarioError(source, [f"{source}:1: scenario: must be a YAML mapping of fields"])
    data, secrets, missing = resolve_env(data)
    if missing:
        problems = []
        for loc, message in missing:
            line, name = locate(root, loc)
            problems.append(f"{source}:{line}: {name}: {message}")
        raise ScenarioError(source, problems)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, scenario_problems(exc, source, root)) from None
    scenario._secrets = tuple(secrets)
    return scenario, root
