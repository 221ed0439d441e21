"""The incident store on real SQLite and PostgreSQL: lifecycle, MTTx, dedup, timeline, follow-ups,
baselines, timezones and migrations from an empty database."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from test_incident_support import db, db_url, pg_session_url, throwaway_pg_database

from crisisctl.incidents import followups, store
from crisisctl.incidents.baselines import (
    delete_baseline,
    get_baseline,
    list_baselines,
    save_baseline,
)
from crisisctl.incidents.db import HEAD_REVISION, Database, StoreError, open_database
from crisisctl.incidents.lifecycle import Status
from crisisctl.incidents.models import Base
from crisisctl.severity import Severity

__all__ = ["db", "db_url", "pg_session_url"]  # fixtures used below

T0 = datetime(2025, 11, 23, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_full_lifecycle_and_mttx(db: Database) -> None:
    inc = store.open_incident(
        db, title="checkout slow", severity=Severity.P1, service="checkout",
        started_at=at(0), detected_at=at(7.5),
    )  # fmt: skip
    assert inc.status is Status.DETECTED and not inc.reused
    store.set_status(db, inc.id, Status.INVESTIGATING, at=at(10))
    store.set_status(db, inc.id, Status.STABILIZING, at=at(20))
    store.set_status(db, inc.id, Status.MITIGATED, at=at(40))
    done = store.resolve(db, inc.id, at=at(90))
    assert done.mttx == {
        "time_to_detect": timedelta(minutes=7.5),
        "time_to_acknowledge": timedelta(minutes=2.5),
        "time_to_mitigate": timedelta(minutes=40),
        "time_to_resolve": timedelta(minutes=90),
    }
    as_dict = done.to_dict()
    assert as_dict["time_to_resolve_ms"] == 90 * 60_000.0
    assert as_dict["resolved_at"] == "2025-11-23T11:30:00Z"
    store.set_status(db, inc.id, Status.POSTMORTEM, at=at(200))
    closed = store.set_status(db, inc.id, Status.CLOSED, at=at(300))
    assert closed.closed_at == at(300) and not closed.is_open
    with pytest.raises(StoreError, match="from closed to investigating"):
        store.set_status(db, inc.id, Status.INVESTIGATING)
    kinds = [e.kind for e in store.list_events(db, inc.id)]
    assert kinds == ["opened"] + ["status_change"] * 6


def test_skipping_to_resolved_sets_implied_milestones(db: Database) -> None:
    inc = store.open_incident(db, title="t", severity=Severity.P3, detected_at=at(0))
    done = store.resolve(db, inc.id, at=at(5))
    assert done.acknowledged_at == done.mitigated_at == done.resolved_at == at(5)
    reopened = store.set_status(db, inc.id, Status.INVESTIGATING, at=at(6))
    assert reopened.resolved_at is None and reopened.mitigated_at == at(5) and reopened.is_open


def test_invalid_values_are_store_errors(db: Database) -> None:
    inc = store.open_incident(db, title="t", severity=Severity.P2)
    with pytest.raises(StoreError, match="no incident 424242"):
        store.get_incident(db, 424242)
    with pytest.raises(StoreError, match="no incident 424242"):
        store.add_event(db, 424242, kind="note", text="x")
    with pytest.raises(StoreError, match="already detected"):
        store.set_status(db, inc.id, Status.DETECTED)
    with pytest.raises(StoreError, match="from detected to postmortem"):
        store.set_status(db, inc.id, Status.POSTMORTEM)
    with pytest.raises(StoreError, match="not OK"):
        store.open_incident(db, title="t", severity=Severity.OK)
    with pytest.raises(StoreError, match="unknown event kind"):
        store.add_event(db, inc.id, kind="gossip", text="x")
    with pytest.raises(StoreError, match="before the incident was detected"):
        store.set_status(db, inc.id, Status.MITIGATED, at=inc.detected_at - timedelta(hours=1))
    with pytest.raises(StoreError, match="no timezone"):
        store.set_status(db, inc.id, Status.MITIGATED, at=datetime(2030, 1, 1))
    with pytest.raises(StoreError, match="error_rate is a fraction"):
        store.update_incident(db, inc.id, {"error_rate": 12.0})
    with pytest.raises(StoreError, match="cannot be set"):
        store.update_incident(db, inc.id, {"status": "closed"})


def test_dedup_key_keeps_one_open_incident(db: Database) -> None:
    first = store.open_incident(db, title="p95 alert", severity=Severity.P2, dedup_key="api:p95")
    again = store.open_incident(db, title="p95 alert", severity=Severity.P2, dedup_key="api:p95")
    assert again.reused and again.id == first.id
    store.resolve(db, first.id)
    fresh = store.open_incident(db, title="p95 alert", severity=Severity.P2, dedup_key="api:p95")
    assert not fresh.reused and fresh.id != first.id
    with pytest.raises(StoreError, match=f"incident {fresh.id} is already open"):
        store.set_status(db, first.id, Status.INVESTIGATING)  # reopening would make two


def test_severity_and_escalation_changes_are_recorded(db: Database) -> None:
    inc = store.open_incident(db, title="t", severity=Severity.P2)
    assert store.set_severity(db, inc.id, "p0", reason="errors 60 %").severity is Severity.P0
    with pytest.raises(StoreError, match="already P0"):
        store.set_severity(db, inc.id, Severity.P0)
    levels = [store.escalate(db, inc.id).escalation_level for _ in range(3)]
    assert levels == [2, 3, 4]
    with pytest.raises(StoreError, match="highest escalation level"):
        store.escalate(db, inc.id)
    assert store.escalate(db, inc.id, level=1).escalation_level == 1
    with pytest.raises(StoreError, match="level 7 does not exist"):
        store.escalate(db, inc.id, level=7)
    events = store.list_events(db, inc.id, kinds=["severity_change", "escalation"])
    assert [e.details["to"] for e in events] == ["P0", 2, 3, 4, 1]
    assert events[0].text == "severity raised P2 → P0: errors 60 %"


def test_timeline_filter_pin_and_followups(db: Database) -> None:
    inc = store.open_incident(db, title="t", severity=Severity.P1)
    note = store.add_event(db, inc.id, kind="note", text="looking", source="alice")
    store.add_event(db, inc.id, kind="action", text="guard emergency mode", details={"mode": 1})
    store.pin_event(db, inc.id, note.id)
    assert [e.id for e in store.list_events(db, inc.id, pinned=True)] == [note.id]
    assert [e.text for e in store.list_events(db, inc.id, source="alice")] == ["looking"]
    actions = store.list_events(db, inc.id, kinds=["action"])
    assert actions[0].details == {"mode": 1}
    with pytest.raises(StoreError, match="has no timeline event"):
        store.pin_event(db, inc.id + 1000, note.id)

    item = followups.add_action(
        db, inc.id, title="alert on pool saturation", kind="prevent", owner="carol",
        due_date=datetime(2025, 12, 15).date(), priority="high",
    )  # fmt: skip
    done = followups.update_action(db, item.id, status="done")
    assert done.status == "done" and done.completed_at is not None
    with pytest.raises(StoreError, match="unknown action item kind"):
        followups.add_action(db, inc.id, title="x", kind="pray")
    followups.add_root_cause(
        db, inc.id, category="Resource Management", cause="pool exhausted", evidence=["wait 3 s"]
    )
    followups.add_lesson(db, inc.id, kind="went-well", text="guard shed load")
    with pytest.raises(StoreError, match="unknown lesson kind"):
        followups.add_lesson(db, inc.id, kind="meh", text="x")
    detail = followups.get_detail(db, inc.id)
    assert [a.title for a in detail.actions] == ["alert on pool saturation"]
    assert detail.root_causes[0].evidence == ("wait 3 s",)
    assert detail.lessons[0].kind == "went_well"
    assert detail.to_dict()["action_items"][0]["due_date"] == "2025-12-15"


def test_times_come_back_aware_utc(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    inc = store.open_incident(
        db, title="t", severity=Severity.P2, detected_at=datetime(2025, 1, 1, 12, tzinfo=plus_two)
    )
    again = store.get_incident(db, inc.id)
    assert again.detected_at == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert again.detected_at.utcoffset() == timedelta(0)
    assert again.created_at.tzinfo is not None


def test_attach_report_summarises_figures(db: Database) -> None:
    inc = store.open_incident(db, title="t", severity=Severity.P1)
    report = {
        "report": "load", "url": "http://127.0.0.1:8000/", "requests": 1000,
        "requests_per_second": 99.5, "error_total": 10, "status_counts": {"200": 960, "503": 30},
        "latency_ms": {"p50": 12.0, "p95": 250.0, "p99": 900.0, "max": 1500.0},
        "per_second": [{"second": i, "requests": 100, "errors": 1, "p95_ms": 200.0 + i}
                       for i in range(10)],
    }  # fmt: skip
    event = store.attach_report(db, inc.id, report, label="before")
    assert event.kind == "load_report"
    assert event.details["error_rate"] == pytest.approx(0.04)
    assert event.details["label"] == "before" and len(event.details["series"]) == 10
    assert "p95 250 ms" in event.text and "99.5 req/s" in event.text
    with pytest.raises(StoreError, match='no "report" field'):
        store.attach_report(db, inc.id, {"hello": 1})


def test_baselines_roundtrip(db: Database) -> None:
    first = save_baseline(db, name="api", url="http://127.0.0.1:8000/", profile={"p95_ms": 80})
    assert not first.expired() and first.expired(first.created_at + timedelta(hours=24))
    second = save_baseline(
        db, name="api", url="http://127.0.0.1:8000/", profile={"p95_ms": 90},
        valid_for=timedelta(minutes=5),
    )  # fmt: skip
    got = get_baseline(db, "api")
    assert got is not None and got.profile == {"p95_ms": 90} and got.expires_at == second.expires_at
    assert [b.name for b in list_baselines(db)] == ["api"]
    assert delete_baseline(db, "api") and not delete_baseline(db, "api")
    assert get_baseline(db, "api") is None
    with pytest.raises(StoreError, match="positive time"):
        save_baseline(db, name="x", url="u", profile={}, valid_for=timedelta(0))


def _assert_schema_matches_models(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == HEAD_REVISION
        diff = [d for d in compare_metadata(context, Base.metadata) if d[0] != "remove_table"]
        assert diff == []
        tables = set(inspect(connection).get_table_names())
    assert {"incidents", "incident_events", "action_items", "baselines"} <= tables


def test_migrations_from_empty_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = open_database(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        _assert_schema_matches_models(database)
    finally:
        database.close()
    open_database(f"sqlite:///{tmp_path / 'fresh.db'}").close()  # idempotent


def test_a_new_sqlite_file_opened_while_another_connection_writes_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two watchers opening one new store at once: switching the file to WAL while another
    connection holds it answers "database is locked" at once (SQLite calls no busy handler
    there); the open waits for the other connection instead of failing (a CI failure)."""
    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a writer on a file still in rollback-journal mode
    other.execute("CREATE TABLE held (x INTEGER)")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        database = open_database(f"sqlite:///{path}")
        waited = time.monotonic() - started
        database.close()
    finally:
        release.join()
        other.close()
    assert waited >= 0.3  # it waited for the writer rather than failing at once
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_from_empty_postgresql() -> None:
    with throwaway_pg_database() as url:
        database = open_database(url)
        try:
            _assert_schema_matches_models(database)
        finally:
            database.close()
        open_database(url).close()


def test_head_revision_constant_matches_scripts() -> None:
    with resources.as_file(resources.files("crisisctl.incidents") / "migrations") as path:
        config = Config()
        config.set_main_option("script_location", str(path))
        assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    templates = resources.files("crisisctl.incidents") / "templates"
    assert (templates / "postmortem.html.j2").is_file()


def test_unreachable_database_is_one_sentence() -> None:
    with pytest.raises(StoreError, match="could not open the incident database") as info:
        open_database("postgresql://postgres@127.0.0.1:1/nothing")
    assert "\n" not in str(info.value)
