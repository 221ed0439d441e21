"""The watch file (``watch.yaml``): what to watch, the rules, and the response sections.

    interval: 10s                 # one scrape and evaluation cycle
    state_dir: .crisisctl/watch   # where the series store's snapshot lives
    db: env:CRISISCTL_DB          # the incident store (default: $CRISISCTL_DB)
    services:
      api:
        guards: ["http://10.0.0.5:8000", "http://api.internal:8000"]   # guarded instances
        token: env:API_GUARD_TOKEN                 # the guard's control token (env:NAME only)
        discover: dns            # a name with several A/AAAA records is several instances
        metrics: ["http://10.0.0.5:9100/metrics"]  # any Prometheus text endpoint
        probes: [{url: "http://10.0.0.5:8000/health", expect_status: 200, timeout: 2s}]
        host: true               # this host's psutil figures, labelled with this service
        transport: {resolve: [], cacert: null, insecure: false}
        headers: {X-Watch: "1"}
    rules:
      - {name: slow, kind: threshold, metric: guard_latency_p95_ms, above: 250, for: 30s}
    incidents: {...}  notify: {...}  runbooks: {...}     # see respond_config
    intake: {...}  source: {...}     # Alertmanager intake, Prometheus as source: config_sources

Every model refuses unknown fields; `load_watch_file` reports every problem as
``file:line: field: message`` (lines found with ``load.scenario.locate``). `Directory` is the
`model.ServiceDirectory` the response side reads (guards with their resolved tokens).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crisisctl.load.scenario import Duration, ScenarioError, field_problems, read_yaml
from crisisctl.transport.settings import TransportSpec
from crisisctl.watch.config_sources import IntakeSpec, PrometheusSource
from crisisctl.watch.model import GuardEndpoint
from crisisctl.watch.respond_config import (
    EscalationLevel,
    IncidentPolicy,
    NotifyConfig,
    ResponseConfig,
)
from crisisctl.watch.rules_spec import RuleSpec, TargetDownRule

__all__ = [
    "Directory",
    "ProbeSpec",
    "ServiceSpec",
    "WatchConfig",
    "WatchFileError",
    "load_watch_file",
    "parse_watch_text",
    "resolve_secret",
    "resolved_headers",
]


class WatchFileError(ScenarioError):
    """An invalid watch file; `problems` are ``file:line: field: message`` lines."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        super().__init__(source, problems)
        if len(self.problems) == 1:
            self.args = (f"{source} is not a valid watch file: {self.problems[0]}",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


class ProbeSpec(_Strict):
    """One light HTTP probe and what its answer must be."""

    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, int) else value


class ServiceSpec(_Strict):
    """One watched service: its instances (guards, Prometheus endpoints, probes, this host)."""

    guards: list[str] = Field(default_factory=list)
    prefix: str = "/_crisis"
    #: the guard's control token, ``env:NAME`` (a literal token in a file would leak)
    token: str | None = None
    metrics: list[str] = Field(default_factory=list)
    probes: list[ProbeSpec] = Field(default_factory=list)
    host: bool = False
    #: ``dns``: every A/AAAA record of a URL's host name is one instance
    discover: Literal["none", "dns"] = "none"
    transport: TransportSpec = TransportSpec()
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 5.0

    @field_validator("guards", "metrics")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_http_url(v) for v in value]

    @field_validator("token")
    @classmethod
    def _env_token(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("env:"):
            raise ValueError("write the token as env:NAME (never the token itself in a file)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("the prefix must start with /")
        return value.rstrip("/") or "/"


class WatchConfig(_Strict):
    """A whole watch file."""

    interval: Annotated[Duration, Field(gt=0)] = 10.0
    state_dir: str = ".crisisctl/watch"
    db: str | None = None
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    #: at most this many series are kept (new ones beyond it are dropped and counted)
    max_series: Annotated[int, Field(ge=1)] = 200_000
    incidents: IncidentPolicy = IncidentPolicy()
    notify: NotifyConfig = NotifyConfig()
    runbooks: dict[Literal["P0", "P1", "P2", "P3"], list[EscalationLevel]] = Field(
        default_factory=dict
    )
    #: the Alertmanager intake served by ``crisisctl watch --listen``
    intake: IntakeSpec | None = None
    #: read the series from a Prometheus server instead of scraping the targets
    source: PrometheusSource | None = None

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, value: list[RuleSpec]) -> list[RuleSpec]:
        seen: set[str] = set()
        for rule in value:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}: names must be unique")
            seen.add(rule.name)
        return value

    def effective_rules(self) -> list[RuleSpec]:
        """The file's rules, plus a built-in ``target_down`` (for: one interval) unless the
        file has a rule of that kind."""
        rules = list(self.rules)
        if not any(isinstance(rule, TargetDownRule) for rule in rules):
            builtin = {"kind": "target_down", "name": "target_down", "for": self.interval}
            rules.append(TargetDownRule.model_validate(builtin))
        return rules

    @property
    def response(self) -> ResponseConfig:
        """The response sections, as the response side reads them."""
        return ResponseConfig(incidents=self.incidents, notify=self.notify, runbooks=self.runbooks)

    def db_url(self) -> str | None:
        """The incident store URL: ``db`` (``env:NAME`` resolved), else $CRISISCTL_DB."""
        if self.db is None:
            return os.environ.get("CRISISCTL_DB") or None
        return resolve_secret(self.db)


def resolve_secret(text: str) -> str:
    """``env:NAME`` → the variable's value (ValueError, one sentence, when unset)."""
    if not text.startswith("env:"):
        return text
    name = text[4:]
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"the environment variable {name} (from {text!r}) is not set.")
    return value


def resolved_headers(spec: ServiceSpec) -> tuple[tuple[str, str], ...]:
    """The service's extra request headers, ``env:NAME`` values resolved."""
    return tuple((name, resolve_secret(value)) for name, value in spec.headers.items())


def parse_watch_text(text: str, source: str) -> WatchConfig:
    """Validate a watch file's text; WatchFileError lists every problem with its line."""
    root, data = read_yaml(text, source, WatchFileError)
    if root is None or not isinstance(data, dict):
        raise WatchFileError(source, [f"{source}:1: watch: must be a YAML mapping of fields"])
    try:
        return WatchConfig.model_validate(data)
    except ValidationError as exc:
        raise WatchFileError(
            source, field_problems(exc, source, root, "watch", _plain_loc)
        ) from None


_RULE_KINDS = frozenset({"threshold", "burn_rate", "anomaly", "leak", "target_down"})


def _plain_loc(loc: Sequence[int | str]) -> list[int | str]:
    """A pydantic location without its union tags (a rule's kind, a model's class name)."""
    out: list[int | str] = []
    for part in loc:
        tagged = isinstance(part, str) and (part in _RULE_KINDS or part[:1].isupper())
        if tagged and out and isinstance(out[-1], int):
            continue
        out.append(part)
    return out


def load_watch_file(path: Path) -> WatchConfig:
    """Read and validate a watch file; WatchFileError (file:line: field: message) otherwise."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WatchFileError(source, [f"cannot be read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise WatchFileError(source, ["is not UTF-8 text"]) from None
    return parse_watch_text(text, source)


class Directory:
    """The `model.ServiceDirectory` built from a watch file (tokens resolved from env:NAME).

    `discovered` (service → guards) is what the scraper found by DNS this cycle; a service
    listed there is answered from it, others from the file.
    """

    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.discovered: dict[str, list[GuardEndpoint]] = {}

    def guards(self, service: str) -> Sequence[GuardEndpoint]:
        if service in self.discovered:
            return tuple(self.discovered[service])
        spec = self.config.services.get(service)
        if spec is None:
            return ()
        token = resolve_secret(spec.token) if spec.token else None
        headers = resolved_headers(spec)
        return tuple(
            GuardEndpoint(url, spec.prefix, token, (), spec.transport, headers)
            for url in spec.guards
        )

    def probe_url(self, service: str) -> str | None:
        spec = self.config.services.get(service)
        if spec is None:
            return None
        if spec.probes:
            return spec.probes[0].url
        return spec.guards[0] if spec.guards else None
