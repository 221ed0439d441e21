"""The watch file's ``intake:`` and ``source:`` sections (Alertmanager in, Prometheus as data).

    intake:                          # the Alertmanager webhook (crisisctl watch --listen)
      bearer: env:AM_INTAKE_TOKEN    # Alertmanager's http_config.authorization credentials
      # basic: {user: alertmanager, password: env:AM_INTAKE_PASSWORD}   # or basic_auth
      allow_unauthenticated: false   # true: no credential, honoured on a loopback listener only
      default_severity: P2           # an alert without a P0..P3 `severity` label
      max_body: 1048576              # bytes; a larger body is refused (413)
      max_alerts: 1000               # alerts per notification; more is refused (413)
    source:                          # evaluate the rules on a Prometheus server's data
      prometheus: "http://prometheus.internal:9090"
      service_label: service         # the label naming the watch's service (else: job)
      selector: '{job=~"api|web"}'   # which series (default: every one)
      bearer: env:PROM_TOKEN         # or basic: {user, password: env:NAME}
      transport: {cacert: ca.pem}    # pins and TLS like every other target
      headers: {X-Scope-OrgID: tenant-a}
      timeout: 5s

Secrets are written ``env:NAME`` only (a literal secret in a file would leak); they are
resolved with `config.resolve_secret` when the watch starts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crisisctl.load.scenario import Duration
from crisisctl.transport.settings import TransportSpec

__all__ = ["BasicSpec", "IntakeSpec", "PrometheusSource"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_only(value: str | None) -> str | None:
    if value is not None and not value.startswith("env:"):
        raise ValueError("write the secret as env:NAME (never the secret itself in a file)")
    return value


class BasicSpec(_Strict):
    """HTTP basic credentials: a user name and a password from ``env:NAME``."""

    user: Annotated[str, Field(min_length=1, max_length=200)]
    password: str

    @field_validator("password")
    @classmethod
    def _env(cls, value: str) -> str:
        return _env_only(value) or value


class IntakeSpec(_Strict):
    """The Alertmanager intake's credentials and bounds."""

    bearer: str | None = None
    basic: BasicSpec | None = None
    allow_unauthenticated: bool = False
    default_severity: Literal["P0", "P1", "P2", "P3"] = "P2"
    max_body: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    max_alerts: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @field_validator("bearer")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_only(value)

    @model_validator(mode="after")
    def _one_credential(self) -> IntakeSpec:
        if self.bearer is not None and self.basic is not None:
            raise ValueError("give bearer or basic, not both (Alertmanager sends one of them)")
        if self.allow_unauthenticated and (self.bearer is not None or self.basic is not None):
            raise ValueError("allow_unauthenticated makes no sense beside a credential: drop it")
        return self


class PrometheusSource(_Strict):
    """Read the rules' series from a Prometheus server's HTTP API instead of scraping."""

    prometheus: str
    service_label: Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")] = "service"
    selector: str = ""
    bearer: str | None = None
    basic: BasicSpec | None = None
    transport: TransportSpec = TransportSpec()
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Annotated[Duration, Field(gt=0)] = 5.0
    #: at start, each series' history is read back this far (capped by what the rules read)
    backfill: Annotated[Duration, Field(ge=0)] = 6 * 3600.0

    @field_validator("prometheus")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("bearer")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_only(value)

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        text = value.strip()
        if text and not (text.startswith("{") and text.endswith("}")):
            raise ValueError('write the selector as label matchers, like {job=~"api|web"}')
        return text[1:-1].strip() if text else ""

    @model_validator(mode="after")
    def _one_credential(self) -> PrometheusSource:
        if self.bearer is not None and self.basic is not None:
            raise ValueError("give bearer or basic, not both")
        return self
