"""What a running ``serve`` holds: the watch loop, the responder, the incident store, the hub.

`ServeRuntime.start` (the app's lifespan) restores the event history and the watch's state and
starts the watch loop as a task on the server's event loop; the watch's responder is the same
one ``crisisctl watch`` builds (`watch.respond.build_responder`), wrapped so that after every
cycle the fleet's figures, the alert transitions and the incident changes are published as
events. `stop` ends the event streams, then the loop (a cycle still running after `STOP_WAIT_S` is
cancelled; the watch saves its state either way), drains the responder (as ``crisisctl watch``
does on its way out), closes the store and saves the event history (a clean save: resuming
clients keep their place).

Incident changes — whether the watch's responder, an API call or the CLI made them — are found
by `sync_incidents` (among the 50 newest and the open incidents, those whose ``updated_at``
moved, then their new timeline rows) and published as ``incident`` and ``timeline`` events: one
path for every writer of the store. It runs after every watch cycle and every API change
(without a watch file: every `persist_every` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from crisisctl.incidents import store
from crisisctl.incidents.db import Database, open_database
from crisisctl.incidents.records import EventRecord, IncidentRecord
from crisisctl.server.events import EVENTS_FILE, EventHub
from crisisctl.server.fleet import FLEET_SERIES, fleet_snapshot, fleet_snapshot_async
from crisisctl.server.settings import ServeSettings
from crisisctl.severity import Severity
from crisisctl.watch.config import load_watch_file
from crisisctl.watch.config_sources import IntakeSpec
from crisisctl.watch.engine import alert_to_dict
from crisisctl.watch.intake import Intake
from crisisctl.watch.intake_auth import IntakeAuth, intake_auth
from crisisctl.watch.loop import Watch
from crisisctl.watch.model import Alert, Transition
from crisisctl.watch.respond import WatchResponder, build_responder

__all__ = ["ServeRuntime", "incident_summary"]

#: the console's charts reach back an hour: the fleet's series are kept at least that long
CHART_RETENTION_S: Final = 3600.0
#: how long a stop waits for the watch's cycle in flight before cancelling it
STOP_WAIT_S: Final = 1.0
#: incidents read per sync: the newest ones, and the open ones (however old)
SYNC_LIMIT: Final = 50
OPEN_LIMIT: Final = 500
log = logging.getLogger("crisisctl.server")


def incident_summary(record: IncidentRecord) -> dict[str, Any]:
    """An incident as the list and the ``incident`` events show it."""
    return record.to_dict()


@dataclass
class _Seen:
    updated_at: datetime
    last_event: int


class _Publishing:
    """The watch's responder plus publication of the cycle's results."""

    def __init__(self, runtime: ServeRuntime, inner: WatchResponder | None) -> None:
        self.runtime = runtime
        self.inner = inner

    async def handle(
        self, transitions: Sequence[Transition], firing: Sequence[Alert], now: datetime
    ) -> None:
        runtime = self.runtime
        if self.inner is not None:
            await self.inner.handle(transitions, firing, now)
        for change in transitions:
            runtime.hub.publish("alert", alert_to_dict(change.alert))
        await runtime.publish_fleet(now.timestamp())
        await runtime.sync_incidents()


class _IntakeSink:
    """The Alertmanager intake's bookings: the responder's, then published like a cycle's."""

    def __init__(self, runtime: ServeRuntime, inner: WatchResponder) -> None:
        self.runtime = runtime
        self.inner = inner

    async def accept(self, transitions: Sequence[Transition], now: datetime) -> None:
        await self.inner.accept(transitions, now)
        for change in transitions:
            self.runtime.hub.publish(
                "alert", {**alert_to_dict(change.alert), "source": "alertmanager"}
            )
        await self.runtime.sync_incidents()


@dataclass(frozen=True)
class IntakeMount:
    """The Alertmanager intake served beside the API (the watch file's ``intake:``)."""

    intake: Intake
    auth: IntakeAuth
    spec: IntakeSpec


class ServeRuntime:
    """The live parts behind the app (one per process)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        events = settings.config.events
        self.hub = EventHub(
            events.buffer,
            events.client_queue,
            max_bytes=int(events.buffer_mb * 1024 * 1024),
            client_bytes=int(events.client_mb * 1024 * 1024),
        )
        self.watch: Watch | None = None
        self.responder: WatchResponder | None = None
        self.db: Database | None = None
        #: the Alertmanager intake, when the watch file has an ``intake:`` section
        self.intake: IntakeMount | None = None
        self.fleet: dict[str, Any] = fleet_snapshot(None, time.time())
        self._seen: dict[int, _Seen] = {}
        self._sync_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    # -- construction (synchronous: errors are one sentence before anything listens) -----------
    def open(self) -> None:
        """Read the watch file, build the watch and the responder, open the store.
        Raises WatchFileError, StoreError or ValueError (one sentence each; IntakeConfigError,
        a ValueError, for an ``intake:`` without a credential on a public listener)."""
        settings = self.settings
        if settings.watch_path is not None:
            config = load_watch_file(settings.watch_path)
            watch = Watch(config, state_dir=settings.state_dir / "watch")
            keep = {n: max(watch.store.retention.of(n), CHART_RETENTION_S) for n in FLEET_SERIES}
            old = watch.store.retention
            watch.store.retention = replace(old, by_name={**old.by_name, **keep})
            db_url = settings.db_url or config.db_url()
            self.responder = build_responder(
                config.response, db_url=db_url, directory=watch.directory
            )
            self.db = self.responder.db
            self.watch = watch
            if config.intake is not None:
                spec = config.intake  # no credential on a public listener: IntakeConfigError
                sink = _IntakeSink(self, self.responder)
                severity = Severity[spec.default_severity]
                intake = Intake(self.db, sink, default_severity=severity)
                self.intake = IntakeMount(intake, intake_auth(spec, settings.host), spec)
        else:
            self.db = open_database(settings.db_url)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.db is None:
            self.open()
        path = self.settings.state_dir / EVENTS_FILE
        restored = await asyncio.to_thread(self.hub.load, path)
        log.info("event history: %d event(s) restored, last id %s", restored, self.hub.last_id)
        # mark the history as in use at once: should this run crash before its clean save, the
        # next start must not trust a file that says "clean" while later events were lost
        await asyncio.to_thread(self.hub.save, path, clean=False)
        await self.sync_incidents(publish=False)
        if self.watch is not None:
            await self.watch.load_state()
            publishing = _Publishing(self, self.responder)
            self._tasks.append(asyncio.create_task(self.watch.run(self._stop, publishing)))
        self._tasks.append(asyncio.create_task(self._persist_periodically()))
        self.started = True

    async def stop(self) -> None:
        """End the watch (its state saved), drain the responder, save the events, close."""
        self._stop.set()
        self.hub.close()
        if self._tasks:  # a cycle in flight may wait on slow scrapes: cut it short
            _, late = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for task in late:
                task.cancel()  # Watch.run saves its state in its `finally`
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self.responder is not None:
            await self.responder.aclose()
        elif self.db is not None:
            self.db.close()
        path = self.settings.state_dir / EVENTS_FILE
        try:
            await asyncio.to_thread(self.hub.save, path, clean=True)
        except OSError as exc:
            log.error("could not save the event history to %s: %s", path, exc)

    async def _persist_periodically(self) -> None:
        every = self.settings.config.events.persist_every
        path = self.settings.state_dir / EVENTS_FILE
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=every)
            if self.watch is None and not self._stop.is_set():
                await self.sync_incidents()  # no watch cycle to do it: the CLI's changes
            if not self._stop.is_set() and self.hub.needs_save():
                try:
                    await asyncio.to_thread(self.hub.save, path, clean=False)
                except OSError as exc:
                    log.warning("could not save the event history to %s: %s", path, exc)

    # -- publication ---------------------------------------------------------------------------
    async def publish_fleet(self, now: float) -> None:
        self.fleet = await fleet_snapshot_async(self.watch, now)
        self.hub.publish("fleet", self.fleet)

    def _changes(self) -> list[tuple[IncidentRecord, list[EventRecord]]]:
        """Incidents whose updated_at moved since the last sync, with their new events."""
        assert self.db is not None
        out = []
        newest = store.list_incidents(self.db, status="all", limit=SYNC_LIMIT)
        opened = store.list_incidents(self.db, status="open", limit=OPEN_LIMIT)
        records = {r.id: r for r in [*opened, *newest]}  # an old incident still open counts
        for record in records.values():
            seen = self._seen.get(record.id)
            if seen is not None and seen.updated_at == record.updated_at:
                continue
            after = seen.last_event if seen is not None else -1
            events = store.list_events(self.db, record.id)
            fresh = [e for e in events if e.id > after]
            last = max((e.id for e in events), default=0)
            self._seen[record.id] = _Seen(record.updated_at, last)
            out.append((record, fresh))
        return out

    async def sync_incidents(self, *, publish: bool = True) -> None:
        """Publish the incident and timeline changes since the last call."""
        if self.db is None:
            return
        async with self._sync_lock:
            try:
                changes = await asyncio.to_thread(self._changes)
            except Exception:  # the store failing must not take the loop down
                log.exception("could not read incident changes")
                return
        if not publish:
            return
        for record, events in changes:
            self.hub.publish("incident", incident_summary(record))
            for event in events:
                self.hub.publish("timeline", {"incident_id": record.id, "entry": event.to_dict()})
