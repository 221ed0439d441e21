"""The JSON API's request and response models (pydantic): what ``/api/openapi.json`` declares.

Responses are declared closely enough for schemathesis to check them (types, required fields,
nullability); open-ended parts (an alert's evidence, a report's details, an event's details)
are free-form objects.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Connections",
    "Error",
    "Fleet",
    "IncidentDetail",
    "Me",
    "ModeChange",
    "ModeResult",
    "PollResult",
    "SeriesResult",
    "SessionRequest",
    "TriageResult",
]

SeverityName = Literal["OK", "P3", "P2", "P1", "P0"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every refusal: one sentence."""

    error: str


class SessionRequest(_In):
    """Sign in with a token, or a user name and password."""

    token: str | None = Field(default=None, max_length=512)
    user: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=512)


class Me(BaseModel):
    name: str
    role: Literal["operator", "viewer"]
    csrf: str


class Connections(BaseModel):
    sse_connections: int
    events_dropped: int
    last_event_id: str


class Instance(BaseModel):
    instance: str
    url_redacted: str
    mode: Literal["normal", "emergency", "recovering"] | None
    limit: float | None
    in_flight: float | None
    up: bool


class Service(BaseModel):
    name: str
    severity: SeverityName
    instances: list[Instance]
    rate_rps: float | None
    error_ratio: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    shed: dict[str, float]
    burn_rates: dict[str, dict[str, float | None]]
    budget_left: dict[str, float | None]
    rss_bytes: float | None


class Fleet(BaseModel):
    generated_at: str
    services: list[Service]


class SeriesResult(BaseModel):
    t: list[float]
    rate_rps: list[float | None]
    error_ratio: list[float | None]
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    p99_ms: list[float | None]
    limit: list[float | None]
    in_flight: list[float | None]
    shed_rps: list[float | None]
    rss_bytes: list[float | None]


class Alert(BaseModel):
    rule: str
    kind: str
    labels: dict[str, str]
    service: str
    severity: str
    state: str
    active_since: str | None
    fired_at: str | None
    resolved_at: str | None
    value: float | None
    threshold: float | None
    summary: str
    evidence: dict[str, Any]
    fingerprint: str
    source: str


class Incident(BaseModel):
    """An incident as stored (``crisisctl incident show --json`` without the attachments)."""

    model_config = ConfigDict(extra="allow")

    id: int
    title: str
    service: str | None
    severity: str
    status: str
    open: bool
    escalation_level: int
    started_at: str | None
    detected_at: str | None
    resolved_at: str | None
    updated_at: str | None


class TimelineEntry(BaseModel):
    id: int
    incident_id: int
    kind: str
    text: str
    details: dict[str, Any]
    source: str
    author: str | None
    at: str | None
    pinned: bool


class ReportRef(BaseModel):
    id: int
    kind: Literal["load", "validate", "triage"]
    title: str
    at: str | None


class IncidentDetail(Incident):
    timeline: list[TimelineEntry]
    mttx: dict[str, float | None]
    action_items: list[dict[str, Any]]
    reports: list[ReportRef]


class Report(BaseModel):
    id: int
    incident_id: int
    kind: Literal["load", "validate", "triage"]
    title: str
    at: str | None
    author: str | None
    report: dict[str, Any]


class Note(_In):
    text: str = Field(min_length=1, max_length=10_000)


class StatusChange(_In):
    status: str = Field(min_length=1, max_length=32)
    note: str | None = Field(default=None, max_length=2000)


class Escalation(_In):
    level: int | None = Field(default=None, ge=1, le=4)
    reason: str | None = Field(default=None, max_length=2000)


class Resolution(_In):
    summary: str | None = Field(default=None, max_length=10_000)


class ModeChange(_In):
    mode: Literal["normal", "emergency", "recovering"]
    reason: str = Field(default="", max_length=500)


class InstanceSwitch(BaseModel):
    url_redacted: str
    ok: bool
    mode: str | None
    error: str | None


class ModeResult(BaseModel):
    service: str
    mode: str
    ok: bool
    text: str
    instances: list[InstanceSwitch]
    incident_id: int | None


class TriageResult(BaseModel):
    service: str
    severity: str | None
    reasons: list[str]
    text: str
    incident_id: int | None


class PolledEvent(BaseModel):
    id: str
    type: str
    data: Any


class PollResult(BaseModel):
    events: list[PolledEvent]
    last_event_id: str
