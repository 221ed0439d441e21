"""The intake's rows: every received alert notification stored once, booked until done.

`store_batch` inserts a notification's alerts in one transaction (the table is unique on the
dedup key, so a repeat or an HA peer's copy adds nothing) and returns those still to book: new
ones, and stored ones whose booking never finished (``processed_at`` None: the intake failed
after storing them, and Alertmanager retried). A stale copy is marked done unbooked: a firing
notification whose resolution (same Alertmanager fingerprint and startsAt) is already stored,
or a resolution older than a later firing of the same alert. `mark_processed` ends a booking;
`silenced` names the firing alerts a crisisctl silence kept from their incident, whose
notifications stay to book (each repeat looks again: the silence may have ended).
`firing_rows` lists the Alertmanager alerts firing now, as the response side recorded them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from crisisctl.incidents import models
from crisisctl.incidents.db import ConflictError, Database, StoreError
from crisisctl.watch.amwebhook import Received
from crisisctl.watch.model import RuleKind

__all__ = ["firing_rows", "mark_processed", "silenced", "store_batch"]


def _insert(db: Database, items: Sequence[Received], now: datetime) -> set[str]:
    """Insert the new ones; the keys whose booking is still to do (new or unfinished)."""
    keys = [item.dedup_key for item in items]
    with db.transaction() as session:
        rows = session.scalars(
            select(models.IntakeAlert).where(models.IntakeAlert.dedup_key.in_(keys))
        ).all()
        known = {row.dedup_key: row for row in rows}
        for item in items:
            if item.dedup_key in known:
                continue
            session.add(
                models.IntakeAlert(
                    dedup_key=item.dedup_key,
                    am_fingerprint=item.am_fingerprint,
                    status=item.status,
                    starts_at=item.starts_at,
                    ends_at=item.ends_at,
                    alertname=item.alertname[:200],
                    labels=dict(item.labels),
                    annotations=dict(item.annotations),
                    generator_url=item.generator_url,
                    receiver=item.receiver,
                    received_at=now,
                    processed_at=None,
                )
            )
        session.flush()
    return {k for k in keys if k not in known or known[k].processed_at is None}


def _stale(db: Database, items: Sequence[Received]) -> set[str]:
    """Keys of copies overtaken by a later notification of the same alert."""
    prints = list({item.am_fingerprint for item in items})
    with db.transaction() as session:
        rows = session.execute(
            select(
                models.IntakeAlert.am_fingerprint,
                models.IntakeAlert.starts_at,
                models.IntakeAlert.status,
            ).where(models.IntakeAlert.am_fingerprint.in_(prints))
        ).all()
    resolved = {(fp, at) for fp, at, status in rows if status == "resolved"}
    latest_firing: dict[str, datetime] = {}
    for fp, at, status in rows:
        if status == "firing" and (fp not in latest_firing or at > latest_firing[fp]):
            latest_firing[fp] = at
    out = set()
    for item in items:
        if item.status == "firing" and (item.am_fingerprint, item.starts_at) in resolved:
            out.add(item.dedup_key)
        elif item.status == "resolved":
            later = latest_firing.get(item.am_fingerprint)
            if later is not None and later > item.starts_at:
                out.add(item.dedup_key)
    return out


def store_batch(db: Database, items: Sequence[Received], now: datetime) -> list[Received]:
    """Store `items` durably; the ones to book, oldest first (see the module docstring)."""
    if not items:
        return []
    for _attempt in range(3):
        try:
            pending = _insert(db, items, now)
            break
        except ConflictError:
            continue  # another request stored one of them just now: read it back
    else:
        raise StoreError("could not store the alerts (a concurrent write kept colliding).")
    stale = _stale(db, [item for item in items if item.dedup_key in pending])
    if stale:
        mark_processed(db, sorted(stale), now)
    todo = [item for item in items if item.dedup_key in pending and item.dedup_key not in stale]
    return sorted(todo, key=lambda item: (item.starts_at, item.status == "firing"))


def mark_processed(db: Database, keys: Sequence[str], now: datetime) -> None:
    """The bookings of `keys` are done (a retry of them books nothing)."""
    if not keys:
        return
    with db.transaction() as session:
        session.execute(
            update(models.IntakeAlert)
            .where(models.IntakeAlert.dedup_key.in_(list(keys)))
            .values(processed_at=now)
        )


def silenced(db: Database, fingerprints: Sequence[str]) -> set[str]:
    """Of these watch alert fingerprints, the firing ones a silence keeps from an incident."""
    if not fingerprints:
        return set()
    with db.transaction() as session:
        rows = session.scalars(
            select(models.WatchAlert.fingerprint).where(
                models.WatchAlert.fingerprint.in_(list(fingerprints)),
                models.WatchAlert.state == "firing",
                models.WatchAlert.incident_id.is_(None),
                models.WatchAlert.silenced_by.is_not(None),
            )
        )
        return set(rows)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def firing_rows(db: Database, limit: int = 500) -> list[dict[str, Any]]:
    """The Alertmanager alerts firing now (booked by the intake), newest first, at most
    `limit`: the fields of a watch alert (``engine.alert_to_dict``) plus ``source``."""
    with db.transaction() as session:
        rows = session.scalars(
            select(models.WatchAlert)
            .where(
                models.WatchAlert.kind == RuleKind.ALERTMANAGER.value,
                models.WatchAlert.state == "firing",
            )
            .order_by(models.WatchAlert.active_since.desc())
            .limit(limit)
        ).all()
        return [
            {
                "rule": row.rule,
                "kind": row.kind,
                "labels": dict(row.labels),
                "service": row.service,
                "severity": row.severity,
                "state": row.state,
                "active_since": _iso(row.active_since),
                "fired_at": _iso(row.fired_at),
                "resolved_at": _iso(row.resolved_at),
                "value": row.value,
                "threshold": row.threshold,
                "summary": row.summary,
                "evidence": dict(row.evidence),
                "fingerprint": row.fingerprint,
                "source": "alertmanager",
            }
            for row in rows
        ]
