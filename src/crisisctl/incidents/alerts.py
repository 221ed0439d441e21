"""Watch alerts and silences in the incident store: what `crisisctl alerts` lists and mutes.

The watch responder writes one row per alert fingerprint (rule + labels) as the alert changes
state; `list_alerts` reads them back as frozen records. A silence mutes the alerts whose rule
(when it names one) and labels all match until its end time: they are still recorded and
listed, but neither notify nor run actions. Every function is one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from crisisctl.incidents import models
from crisisctl.incidents.db import Database, StoreError, utcnow
from crisisctl.incidents.records import iso
from crisisctl.incidents.store import aware, check_text, default_author

#: the longest silence accepted (a forgotten silence must not mute a service for ever)
MAX_SILENCE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One stored watch alert."""

    fingerprint: str
    rule: str
    kind: str
    labels: dict[str, str]
    service: str
    severity: str
    state: str
    summary: str
    value: float | None
    threshold: float | None
    evidence: dict[str, Any]
    active_since: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    last_seen_at: datetime
    incident_id: int | None
    silenced_by: int | None
    #: the runbook level its incident is at, and the last notification per kind (ISO times)
    escalation_level: int | None = None
    notified: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_model(
        cls, row: models.WatchAlert, state: models.WatchIncident | None = None
    ) -> AlertRecord:
        return cls(
            fingerprint=row.fingerprint,
            rule=row.rule,
            kind=row.kind,
            labels=dict(row.labels),
            service=row.service,
            severity=row.severity,
            state=row.state,
            summary=row.summary,
            value=row.value,
            threshold=row.threshold,
            evidence=dict(row.evidence),
            active_since=row.active_since,
            fired_at=row.fired_at,
            resolved_at=row.resolved_at,
            last_seen_at=row.last_seen_at,
            incident_id=row.incident_id,
            silenced_by=row.silenced_by,
            escalation_level=state.level if state is not None else None,
            notified=dict(state.notified) if state is not None else {},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "kind": self.kind,
            "labels": self.labels,
            "service": self.service,
            "severity": self.severity,
            "state": self.state,
            "summary": self.summary,
            "value": self.value,
            "threshold": self.threshold,
            "evidence": self.evidence,
            "active_since": iso(self.active_since),
            "fired_at": iso(self.fired_at),
            "resolved_at": iso(self.resolved_at),
            "last_seen_at": iso(self.last_seen_at),
            "incident_id": self.incident_id,
            "silenced_by": self.silenced_by,
            "escalation_level": self.escalation_level,
            "notified": self.notified,
        }


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """One silence: a rule (or any), label matchers, a reason and an end time."""

    id: int
    rule: str | None
    matchers: dict[str, str]
    reason: str
    author: str | None
    starts_at: datetime
    ends_at: datetime
    created_at: datetime

    @classmethod
    def from_model(cls, row: models.WatchSilence) -> SilenceRecord:
        return cls(
            id=row.id,
            rule=row.rule,
            matchers=dict(row.matchers),
            reason=row.reason,
            author=row.author,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            created_at=row.created_at,
        )

    def active(self, now: datetime) -> bool:
        """True between its start and its end."""
        return self.starts_at <= now < self.ends_at

    def matches(self, rule: str, labels: Mapping[str, str]) -> bool:
        """True when `rule` and every matcher agree with the alert's rule and labels."""
        if self.rule is not None and self.rule != rule:
            return False
        return all(labels.get(name) == value for name, value in self.matchers.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "matchers": self.matchers,
            "reason": self.reason,
            "author": self.author,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "created_at": iso(self.created_at),
        }


def list_alerts(
    db: Database, *, state: str | None = None, since: datetime | None = None, limit: int = 100
) -> list[AlertRecord]:
    """Alerts, firing first then most recently seen; `state` filters, `since` drops older ones."""
    query = select(models.WatchAlert, models.WatchIncident).outerjoin(
        models.WatchIncident, models.WatchIncident.incident_id == models.WatchAlert.incident_id
    )
    if state is not None:
        query = query.where(models.WatchAlert.state == state)
    if since is not None:
        query = query.where(models.WatchAlert.last_seen_at >= aware(since, "since"))
    query = query.order_by(models.WatchAlert.last_seen_at.desc()).limit(limit)
    with db.transaction() as session:
        rows = [AlertRecord.from_model(alert, watch) for alert, watch in session.execute(query)]
    return sorted(rows, key=lambda r: r.state != "firing")


def add_silence(
    db: Database,
    *,
    rule: str | None,
    matchers: Mapping[str, str],
    duration: timedelta,
    reason: str,
    author: str | None = None,
    now: datetime | None = None,
) -> SilenceRecord:
    """Silence matching alerts from now for `duration`; StoreError on an empty or endless one."""
    if rule is None and not matchers:
        raise StoreError(
            "a silence needs --rule or at least one --label: it would mute everything."
        )
    if not timedelta(0) < duration <= MAX_SILENCE:
        raise StoreError(f"a silence lasts more than 0 s and at most {MAX_SILENCE.days} days.")
    start = aware(now, "silence") if now else utcnow()
    row = models.WatchSilence(
        rule=check_text(rule, "rule", limit=200) if rule is not None else None,
        matchers={str(k): str(v) for k, v in matchers.items()},
        reason=check_text(reason, "reason", limit=1000),
        author=author if author is not None else default_author(),
        starts_at=start,
        ends_at=start + duration,
        created_at=start,
    )
    with db.transaction() as session:
        session.add(row)
        session.flush()
        return SilenceRecord.from_model(row)


def end_silence(db: Database, silence_id: int, *, now: datetime | None = None) -> SilenceRecord:
    """End silence `silence_id` now; StoreError if unknown or already over."""
    when = aware(now, "unsilence") if now else utcnow()
    with db.transaction() as session:
        row = session.get(models.WatchSilence, silence_id, with_for_update=True)
        if row is None:
            raise StoreError(
                f"there is no silence {silence_id}: `crisisctl alerts silences` shows ids."
            )
        if row.ends_at <= when:
            raise StoreError(f"silence {silence_id} already ended at {iso(row.ends_at)}.")
        row.ends_at = max(when, row.starts_at)
        session.flush()
        return SilenceRecord.from_model(row)


def list_silences(
    db: Database, *, now: datetime | None = None, include_ended: bool = False
) -> list[SilenceRecord]:
    """Silences in force at `now` (default: the current time), or all of them, newest first."""
    query = select(models.WatchSilence).order_by(models.WatchSilence.id.desc())
    when = aware(now, "silence") if now else utcnow()
    if not include_ended:
        query = query.where(models.WatchSilence.ends_at > when)
    with db.transaction() as session:
        rows = [SilenceRecord.from_model(row) for row in session.scalars(query)]
    return rows if include_ended else [s for s in rows if s.active(when)]


__all__ = [
    "MAX_SILENCE",
    "AlertRecord",
    "SilenceRecord",
    "add_silence",
    "end_silence",
    "list_alerts",
    "list_silences",
]
