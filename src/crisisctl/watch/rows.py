"""The watch response's rows: alerts by fingerprint and the per-incident state, and the claims
that make one watch process (of several on one database) act once.

Each function is one transaction. `claim_state` inserts an incident's ``watch_incidents`` row
(whoever inserts it runs the first level); `claim_notification` records a notification under the
row's lock unless one of the same kind went out within the cooldown.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from crisisctl.incidents import models
from crisisctl.incidents.db import ConflictError, Database, StoreError
from crisisctl.incidents.records import iso
from crisisctl.watch.model import Alert, AlertState


def alert_json(alert: Alert) -> dict[str, Any]:
    """The alert as JSON (timeline details, webhook payloads)."""
    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "kind": alert.kind.value,
        "labels": dict(alert.labels),
        "service": alert.service,
        "severity": alert.severity.name,
        "state": alert.state.value,
        "active_since": iso(alert.active_since),
        "fired_at": iso(alert.fired_at),
        "resolved_at": iso(alert.resolved_at),
        "value": alert.value,
        "threshold": alert.threshold,
        "summary": alert.summary,
        "evidence": dict(alert.evidence),
    }


def record_alert(
    db: Database, alert: Alert, now: datetime, silenced_by: int | None
) -> tuple[bool, int | None]:
    """Upsert the alert's row; (was it already firing and attached, its incident id)."""
    for _attempt in range(3):
        try:
            with db.transaction() as session:
                row = session.get(models.WatchAlert, alert.fingerprint, with_for_update=True)
                if row is None:
                    row = models.WatchAlert(fingerprint=alert.fingerprint, incident_id=None)
                    session.add(row)
                    attached = False
                else:
                    attached = row.state == AlertState.FIRING.value and row.incident_id is not None
                row.rule = alert.rule
                row.kind = alert.kind.value
                row.labels = dict(alert.labels)
                row.service = alert.service
                row.severity = alert.severity.name
                row.state = alert.state.value
                row.summary = alert.summary
                row.value = alert.value
                row.threshold = alert.threshold
                row.evidence = dict(alert.evidence)
                row.active_since = alert.active_since
                row.fired_at = alert.fired_at or (now if alert.state is AlertState.FIRING else None)
                row.resolved_at = alert.resolved_at or (
                    now if alert.state is AlertState.RESOLVED else None
                )
                row.last_seen_at = now
                row.silenced_by = silenced_by
                session.flush()
                return attached, row.incident_id
        except ConflictError:
            continue  # another watch process inserted it just now: update that row
    raise StoreError(f"could not record alert {alert.rule} ({alert.fingerprint}); try again.")


def set_alert_incident(db: Database, fingerprint: str, incident_id: int) -> None:
    with db.transaction() as session:
        row = session.get(models.WatchAlert, fingerprint, with_for_update=True)
        if row is not None:
            row.incident_id = incident_id


def claim_state(db: Database, incident_id: int, service: str, level: int, now: datetime) -> bool:
    """Insert the incident's watch state; True when this process did (it runs the first level)."""
    try:
        with db.transaction() as session:
            if session.get(models.WatchIncident, incident_id) is not None:
                return False
            session.add(
                models.WatchIncident(
                    incident_id=incident_id,
                    service=service,
                    level=level,
                    level_since=now,
                    healthy_since=None,
                    notified={},
                )
            )
            session.flush()
            return True
    except ConflictError:
        return False


def claim_notification(
    db: Database, incident_id: int, key: str, cooldown_s: float, now: datetime
) -> bool:
    """Record that notification `key` goes out now, unless one went out within the cooldown."""
    with db.transaction() as session:
        row = session.get(models.WatchIncident, incident_id, with_for_update=True)
        if row is None:
            return False
        last = row.notified.get(key)
        if last is not None:
            sent = datetime.fromisoformat(last.replace("Z", "+00:00"))
            if now - sent < timedelta(seconds=cooldown_s):
                return False
        row.notified = {**row.notified, key: iso(now) or ""}
        return True


def row_json(row: models.WatchAlert) -> dict[str, Any]:
    return {
        "fingerprint": row.fingerprint,
        "rule": row.rule,
        "kind": row.kind,
        "labels": dict(row.labels),
        "service": row.service,
        "severity": row.severity,
        "state": row.state,
        "summary": row.summary,
        "value": row.value,
        "threshold": row.threshold,
        "evidence": dict(row.evidence),
    }


__all__ = [
    "alert_json",
    "claim_notification",
    "claim_state",
    "record_alert",
    "row_json",
    "set_alert_incident",
]
