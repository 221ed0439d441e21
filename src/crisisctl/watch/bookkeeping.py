"""The response's database half: record alerts, open/join/mitigate/resolve incidents, run the
escalation timers, and say what the asynchronous half must do (`Job`s).

Synchronous (SQLAlchemy): the responder runs `book` in a worker thread once per cycle. Every
decision that must happen once across several watch processes on one database is a claim made
under a row lock: the incident itself (the store's open dedup key ``watch:SERVICE``), the
``watch_incidents`` row (whoever inserts it runs the first level), and each escalation,
mitigation, resolution and notification (updated under ``SELECT … FOR UPDATE`` / SQLite's
``BEGIN IMMEDIATE``, then acted on by the one process that changed it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from crisisctl.incidents import models, store
from crisisctl.incidents.alerts import SilenceRecord, list_silences
from crisisctl.incidents.db import ConflictError, Database, StoreError
from crisisctl.incidents.lifecycle import EVENT_ALERT, EVENT_NOTE, Status
from crisisctl.severity import Severity
from crisisctl.watch.escalation import due_escalation, first_level, level_of, may_run_unattended
from crisisctl.watch.model import Alert, AlertState, Transition
from crisisctl.watch.respond_config import EscalationLevel, ResponseConfig
from crisisctl.watch.rows import (
    alert_json,
    claim_notification,
    claim_state,
    record_alert,
    row_json,
    set_alert_incident,
)

log = logging.getLogger("crisisctl.watch.respond")

SOURCE = "watch"
AUTHOR = "crisisctl watch"


def dedup_key(service: str) -> str:
    """The incident store's open dedup key of watch's incident for `service`."""
    return f"watch:{service}"


@dataclass(frozen=True, slots=True)
class NotifyJob:
    """Send the incident's notification for `event` (fire, escalate, resolve)."""

    incident_id: int
    event: str
    level: int | None = None
    extra_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ActionsJob:
    """Run one runbook level's actions for the incident."""

    incident_id: int
    service: str
    level: EscalationLevel
    alert: dict[str, Any]
    #: how the timeline names these actions (default: "level N")
    label: str = ""


@dataclass(frozen=True, slots=True)
class TriageJob:
    """Triage the service's probe URL and attach the verdict to the incident."""

    incident_id: int
    service: str


Job = NotifyJob | ActionsJob | TriageJob


@dataclass
class Pass:
    """One bookkeeping pass: the jobs it found, grouped in the order they must run."""

    jobs: list[Job] = field(default_factory=list)


def _silence_for(alert: Alert, silences: Sequence[SilenceRecord]) -> SilenceRecord | None:
    labels = {**dict(alert.labels), "service": alert.service}
    return next((s for s in silences if s.matches(alert.rule, labels)), None)


class Bookkeeper:
    """The database half of the responder (one per responder; runs in a worker thread)."""

    def __init__(self, db: Database, config: ResponseConfig, *, notify_enabled: bool) -> None:
        self.db = db
        self.config = config
        self.notify_enabled = notify_enabled

    def runbook(self, severity: Severity) -> list[EscalationLevel]:
        return self.config.runbook(severity)

    def _notify(self, out: Pass, incident_id: int, event: str, now: datetime, **kw: Any) -> None:
        extra: tuple[str, ...] = kw.get("extra_urls", ())
        if event not in self.config.notify.on or not (self.notify_enabled or extra):
            return
        level: int | None = kw.get("level")
        severity: str | None = kw.get("severity")
        key = event if level is None else f"{event}-{level}"
        key = key if severity is None else f"{event}-{severity}"
        if claim_notification(self.db, incident_id, key, self.config.notify.cooldown, now):
            out.jobs.append(NotifyJob(incident_id, event, level, extra))
        else:
            store.add_event(
                self.db, incident_id, kind=EVENT_NOTE, source=SOURCE, author=AUTHOR, at=now,
                text=f"{event} notification not sent: one went out within the "
                f"{self.config.notify.cooldown:g} s cooldown",
                details={"notification": event, "suppressed": "cooldown"},
            )  # fmt: skip

    def book(
        self,
        transitions: Sequence[Transition],
        firing: Sequence[Alert],
        now: datetime,
        *,
        strict: bool = False,
    ) -> Pass:
        """Record this cycle and decide what to do; the jobs in the order they must run.

        A store failure on one alert is logged and the next cycle tries again; `strict` (the
        Alertmanager intake, whose sender retries) raises it instead."""
        out = Pass()
        silences = list_silences(self.db, now=now)
        seen = {t.alert.fingerprint for t in transitions}
        changes = list(transitions)
        if firing:
            recorded = self._firing_fingerprints()
            changes += [
                Transition(a, None, now)
                for a in firing
                if a.fingerprint not in seen and a.fingerprint not in recorded
            ]
        for change in changes:
            try:
                self._on_change(out, change.alert, now, silences)
            except ConflictError:
                raise
            except StoreError as exc:  # e.g. another watch process moved the incident first
                if strict:
                    raise
                log.info("alert %s: %s", change.alert.rule, exc)
        self._timers(out, now)
        return out

    def _firing_fingerprints(self) -> set[str]:
        """Firing alerts already handled: attached to an incident, or below ``open_at``
        (a silenced one is looked at again every cycle: its silence may have ended)."""
        floor = Severity[self.config.incidents.open_at]
        with self.db.transaction() as session:
            query = select(
                models.WatchAlert.fingerprint,
                models.WatchAlert.incident_id,
                models.WatchAlert.severity,
            ).where(models.WatchAlert.state == AlertState.FIRING.value)
            return {
                fp
                for fp, incident_id, severity in session.execute(query)
                if incident_id is not None or Severity[severity] < floor
            }

    def _on_change(
        self, out: Pass, alert: Alert, now: datetime, silences: Sequence[SilenceRecord]
    ) -> None:
        silence = _silence_for(alert, silences)
        attached, incident_id = record_alert(self.db, alert, now, silence.id if silence else None)
        if alert.state is AlertState.FIRING:
            if silence is not None:
                log.info("alert %s silenced by silence %d", alert.rule, silence.id)
                return
            if alert.severity < Severity[self.config.incidents.open_at]:
                return
            if attached and incident_id is not None and self._is_open(incident_id):
                self._maybe_raise_severity(out, incident_id, alert, now)
                return
            self._attach(out, alert, now)
        elif alert.state is AlertState.RESOLVED and incident_id is not None:
            store.add_event(
                self.db, incident_id, kind=EVENT_ALERT, source=SOURCE, author=AUTHOR, at=now,
                text=f"alert {alert.rule} resolved",
                details={"fingerprint": alert.fingerprint, "state": "resolved"},
            )  # fmt: skip

    def _is_open(self, incident_id: int) -> bool:
        try:
            return store.get_incident(self.db, incident_id).status.is_open
        except StoreError:
            return False

    def _maybe_raise_severity(
        self, out: Pass, incident_id: int, alert: Alert, now: datetime
    ) -> None:
        """A more severe alert raises the incident's severity: record it, run the current
        level's actions of the new severity's runbook (when they differ) and notify."""
        incident = store.get_incident(self.db, incident_id)
        if alert.severity <= incident.severity:
            return
        store.set_severity(
            self.db, incident_id, alert.severity, source=SOURCE, author=AUTHOR, at=now,
            reason=f"alert {alert.rule} is {alert.severity.name}",
        )  # fmt: skip
        with self.db.transaction() as session:
            state = session.get(models.WatchIncident, incident_id)
            number = state.level if state is not None else incident.escalation_level
        before = level_of(self.runbook(incident.severity), number)
        after = level_of(self.runbook(alert.severity), number)
        if after is not None and after != before:
            self._level_actions(out, incident_id, alert.service, after, alert_json(alert), now)
        self._notify(out, incident_id, "escalate", now, severity=alert.severity.name)

    def _attach(self, out: Pass, alert: Alert, now: datetime) -> None:
        details = alert_json(alert)
        incident = store.open_incident(
            self.db,
            title=f"{alert.service}: {alert.summary or alert.rule}"[:300],
            severity=alert.severity,
            service=alert.service,
            dedup_key=dedup_key(alert.service),
            source=SOURCE,
            author=AUTHOR,
            details=details,
            started_at=min(alert.active_since, now),
            detected_at=now,
        )
        set_alert_incident(self.db, alert.fingerprint, incident.id)
        verb = "joins" if incident.reused else "opened"
        # an alert from Alertmanager links back to the graph that fired it (generatorURL)
        link = alert.evidence.get("generator_url")
        store.add_event(
            self.db, incident.id, kind=EVENT_ALERT, source=SOURCE, author=AUTHOR, at=now,
            text=f"alert {alert.rule} firing ({alert.severity.name}, {verb} the incident): "
            f"{alert.summary or alert.rule}" + (f" — {link}" if link else ""),
            details=details,
        )  # fmt: skip
        runbook = self.runbook(max(alert.severity, incident.severity))
        start = first_level(runbook)
        if claim_state(self.db, incident.id, alert.service, start.level if start else 0, now):
            if start is not None and start.level != incident.escalation_level:
                store.escalate(
                    self.db, incident.id, level=start.level, source=SOURCE, author=AUTHOR, at=now,
                    reason="the runbook starts here",
                )  # fmt: skip
            if self.config.incidents.triage:
                out.jobs.append(TriageJob(incident.id, alert.service))
            if start is not None:
                self._level_actions(out, incident.id, alert.service, start, details, now)
            self._notify(out, incident.id, "fire", now)
            return
        if incident.reused:
            self._maybe_raise_severity(out, incident.id, alert, now)
        if incident.status is Status.MITIGATED:  # a relapse: back to work, health clock reset
            store.set_status(
                self.db, incident.id, Status.INVESTIGATING, source=SOURCE, author=AUTHOR, at=now,
                note=f"alert {alert.rule} fires again",
            )  # fmt: skip
            self._update_state(incident.id, healthy_since=None)
            self._notify(out, incident.id, "fire", now)

    def _update_state(self, incident_id: int, **values: Any) -> None:
        with self.db.transaction() as session:
            row = session.get(models.WatchIncident, incident_id, with_for_update=True)
            if row is not None:
                for name, value in values.items():
                    setattr(row, name, value)

    def _level_actions(
        self,
        out: Pass,
        incident_id: int,
        service: str,
        level: EscalationLevel,
        alert: dict[str, Any],
        now: datetime,
    ) -> None:
        if not level.actions:
            return
        if may_run_unattended(level):
            out.jobs.append(ActionsJob(incident_id, service, level, alert))
            return
        names = ", ".join(_action_name(a) for a in level.actions)
        store.add_event(
            self.db, incident_id, kind=EVENT_NOTE, source=SOURCE, author=AUTHOR, at=now,
            text=f"level {level.level} actions wait for a person (the runbook does not let them "
            f"run unattended): {names}",
            details={"level": level.level, "waiting": names},
        )  # fmt: skip

    def _timers(self, out: Pass, now: datetime) -> None:
        """Mitigate, resolve and escalate the open incidents watch looks after."""
        with self.db.transaction() as session:
            query = (
                select(models.WatchIncident.incident_id)
                .join(models.Incident, models.Incident.id == models.WatchIncident.incident_id)
                .where(models.Incident.status.in_([s.value for s in Status if s.is_open]))
            )
            ids = list(session.scalars(query))
        for incident_id in ids:
            try:
                self._timer(out, incident_id, now)
            except StoreError as exc:  # another process moved it meanwhile: next cycle sees it
                log.info("incident %d: %s", incident_id, exc)

    def _timer(self, out: Pass, incident_id: int, now: datetime) -> None:
        with self.db.transaction() as session:
            state = session.get(models.WatchIncident, incident_id, with_for_update=True)
            incident = session.get(models.Incident, incident_id)
            if state is None or incident is None:
                return
            status = Status(incident.status)
            firing = session.scalars(
                select(models.WatchAlert).where(
                    models.WatchAlert.incident_id == incident_id,
                    models.WatchAlert.state == AlertState.FIRING.value,
                )
            ).all()
            newest = max(firing, key=lambda r: r.last_seen_at, default=None)
            alert = row_json(newest) if newest is not None else {}
            decision: str | None = None
            target: EscalationLevel | None = None
            if not firing:
                if status is not Status.MITIGATED:
                    decision, state.healthy_since = "mitigate", now
                elif state.healthy_since is None:
                    state.healthy_since = now
                elif now - state.healthy_since >= timedelta(
                    seconds=self.config.incidents.resolve_after
                ):
                    decision = "resolve"
            else:
                runbook = self.runbook(Severity[incident.severity])
                target = due_escalation(
                    runbook,
                    state.level,
                    state.level_since,
                    now,
                    mitigated=status is Status.MITIGATED,
                )
                if target is not None:
                    decision, state.level, state.level_since = "escalate", target.level, now
            service, state_level = state.service, state.level
        if decision == "mitigate":
            store.set_status(
                self.db, incident_id, Status.MITIGATED, source=SOURCE, author=AUTHOR, at=now,
                note="every alert of the service resolved",
            )  # fmt: skip
        elif decision == "resolve":
            store.resolve(
                self.db, incident_id, source=SOURCE, author=AUTHOR, at=now,
                note=f"healthy for {self.config.incidents.resolve_after:g} s",
            )  # fmt: skip
            on_resolve = self.config.incidents.on_resolve
            if on_resolve:
                level = EscalationLevel(level=state_level or 1, actions=on_resolve)
                out.jobs.append(ActionsJob(incident_id, service, level, alert, "on_resolve"))
            self._notify(out, incident_id, "resolve", now)
        elif decision == "escalate" and target is not None:
            store.escalate(
                self.db, incident_id, level=target.level, source=SOURCE, author=AUTHOR, at=now,
                reason="not mitigated in time",
            )  # fmt: skip
            self._level_actions(out, incident_id, service, target, alert, now)
            self._notify(
                out, incident_id, "escalate", now, level=target.level,
                extra_urls=tuple(target.notify),
            )  # fmt: skip


def _action_name(action: Any) -> str:
    for name in ("guard_mode", "webhook"):
        if hasattr(action, name):
            return f"{name} {getattr(action, name)}"
    return "command " + " ".join(getattr(action, "command", []))[:100]


__all__ = [
    "AUTHOR",
    "SOURCE",
    "ActionsJob",
    "Bookkeeper",
    "Job",
    "NotifyJob",
    "Pass",
    "TriageJob",
    "dedup_key",
]
