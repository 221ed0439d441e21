"""Alertmanager's webhook payload (version "4"): validation, bounds and the watch `Alert` of each.

Alertmanager POSTs one JSON document per notification of a group::

    {"version": "4", "groupKey": "...", "status": "firing", "receiver": "crisisctl",
     "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": "...", "truncatedAlerts": 0,
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...},
                 "startsAt": "2026-12-06T09:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "http://prometheus:9090/graph?...", "fingerprint": "c0ffee..."}]}

Only ``version`` and ``alerts`` are needed; unknown fields are ignored (Alertmanager may add
some). ``truncatedAlerts`` (how many alerts of the group the receiver's ``max_alerts`` left
out) is read too: those alerts never reach the intake, so each alert of a truncated
notification carries the count in its evidence, where the incident timeline shows it.

One alert notification is identified by `dedup_key` = sha256(fingerprint, startsAt, status)
— never by ``groupKey``: a repeat (``repeat_interval``) and each peer of an HA pair send the
same alerts again, under the same or another group.

Everything a sender controls is bounded before it is stored: at most `MAX_LABELS` labels and
annotations per alert (the first ones by name), names cut to `MAX_NAME` characters, label values
to `MAX_VALUE`, annotation values to `MAX_ANNOTATION`, the generator URL to `MAX_URL`.

`to_alert` maps one notification onto the watch room's `Alert`: rule = ``alertname``; service =
the ``service`` label, else ``job``, else ``alertmanager``; severity = the ``severity`` label
when it is P0..P3 (any case), else the intake's default; kind ``alertmanager``; the generator
URL, Alertmanager's fingerprint, the annotations and, when the notification was truncated,
``truncated_alerts`` go in the evidence (the incident timeline shows them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from crisisctl.severity import Severity
from crisisctl.watch.model import Alert, AlertState, RuleKind, labels_of

__all__ = [
    "DEFAULT_SERVICE",
    "MAX_ANNOTATION",
    "MAX_LABELS",
    "MAX_NAME",
    "MAX_URL",
    "MAX_VALUE",
    "PayloadError",
    "Received",
    "WebhookAlert",
    "WebhookPayload",
    "parse_payload",
    "received_alerts",
    "to_alert",
]

MAX_LABELS: Final = 64
MAX_NAME: Final = 128
MAX_VALUE: Final = 512
MAX_ANNOTATION: Final = 2000
MAX_URL: Final = 2000
DEFAULT_SERVICE: Final = "alertmanager"
#: Go writes RFC 3339 with up to nine fractional digits; Python keeps six
_NANOS: Final = re.compile(r"(\.\d{6})\d+")


class PayloadError(ValueError):
    """A notification that is not Alertmanager's webhook payload version 4 (one sentence)."""


def _go_time(value: Any) -> Any:
    return _NANOS.sub(r"\1", value) if isinstance(value, str) else value


GoTime = Annotated[datetime, BeforeValidator(_go_time)]


class WebhookAlert(BaseModel):
    """One alert of a notification."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Annotated[GoTime, Field(alias="startsAt")]
    ends_at: Annotated[GoTime | None, Field(alias="endsAt")] = None
    generator_url: Annotated[str, Field(alias="generatorURL")] = ""
    fingerprint: Annotated[str, Field(min_length=1, max_length=64)]


class WebhookPayload(BaseModel):
    """A whole notification (the fields the intake reads)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    version: Literal["4"]
    receiver: str = ""
    status: Literal["firing", "resolved"] | None = None
    #: alerts of the group the receiver's ``max_alerts`` left out of this notification
    truncated_alerts: Annotated[int, Field(alias="truncatedAlerts", ge=0)] = 0
    alerts: list[WebhookAlert]


def parse_payload(body: bytes) -> WebhookPayload:
    """The validated payload of a request body; PayloadError (one sentence) otherwise."""
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        if first.get("type") == "json_invalid":
            raise PayloadError(
                "the body is not valid JSON: send Alertmanager's webhook payload (version 4)."
            ) from None
        if where == "version":
            raise PayloadError(
                "the payload's version is not \"4\": this intake reads Alertmanager's webhook "
                "payload version 4 (Alertmanager 0.x webhook_configs)."
            ) from None
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise PayloadError(
            f"the payload is not Alertmanager's webhook payload version 4 ({where}: {message})."
        ) from None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(mapping: Mapping[str, str], value_limit: int) -> dict[str, str]:
    """At most `MAX_LABELS` pairs (the first names in order), names and values cut."""
    names = sorted(mapping)[:MAX_LABELS]
    return {_cut(name, MAX_NAME): _cut(str(mapping[name]), value_limit) for name in names}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Received:
    """One alert notification, bounded, with its dedup key (what the intake stores)."""

    dedup_key: str
    am_fingerprint: str
    status: str
    starts_at: datetime
    ends_at: datetime | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    generator_url: str
    receiver: str
    #: alerts of its notification's group that Alertmanager left out (``truncatedAlerts``)
    truncated_alerts: int = 0

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname") or "alertmanager"


def dedup_key(fingerprint: str, starts_at: datetime, status: str) -> str:
    """sha256 of (fingerprint, startsAt in UTC, status): one notification, however often sent."""
    text = f"{fingerprint}\x00{_utc(starts_at).isoformat()}\x00{status}"
    return hashlib.sha256(text.encode()).hexdigest()


def received_alerts(payload: WebhookPayload) -> list[Received]:
    """The payload's alerts, bounded, each with its dedup key (repeats inside it dropped)."""
    out: dict[str, Received] = {}
    receiver = _cut(payload.receiver, 200)
    for alert in payload.alerts:
        starts = _utc(alert.starts_at)
        ends = _utc(alert.ends_at) if alert.ends_at is not None else None
        if ends is not None and ends < starts:  # Go's zero time: "not ended"
            ends = None
        key = dedup_key(alert.fingerprint, starts, alert.status)
        out.setdefault(
            key,
            Received(
                dedup_key=key,
                am_fingerprint=alert.fingerprint,
                status=alert.status,
                starts_at=starts,
                ends_at=ends,
                labels=bounded(alert.labels, MAX_VALUE),
                annotations=bounded(alert.annotations, MAX_ANNOTATION),
                generator_url=_cut(alert.generator_url, MAX_URL),
                receiver=receiver,
                truncated_alerts=payload.truncated_alerts,
            ),
        )
    return list(out.values())


def severity_of(labels: Mapping[str, str], default: Severity) -> Severity:
    """The ``severity`` label when it is P0..P3 (any case), else `default`."""
    text = labels.get("severity", "").strip().upper()
    if text in ("P0", "P1", "P2", "P3"):
        return Severity[text]
    return default


def to_alert(item: Received, default: Severity, now: datetime) -> Alert:
    """The watch `Alert` of one notification (see the module docstring)."""
    labels = dict(item.labels)
    service = labels.get("service") or labels.get("job") or DEFAULT_SERVICE
    firing = item.status == "firing"
    summary = (
        item.annotations.get("summary")
        or item.annotations.get("description")
        or f"{item.alertname} (from Alertmanager)"
    )
    resolved_at = None if firing else (item.ends_at or now)
    evidence: dict[str, object] = {
        "source": "alertmanager",
        "generator_url": item.generator_url,
        "am_fingerprint": item.am_fingerprint,
        "receiver": item.receiver,
        "annotations": dict(item.annotations),
    }
    if item.truncated_alerts:
        evidence["truncated_alerts"] = item.truncated_alerts
    return Alert(
        rule=_cut(item.alertname, 200),
        kind=RuleKind.ALERTMANAGER,
        labels=labels_of(labels),
        service=_cut(service, 200),
        severity=severity_of(labels, default),
        state=AlertState.FIRING if firing else AlertState.RESOLVED,
        active_since=item.starts_at,
        fired_at=item.starts_at,
        resolved_at=resolved_at,
        summary=_cut(summary, 300),
        evidence=evidence,
    )
