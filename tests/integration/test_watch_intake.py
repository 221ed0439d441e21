"""The Alertmanager intake's ASGI app on real SQLite and PostgreSQL stores, booking through the
real watch responder: one incident per service however often Alertmanager resends, resolution
through the watch's own logic, 503 while the store fails and nothing lost after."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url
from test_incident_support import BACKENDS, throwaway_pg_database

from crisisctl.incidents import store
from crisisctl.incidents.alerts import add_silence, end_silence, list_alerts
from crisisctl.incidents.db import open_database
from crisisctl.incidents.lifecycle import Status
from crisisctl.severity import Severity
from crisisctl.watch.intake import INTAKE_PATH, Intake, intake_app
from crisisctl.watch.intake_auth import IntakeAuth
from crisisctl.watch.respond import WatchResponder, build_responder
from crisisctl.watch.respond_config import ResponseConfig

TOKEN = "intake-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


class NoGuards:
    def guards(self, service: str) -> list[Any]:
        return []

    def probe_url(self, service: str) -> str | None:
        return None


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'intake.db'}"
        return
    with throwaway_pg_database() as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def intake_client(
    db_url: str, clock: Clock
) -> AsyncIterator[tuple[httpx.AsyncClient, WatchResponder]]:
    config = ResponseConfig.model_validate({"incidents": {"triage": False, "resolve_after": "1m"}})
    responder = build_responder(config, db_url=db_url, directory=NoGuards())
    intake = Intake(responder.db, responder, default_severity=Severity.P2, clock=clock)
    app = intake_app(intake, IntakeAuth(bearer=TOKEN), max_body=64 * 1024, max_alerts=50)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            yield client, responder
    finally:
        await responder.aclose()


def notification(
    status: str = "firing",
    *,
    starts: str = "2026-12-06T08:59:00Z",
    group_key: str = "g1",
    service: str = "checkout",
    fingerprint: str = "f00dfeedbeef0001",
) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": group_key,
        "status": status,
        "receiver": "crisisctl",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "CheckoutSlow", "service": service, "severity": "P1"},
                "annotations": {"summary": "checkout p95 over 250 ms"},
                "startsAt": starts,
                "endsAt": "2026-12-06T09:10:00Z"
                if status == "resolved"
                else "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=checkout",
                "fingerprint": fingerprint,
            }
        ],
    }


def snapshot(db_url: str, service: str) -> tuple[list[store.IncidentRecord], list[Any], list[Any]]:
    db = open_database(db_url)
    try:
        incidents = store.list_incidents(db, service=service)
        events = [e for i in incidents for e in store.list_events(db, i.id)]
        alerts = [a for a in list_alerts(db) if a.service == service]
        return incidents, events, alerts
    finally:
        db.close()


async def test_repeats_and_ha_copies_make_exactly_one_incident_with_the_generator_url(
    db_url: str,
) -> None:
    clock = Clock()
    async with intake_client(db_url, clock) as (client, responder):
        first = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
        assert first.status_code == 200, first.text
        assert first.json() == {"received": 1, "booked": 1, "truncated": 0}
        for group_key in ("g1", "peer-group"):  # a repeat, then an HA peer's copy
            clock.now += timedelta(minutes=1)
            again = await client.post(
                INTAKE_PATH, json=notification(group_key=group_key), headers=AUTH
            )
            assert again.json() == {"received": 1, "booked": 0, "truncated": 0}
        await responder.drain()
    incidents, events, alerts = snapshot(db_url, "checkout")
    assert len(incidents) == 1
    assert incidents[0].severity is Severity.P1
    opened = [e for e in events if "firing" in e.text]
    assert len(opened) == 1
    assert opened[0].details["evidence"]["generator_url"].endswith("g0.expr=checkout")
    assert opened[0].text.endswith("— http://127.0.0.1:9090/graph?g0.expr=checkout")
    assert [a.state for a in alerts] == ["firing"]


async def test_a_truncated_notification_is_answered_and_shown_on_the_timeline(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Alertmanager left 12 alerts of the group out (its webhook's max_alerts): the answer,
    the log and the incident's timeline say so, so nobody takes the incident for whole."""
    doc = notification()
    doc["truncatedAlerts"] = 12
    async with intake_client(db_url, Clock()) as (client, responder):
        answer = await client.post(INTAKE_PATH, json=doc, headers=AUTH)
        await responder.drain()
    assert answer.json() == {"received": 1, "booked": 1, "truncated": 12}
    assert "left out 12 alerts" in caplog.text and "max_alerts" in caplog.text
    _incidents, events, _alerts = snapshot(db_url, "checkout")
    [opened] = [e for e in events if "firing" in e.text]
    assert opened.details["evidence"]["truncated_alerts"] == 12


async def test_an_ha_pairs_simultaneous_copies_are_booked_once(db_url: str) -> None:
    async with intake_client(db_url, Clock()) as (client, responder):
        answers = await asyncio.gather(
            *(
                client.post(INTAKE_PATH, json=notification(group_key=f"peer-{n}"), headers=AUTH)
                for n in range(4)
            )
        )
        await responder.drain()
    assert sorted(a.json()["booked"] for a in answers) == [0, 0, 0, 1]
    _incidents, events, _alerts = snapshot(db_url, "checkout")
    assert len([e for e in events if "firing" in e.text]) == 1


async def test_a_silenced_alert_opens_its_incident_at_the_first_repeat_after_the_silence(
    db_url: str,
) -> None:
    clock = Clock()
    db = open_database(db_url)
    try:
        silence = add_silence(
            db, rule=None, matchers={"service": "checkout"}, duration=timedelta(hours=1),
            reason="deploy", now=T0 - timedelta(minutes=1),
        )  # fmt: skip
        async with intake_client(db_url, clock) as (client, responder):
            for _repeat in range(2):
                clock.now += timedelta(minutes=1)
                muted = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
                assert muted.json()["booked"] == 1  # looked at again: still silenced
            assert snapshot(db_url, "checkout")[0] == []
            end_silence(db, silence.id, now=clock.now)
            clock.now += timedelta(minutes=1)
            await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
            after = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
            assert after.json()["booked"] == 0  # booked for good once it has its incident
            await responder.drain()
    finally:
        db.close()
    assert len(snapshot(db_url, "checkout")[0]) == 1


async def test_a_resolution_resolves_the_alert_and_the_incident_follows_the_watch_logic(
    db_url: str,
) -> None:
    clock = Clock()
    async with intake_client(db_url, clock) as (client, responder):
        await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
        clock.now += timedelta(minutes=2)
        done = await client.post(INTAKE_PATH, json=notification("resolved"), headers=AUTH)
        assert done.json() == {"received": 1, "booked": 1, "truncated": 0}
        # a late retry of the firing copy must not bring the alert back
        late = await client.post(INTAKE_PATH, json=notification(group_key="late"), headers=AUTH)
        assert late.json()["booked"] == 0
        await responder.handle([], [], clock.now)  # the watch cycle's timers: mitigate
        await responder.handle([], [], clock.now + timedelta(minutes=2))  # healthy 2 min
        await responder.drain()
    incidents, events, alerts = snapshot(db_url, "checkout")
    assert [a.state for a in alerts] == ["resolved"]
    assert any(e.text == "alert CheckoutSlow resolved" for e in events)
    assert len(incidents) == 1 and incidents[0].status is Status.RESOLVED


def break_store(db_url: str, *, broken: bool, table: str = "intake_alerts") -> None:
    """Rename a table away (or back) from another connection: the store fails on it."""
    old, new = (table, f"{table}_off")
    if not broken:
        old, new = new, old
    sql = f"ALTER TABLE {old} RENAME TO {new}"
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database or "", timeout=30) as connection:
            connection.execute(sql)
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql)


async def test_the_intake_answers_503_while_the_store_fails_and_loses_nothing(
    db_url: str,
) -> None:
    clock = Clock()
    async with intake_client(db_url, clock) as (client, responder):
        assert (await client.get("/healthz")).status_code == 200
        break_store(db_url, broken=True)
        failed = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
        assert failed.status_code == 503
        assert "nothing was lost" in failed.json()["error"]
        break_store(db_url, broken=False)
        retried = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
        assert retried.status_code == 200
        assert retried.json()["booked"] == 1
        await responder.drain()
    incidents, _events, alerts = snapshot(db_url, "checkout")
    assert len(incidents) == 1
    assert [a.state for a in alerts] == ["firing"]


async def test_a_booking_that_fails_after_storing_answers_503_and_the_retry_books_it(
    db_url: str,
) -> None:
    """The notification is stored, then the incident cannot be written: 503, and Alertmanager's
    retry (the same notification, already stored) opens the incident."""
    async with intake_client(db_url, Clock()) as (client, responder):
        break_store(db_url, broken=True, table="incident_events")
        first = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
        break_store(db_url, broken=False, table="incident_events")
        second = await client.post(INTAKE_PATH, json=notification(), headers=AUTH)
        await responder.drain()
    assert (first.status_code, second.status_code) == (503, 200)
    assert second.json()["booked"] == 1
    incidents, events, _alerts = snapshot(db_url, "checkout")
    assert len(incidents) == 1
    assert len([e for e in events if "firing" in e.text]) == 1


async def test_bad_requests_are_refused_before_anything_is_stored(tmp_path: Any) -> None:
    db_url = f"sqlite:///{tmp_path / 'refuse.db'}"
    async with intake_client(db_url, Clock()) as (client, _responder):
        cases = [
            ({}, json.dumps(notification()).encode(), 401),
            ({"Authorization": "Bearer wrong"}, json.dumps(notification()).encode(), 401),
            (AUTH, b"{nope", 400),
            (AUTH, json.dumps({**notification(), "version": "3"}).encode(), 400),
            (AUTH, b" " * (64 * 1024 + 1), 413),
            (AUTH, json.dumps({**notification(), "alerts": notification()["alerts"] * 51}).encode(),
             413),
        ]  # fmt: skip
        for headers, body, status in cases:
            answer = await client.post(
                INTAKE_PATH, content=body, headers={**headers, "content-type": "application/json"}
            )
            assert answer.status_code == status, answer.text
            assert answer.json()["error"].endswith(".")
        assert TOKEN not in answer.text
    db = open_database(db_url)
    try:
        assert store.list_incidents(db) == []
    finally:
        db.close()
