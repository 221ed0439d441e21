"""Saved healthy profiles of a service (triage's baselines), kept in the incident database.

A baseline is a name, the URL it was measured on, a JSON profile whose format triage defines
(per-operation percentiles, error rate and latencies per measurement round, resource levels:
see probe/profile.py; older profiles without the rounds load unchanged, so the table needs no
migration) and a validity period (24 h by
default, as the seeds' baseline management): an expired baseline is still returned, and
`Baseline.expired()` tells the caller to warn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from crisisctl.incidents import models
from crisisctl.incidents.db import Database, StoreError, utcnow

DEFAULT_VALIDITY = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Baseline:
    """A named healthy profile and when it stops being trustworthy."""

    name: str
    url: str
    profile: dict[str, Any]
    created_at: datetime
    expires_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        """True once `now` (default: the current UTC time) has reached `expires_at`."""
        return (now or utcnow()) >= self.expires_at

    @classmethod
    def from_model(cls, row: models.BaselineRow) -> Baseline:
        return cls(row.name, row.url, dict(row.profile or {}), row.created_at, row.expires_at)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise StoreError("a baseline name must be 1 to 200 characters long.")
    return name


def save_baseline(
    db: Database,
    *,
    name: str,
    url: str,
    profile: dict[str, Any],
    valid_for: timedelta = DEFAULT_VALIDITY,
) -> Baseline:
    """Store `profile` under `name` for `valid_for`, replacing any baseline of that name."""
    name = _check_name(name)
    if valid_for <= timedelta(0):
        raise StoreError("a baseline must stay valid for a positive time, e.g. 24h.")
    if not isinstance(profile, dict):
        raise StoreError("a baseline profile must be a JSON object.")
    now = utcnow()
    with db.transaction() as session:
        row = session.get(models.BaselineRow, name, with_for_update=True)
        if row is None:
            row = models.BaselineRow(name=name)
            session.add(row)
        row.url = url
        row.profile = dict(profile)
        row.created_at = now
        row.expires_at = now + valid_for
        session.flush()
        return Baseline.from_model(row)


def get_baseline(db: Database, name: str) -> Baseline | None:
    """The baseline called `name`, or None."""
    with db.transaction() as session:
        row = session.get(models.BaselineRow, name.strip())
        return None if row is None else Baseline.from_model(row)


def list_baselines(db: Database) -> list[Baseline]:
    """Every baseline, by name."""
    with db.transaction() as session:
        rows = session.scalars(select(models.BaselineRow).order_by(models.BaselineRow.name))
        return [Baseline.from_model(row) for row in rows]


def delete_baseline(db: Database, name: str) -> bool:
    """Delete the baseline called `name`; False when there was none."""
    with db.transaction() as session:
        result = session.execute(
            delete(models.BaselineRow).where(models.BaselineRow.name == name.strip())
        )
        return bool(getattr(result, "rowcount", 0))
