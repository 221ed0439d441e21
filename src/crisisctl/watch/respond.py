"""The watch responder: what happens when alerts fire, escalate and resolve.

`build_responder()` is the response side's one entry point; the watch loop calls its
`handle(transitions, firing, now)` after every evaluation cycle (also without transitions: the
escalation timers and the sustained-health resolution run on it). Each call records the cycle in
the incident store (in a worker thread: the store is synchronous) and then starts what that
decided — runbook actions, then the notification, per incident; a triage beside them — as
background tasks, so a slow command or a retried notification never delays the next cycle.
`drain()` waits for them; `aclose()` drains and closes the database.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any

from crisisctl.incidents import store
from crisisctl.incidents.db import Database, StoreError, open_database
from crisisctl.incidents.followups import get_detail
from crisisctl.incidents.lifecycle import EVENT_ACTION, EVENT_GUARD_MODE, EVENT_NOTE
from crisisctl.incidents.notify import Message, compose
from crisisctl.watch.actions import ActionContext, run_action
from crisisctl.watch.bookkeeping import (
    AUTHOR,
    SOURCE,
    ActionsJob,
    Bookkeeper,
    Job,
    NotifyJob,
    TriageJob,
)
from crisisctl.watch.model import Alert, ServiceDirectory, Transition
from crisisctl.watch.notifier import resolve_urls, send
from crisisctl.watch.respond_config import ResponseConfig
from crisisctl.watch.triage_step import triage_event

log = logging.getLogger("crisisctl.watch.respond")

_TITLES = {"fire": "FIRING", "escalate": "ESCALATED", "resolve": "RESOLVED"}


class WatchResponder:
    """Implements `model.Responder` over an incident store."""

    def __init__(
        self,
        config: ResponseConfig,
        db: Database,
        directory: ServiceDirectory,
        *,
        backoff_s: float = 0.5,
        triage_budget_s: float = 10.0,
    ) -> None:
        self.config = config
        self.db = db
        self.directory = directory
        self.urls = resolve_urls(config.notify.urls)
        for levels in config.runbooks.values():
            for level in levels:
                resolve_urls(level.notify)  # an unset env:NAME fails now, not mid-incident
        self.backoff_s = backoff_s
        self.triage_budget_s = triage_budget_s
        self.books = Bookkeeper(db, config, notify_enabled=bool(self.urls))
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(
        self, transitions: Sequence[Transition], firing: Sequence[Alert], now: datetime
    ) -> None:
        """Record this cycle and start what it calls for (see the module's docstring)."""
        try:
            await self.accept(transitions, now, firing, strict=False)
        except StoreError as exc:
            log.error("watch response: the incident store failed this cycle: %s", exc)
        except Exception:  # a bug must not stop the watch: say so loudly, try next cycle
            log.exception("watch response: this cycle's bookkeeping failed")

    async def accept(
        self,
        transitions: Sequence[Transition],
        now: datetime,
        firing: Sequence[Alert] = (),
        *,
        strict: bool = True,
    ) -> None:
        """Record `transitions` (from the rules or the Alertmanager intake) exactly as a cycle
        does, then start what they call for; StoreError when the store failed on any of them
        (`strict`, the default: the caller retries; nothing started) or when it failed
        altogether (else an alert's failure is logged and left to the next cycle)."""
        result = await asyncio.to_thread(
            functools.partial(self.books.book, transitions, firing, now, strict=strict)
        )
        per_incident: dict[int, list[Job]] = {}
        for job in result.jobs:
            if isinstance(job, TriageJob):
                self._spawn(self._triage(job))
            else:
                per_incident.setdefault(job.incident_id, []).append(job)
        for jobs in per_incident.values():
            self._spawn(self._run_in_order(jobs, now))

    async def drain(self) -> None:
        """Wait until every started action, notification and triage has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Drain, then close the database."""
        await self.drain()
        self.db.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(
        self, incident_id: int, kind: str, text: str, details: dict[str, Any]
    ) -> None:
        try:
            await asyncio.to_thread(
                store.add_event, self.db, incident_id, kind=kind, text=text, details=details,
                source=SOURCE, author=AUTHOR,
            )  # fmt: skip
        except StoreError as exc:
            log.error("incident %d: could not record %r: %s", incident_id, text, exc)

    async def _run_in_order(self, jobs: list[Job], now: datetime) -> None:
        for job in jobs:
            try:
                if isinstance(job, ActionsJob):
                    await self._actions(job)
                elif isinstance(job, NotifyJob):
                    await self._notify(job)
            except Exception:  # a bug in one job must not stop the others or the watch
                log.exception("watch response job %r failed", job)

    async def _actions(self, job: ActionsJob) -> None:
        ctx = ActionContext(
            incident_id=job.incident_id,
            service=job.service,
            rule=str(job.alert.get("rule", "")),
            severity=str(job.alert.get("severity", "")),
            level=job.level.level,
            alert=job.alert,
            guards=tuple(self.directory.guards(job.service)),
            label=job.label,
        )
        for action in job.level.actions:
            outcome = await run_action(action, ctx)
            kind = EVENT_GUARD_MODE if outcome.kind == "guard_mode" else EVENT_ACTION
            await self._record(job.incident_id, kind, outcome.text, outcome.details)

    async def _notify(self, job: NotifyJob) -> None:
        urls = (self.urls if job.event in self.config.notify.on else []) + resolve_urls(
            job.extra_urls
        )
        if not urls:
            return
        detail = await asyncio.to_thread(get_detail, self.db, job.incident_id)
        base = compose(detail, "internal")
        label = _TITLES.get(job.event, job.event.upper())
        if job.level is not None:
            label += f" to level {job.level}"
        message = Message(base.template, f"{label}: {base.title}", base.body)
        delivery = await send(
            message, urls, retries=self.config.notify.retries, backoff_s=self.backoff_s
        )
        details = {
            "notification": job.event,
            "delivered": delivery.ok,
            "attempts": delivery.attempts,
            "targets": list(delivery.schemes),
            "error": delivery.error,
        }
        if delivery.ok:
            text = (
                f"{job.event} notification sent to {len(urls)} target(s) "
                f"({', '.join(delivery.schemes)}) after {delivery.attempts} attempt(s)"
            )
        else:
            text = (
                f"{job.event} notification FAILED after {delivery.attempts} attempt(s): "
                f"{delivery.error}"
            )
            log.error("incident %d: %s", job.incident_id, text)
        await self._record(job.incident_id, EVENT_NOTE, text, details)

    async def _triage(self, job: TriageJob) -> None:
        url = self.directory.probe_url(job.service)
        if url is None:
            return
        try:
            kind, text, details = await triage_event(url, budget_s=self.triage_budget_s)
        except Exception as exc:  # triage must never take the response down with it
            kind, text = EVENT_NOTE, f"triage of {url} could not run ({exc.__class__.__name__})"
            details = {"error": str(exc)[:300]}
        await self._record(job.incident_id, kind, text, details)


def build_responder(
    config: ResponseConfig,
    *,
    db_url: str | None,
    directory: ServiceDirectory,
    backoff_s: float = 0.5,
    triage_budget_s: float = 10.0,
) -> WatchResponder:
    """Open the incident store at `db_url` (default: $CRISISCTL_DB or the user's SQLite file)
    and return the responder; StoreError / NotifyConfigError (one sentence) when unusable."""
    db = open_database(db_url)
    try:
        return WatchResponder(
            config, db, directory, backoff_s=backoff_s, triage_budget_s=triage_budget_s
        )
    except Exception:
        db.close()
        raise


__all__ = ["WatchResponder", "build_responder"]
