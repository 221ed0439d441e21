"""The demo's incident: its timeline, lifecycle and post-mortem, through the incident store.

`IncidentLog` runs every store call in a thread (SQLAlchemy is synchronous; the crowd and the
narration keep running on the event loop) and remembers the statuses the incident went through.
The database is the demo's own SQLite file unless the user gave ``--db``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from crisisctl.incidents.db import Database, open_database
from crisisctl.incidents.followups import add_action, add_lesson, add_root_cause, get_detail
from crisisctl.incidents.followups import update_action as _update_action
from crisisctl.incidents.lifecycle import Status
from crisisctl.incidents.postmortem import build_postmortem, render
from crisisctl.incidents.records import IncidentRecord, iso, ms
from crisisctl.incidents.store import (
    add_event,
    attach_report,
    get_incident,
    open_incident,
    set_status,
    update_incident,
)
from crisisctl.lab.story import Action
from crisisctl.severity import Severity

SOURCE = "crisisctl demo"
AUTHOR = "crisisctl demo"
#: the seeds' post-mortem generator gives action items four weeks
ACTION_DUE = timedelta(weeks=4)

T = TypeVar("T")


class IncidentLog:
    """One incident of the demo, opened by `open()`."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.db: Database | None = None
        self.id: int | None = None
        self.statuses: list[str] = []

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _need(self) -> tuple[Database, int]:
        if self.db is None or self.id is None:
            raise RuntimeError("the incident is not open yet")
        return self.db, self.id

    async def connect(self) -> None:
        """Open the database (StoreError says what is wrong with it)."""
        if self.db is None:
            self.db = await self._call(open_database, self.db_url)

    async def open(
        self,
        triage: dict[str, Any],
        *,
        title: str,
        service: str,
        started_at: datetime,
    ) -> IncidentRecord:
        """Open the incident with the triage verdict and attach the triage report."""
        await self.connect()
        assert self.db is not None
        severity = Severity.parse(str(triage["severity"]))
        record = await self._call(
            open_incident, self.db, title=title, severity=severity, service=service,
            dedup_key=f"demo:{service}", source=SOURCE, author=AUTHOR, started_at=started_at,
            details={"reasons": [r["message"] for r in triage.get("reasons", [])]},
        )  # fmt: skip
        self.id = record.id
        self.statuses.append(record.status.value)
        await self.attach(triage, source="triage")
        return record

    async def attach(
        self, report: dict[str, Any], *, source: str = SOURCE, label: str | None = None
    ) -> None:
        """Attach a triage / load / validate report as a timeline event."""
        db, incident = self._need()
        await self._call(
            attach_report, db, incident, report, source=source, author=AUTHOR, label=label
        )

    async def event(self, kind: str, text: str, details: dict[str, Any] | None = None) -> None:
        """Log one timeline event (action, guard_mode, note…)."""
        db, incident = self._need()
        await self._call(
            add_event, db, incident, kind=kind, text=text, details=details, source=SOURCE,
            author=AUTHOR,
        )  # fmt: skip

    async def status(self, status: Status, note: str | None = None) -> None:
        """Move the incident along its lifecycle."""
        db, incident = self._need()
        record = await self._call(
            set_status, db, incident, status, source=SOURCE, author=AUTHOR, note=note
        )
        self.statuses.append(record.status.value)

    async def learn(
        self,
        *,
        causes: list[dict[str, Any]],
        actions: list[Action],
        lessons: list[tuple[str, str]],
        impact: dict[str, Any],
        summary: str,
    ) -> None:
        """Record root causes, action items (the done ones marked done), lessons and impact."""
        db, incident = self._need()
        for cause in causes:
            await self._call(
                add_root_cause, db, incident, category=cause["category"], cause=cause["cause"],
                evidence=cause["evidence"], source=SOURCE, author=AUTHOR,
            )  # fmt: skip
        due = date.today() + ACTION_DUE
        for action in actions:
            item = await self._call(
                add_action, db, incident, title=action.title, kind=action.kind,
                owner="Engineering Team", due_date=None if action.done else due,
                priority=action.priority, source=SOURCE, author=AUTHOR,
            )  # fmt: skip
            if action.done:
                await self._call(
                    _update_action, db, item.id, status="done", source=SOURCE, author=AUTHOR
                )
        for kind, text in lessons:
            await self._call(
                add_lesson, db, incident, kind=kind, text=text, source=SOURCE, author=AUTHOR
            )
        await self._call(
            update_incident, db, incident, {**impact, "summary": summary}, source=SOURCE,
            author=AUTHOR,
        )  # fmt: skip

    async def postmortem(self, out_dir: Path) -> dict[str, Path]:
        """Write the post-mortem as Markdown, HTML and JSON; their paths."""
        db, incident = self._need()
        detail = await self._call(get_detail, db, incident)
        document = build_postmortem(detail)
        paths = {fmt: out_dir / f"postmortem.{fmt}" for fmt in ("md", "html", "json")}

        def write() -> None:
            for fmt, path in paths.items():
                path.write_text(render(document, fmt), encoding="utf-8")

        await self._call(write)
        return paths

    async def snapshot(self) -> dict[str, Any]:
        """The incident's state for the summary: status, severity, milestones, MTTx."""
        db, incident = self._need()
        record = await self._call(get_incident, db, incident)
        detail = await self._call(get_detail, db, incident)
        return {
            "id": record.id,
            "title": record.title,
            "severity": record.severity.name,
            "status": record.status.value,
            "statuses": list(self.statuses),
            "started_at": iso(record.started_at),
            "detected_at": iso(record.detected_at),
            "acknowledged_at": iso(record.acknowledged_at),
            "mitigated_at": iso(record.mitigated_at),
            "resolved_at": iso(record.resolved_at),
            "mttx_ms": {name: ms(value) for name, value in record.mttx.items()},
            "events": len(detail.events),
            "root_causes": len(detail.root_causes),
            "action_items": len(detail.actions),
            "lessons": len(detail.lessons),
        }

    def close(self) -> None:
        """Release the database connections."""
        if self.db is not None:
            self.db.close()
