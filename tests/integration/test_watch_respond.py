"""The watch responder on real SQLite and PostgreSQL, real guarded uvicorn servers and a real
HTTP receiver on loopback, fed hand-made transitions at chosen instants (an injected clock)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from guard_servers import guard_servers
from test_incident_support import BACKENDS, throwaway_pg_database
from watch_support import Directory, Receiver, alert, fire, resolve

from crisisctl.incidents import store
from crisisctl.incidents.alerts import add_silence, end_silence, list_alerts
from crisisctl.incidents.db import open_database
from crisisctl.incidents.lifecycle import Status
from crisisctl.severity import Severity
from crisisctl.watch.model import GuardEndpoint
from crisisctl.watch.respond import WatchResponder, build_responder
from crisisctl.watch.respond_config import ResponseConfig

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DRAIN_S = 30.0


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh database on each backend: the responder looks after every open watch incident
    of its database, so tests must not share one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'watch.db'}"
        return
    with throwaway_pg_database() as url:
        yield url


def service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def config(urls: list[str], **sections: Any) -> ResponseConfig:
    data: dict[str, Any] = {
        "incidents": {"triage": False, "resolve_after": "5m"},
        "notify": {"urls": urls, "cooldown": "5m", "retries": 0},
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if name != "runbooks" else value
    return ResponseConfig.model_validate(data)


async def step(
    responder: WatchResponder, transitions: list[Any], firing: list[Any], at: datetime
) -> None:
    await responder.handle(transitions, firing, at)
    await asyncio.wait_for(responder.drain(), DRAIN_S)


def watch_incidents(db_url: str, service: str) -> list[store.IncidentRecord]:
    db = open_database(db_url)
    try:
        return store.list_incidents(db, service=service)
    finally:
        db.close()


def timeline(db_url: str, incident_id: int) -> list[tuple[str, str]]:
    db = open_database(db_url)
    try:
        return [(e.kind, e.text) for e in store.list_events(db, incident_id)]
    finally:
        db.close()


def guard_mode(url: str) -> str:
    data = httpx.get(f"{url}/_crisis/status", trust_env=False, timeout=5.0).json()
    return str(data["mode"]["mode"])


async def test_fire_opens_one_incident_switches_guards_and_notifies(db_url: str) -> None:
    svc = service_name()
    runbooks = {"P1": [{"level": 1, "actions": [{"guard_mode": "emergency"}]}]}
    with (
        Receiver() as hook,
        guard_servers({"token": "s3cret-token"}, {"token": "s3cret-token"}) as (a, b),
    ):
        guards = [GuardEndpoint(url=s.url, token="s3cret-token") for s in (a, b)]
        responder = build_responder(
            config([hook.url()], runbooks=runbooks), db_url=db_url,
            directory=Directory({svc: guards}),
        )  # fmt: skip
        try:
            first = alert(svc, T0)
            second = alert(svc, T0, rule="error_rate", instance="b")
            await step(responder, [fire(first, T0)], [first], T0)
            assert guard_mode(a.url) == guard_mode(b.url) == "emergency"
            # next cycles: the same alert still firing, another alert of the service fires
            later = T0 + timedelta(seconds=10)
            await step(responder, [fire(second, later)], [first, second], later)
            await step(responder, [], [first, second], later + timedelta(seconds=10))
        finally:
            await responder.aclose()
    incidents = watch_incidents(db_url, svc)
    assert len(incidents) == 1 and incidents[0].status is Status.DETECTED
    events = timeline(db_url, incidents[0].id)
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["opened", "alert"]
    assert sum(1 for k, t in events if k == "alert" and "firing" in t) == 2
    assert any(k == "guard_mode" and "on 2 of 2 instance(s)" in t for k, t in events)
    assert all("s3cret-token" not in t for _, t in events)
    assert len(hook.received) == 1 and hook.titles()[0].startswith("FIRING: [P1]")
    assert "guard mode → emergency" in str(hook.received[0].get("message", ""))


async def test_escalates_on_timers_waits_for_a_person_then_mitigates_and_resolves(
    db_url: str, tmp_path: Any
) -> None:
    svc = service_name()
    marker = tmp_path / "rollback-ran"
    with Receiver() as hook, Receiver() as oncall:
        runbooks = {
            "P1": [
                {"level": 1, "escalate_after": "1m"},
                {"level": 2, "notify": [oncall.url("/oncall")], "escalate_after": "2m"},
                {"level": 3, "actions": [{"command": ["touch", str(marker)]}]},
            ]
        }
        responder = build_responder(
            config([hook.url()], runbooks=runbooks), db_url=db_url, directory=Directory()
        )
        try:
            a = alert(svc, T0)
            await step(responder, [fire(a, T0)], [a], T0)
            await step(responder, [], [a], T0 + timedelta(seconds=59))
            assert watch_incidents(db_url, svc)[0].escalation_level == 1
            await step(responder, [], [a], T0 + timedelta(seconds=60))
            assert watch_incidents(db_url, svc)[0].escalation_level == 2
            assert len(oncall.received) == 1 and "ESCALATED to level 2" in oncall.titles()[0]
            await step(responder, [], [a], T0 + timedelta(seconds=179))
            assert watch_incidents(db_url, svc)[0].escalation_level == 2
            await step(responder, [], [a], T0 + timedelta(seconds=180))
            assert watch_incidents(db_url, svc)[0].escalation_level == 3
            assert not marker.exists()  # level 3 is not unattended: it waits for a person
            t_ok = T0 + timedelta(seconds=200)
            await step(responder, [resolve(a, t_ok)], [], t_ok)
            assert watch_incidents(db_url, svc)[0].status is Status.MITIGATED
            await step(responder, [], [], t_ok + timedelta(seconds=299))
            assert watch_incidents(db_url, svc)[0].status is Status.MITIGATED
            await step(responder, [], [], t_ok + timedelta(seconds=300))
            assert watch_incidents(db_url, svc)[0].status is Status.RESOLVED
            await step(responder, [], [], t_ok + timedelta(seconds=400))  # no second resolve
        finally:
            await responder.aclose()
    titles = hook.titles()
    assert [t.split(":")[0] for t in titles] == [
        "FIRING",
        "ESCALATED to level 2",
        "ESCALATED to level 3",
        "RESOLVED",
    ]
    events = timeline(db_url, watch_incidents(db_url, svc)[0].id)
    assert any("level 3 actions wait for a person" in t for _, t in events)
    assert next(t for k, t in events if k == "escalation").startswith("escalation level 1")


async def test_cooldown_holds_across_a_relapse(db_url: str) -> None:
    svc = service_name()
    with Receiver() as hook:
        responder = build_responder(config([hook.url()]), db_url=db_url, directory=Directory())
        try:
            a = alert(svc, T0)
            await step(responder, [fire(a, T0)], [a], T0)
            t1 = T0 + timedelta(seconds=30)
            await step(responder, [resolve(a, t1)], [], t1)
            t2 = T0 + timedelta(seconds=60)  # fires again within the 5 min cooldown
            await step(responder, [fire(a, t2)], [a], t2)
            assert len(hook.received) == 1
            t3 = T0 + timedelta(seconds=400)  # relapse after the cooldown: notified again
            await step(responder, [resolve(a, t3)], [], t3)
            t4 = t3 + timedelta(seconds=10)
            await step(responder, [fire(a, t4)], [a], t4)
        finally:
            await responder.aclose()
    assert [t.split(":")[0] for t in hook.titles()] == ["FIRING", "FIRING"]
    incidents = watch_incidents(db_url, svc)
    assert len(incidents) == 1 and incidents[0].status is Status.INVESTIGATING
    events = timeline(db_url, incidents[0].id)
    assert any("not sent: one went out within the 300 s cooldown" in t for _, t in events)


async def test_failed_delivery_is_retried_and_recorded(db_url: str) -> None:
    svc, dead = service_name(), service_name()
    with Receiver(fail_first=2) as flaky, Receiver(fail_first=-1) as broken:
        cfg = config([flaky.url()], notify={"retries": 3})
        responder = build_responder(cfg, db_url=db_url, directory=Directory(), backoff_s=0.05)
        cfg_dead = config([broken.url()], notify={"retries": 2})
        dead_responder = build_responder(
            cfg_dead, db_url=db_url, directory=Directory(), backoff_s=0.05
        )
        try:
            await step(responder, [fire(alert(svc, T0), T0)], [], T0)
            await step(dead_responder, [fire(alert(dead, T0), T0)], [], T0)
        finally:
            await responder.aclose()
            await dead_responder.aclose()
    assert flaky.attempts == 3 and len(flaky.received) == 1
    ok_events = timeline(db_url, watch_incidents(db_url, svc)[0].id)
    assert any(
        "fire notification sent to 1 target(s) (json) after 3 attempt(s)" in t for _, t in ok_events
    )
    assert broken.attempts == 3 and not broken.received
    bad_events = timeline(db_url, watch_incidents(db_url, dead)[0].id)
    assert any("fire notification FAILED after 3 attempt(s)" in t for _, t in bad_events)
    assert all(str(broken.port) not in t for _, t in bad_events)  # the URL is not on the timeline


async def test_restart_neither_reopens_nor_renotifies(db_url: str) -> None:
    svc = service_name()
    with Receiver() as hook:
        cfg = config([hook.url()])
        a = alert(svc, T0)
        first = build_responder(cfg, db_url=db_url, directory=Directory())
        try:
            await step(first, [fire(a, T0)], [a], T0)
        finally:
            await first.aclose()
        again = build_responder(cfg, db_url=db_url, directory=Directory())
        try:  # a restarted engine reports the alert as first seen again, after the cooldown
            t1 = T0 + timedelta(minutes=10)
            await step(again, [fire(a, t1)], [a], t1)
            await step(again, [], [a], t1 + timedelta(seconds=10))
        finally:
            await again.aclose()
    assert len(watch_incidents(db_url, svc)) == 1
    assert len(hook.received) == 1


async def test_two_processes_on_one_database_open_one_incident(db_url: str) -> None:
    svc = service_name()
    with Receiver() as hook:
        cfg = config(
            [hook.url()],
            runbooks={"P1": [{"level": 1, "actions": [{"webhook": hook.http("/act")}]}]},
        )
        one = build_responder(cfg, db_url=db_url, directory=Directory())
        two = build_responder(cfg, db_url=db_url, directory=Directory())
        try:
            a = alert(svc, T0)
            await asyncio.gather(
                one.handle([fire(a, T0)], [a], T0), two.handle([fire(a, T0)], [a], T0)
            )
            await asyncio.wait_for(asyncio.gather(one.drain(), two.drain()), DRAIN_S)
        finally:
            await one.aclose()
            await two.aclose()
    assert len(watch_incidents(db_url, svc)) == 1
    paths = sorted(r["path"] for r in hook.received)
    assert paths == ["/act", "/hook"]  # level 1 ran once, one fire notification


async def test_silenced_alert_is_listed_but_neither_notifies_nor_acts(db_url: str) -> None:
    svc = service_name()
    with Receiver() as hook:
        cfg = config(
            [hook.url()],
            runbooks={"P1": [{"level": 1, "actions": [{"webhook": hook.http("/act")}]}]},
        )
        db = open_database(db_url)
        silence = add_silence(
            db, rule="latency_p95", matchers={"service": svc}, duration=timedelta(hours=2),
            reason="planned migration", now=T0 - timedelta(minutes=1),
        )  # fmt: skip
        responder = build_responder(cfg, db_url=db_url, directory=Directory())
        try:
            a = alert(svc, T0)
            await step(responder, [fire(a, T0)], [a], T0)
            await step(responder, [], [a], T0 + timedelta(seconds=10))
            listed = [r for r in list_alerts(db, state="firing") if r.service == svc]
            assert len(listed) == 1 and listed[0].silenced_by == silence.id
            assert not hook.received and not watch_incidents(db_url, svc)
            end_silence(db, silence.id, now=T0 + timedelta(seconds=15))
            await step(responder, [], [a], T0 + timedelta(seconds=20))
        finally:
            await responder.aclose()
            db.close()
    assert (
        len(watch_incidents(db_url, svc)) == 1
    )  # the silence ended: the still-firing alert opens it
    assert sorted(r["path"] for r in hook.received) == ["/act", "/hook"]


async def test_command_action_is_time_bounded_and_its_output_recorded(db_url: str) -> None:
    svc = service_name()
    runbooks = {
        "P2": [
            {
                "level": 1,
                "actions": [
                    {"command": ["sh", "-c", "echo scaled {service}; exit 3"]},
                    {"command": ["sleep", "30"], "timeout": "300ms"},
                ],
            }
        ]
    }
    responder = build_responder(config([], runbooks=runbooks), db_url=db_url, directory=Directory())
    try:
        a = alert(svc, T0, severity=Severity.P2)
        await step(responder, [fire(a, T0)], [a], T0)
    finally:
        await responder.aclose()
    db = open_database(db_url)
    try:
        incident = watch_incidents(db_url, svc)[0]
        actions = store.list_events(db, incident.id, kinds=["action"])
    finally:
        db.close()
    assert len(actions) == 2
    assert "command sh exited with code 3" in actions[0].text and "FAILED" in actions[0].text
    assert actions[0].details["output_tail"].strip() == f"scaled {svc}"
    assert "killed after 0.3 s" in actions[1].text
    assert actions[1].details["duration_ms"] < 5000


async def test_a_new_incident_gets_a_triage_of_its_probe_url(db_url: str) -> None:
    svc = service_name()
    with guard_servers({"token": "t"}) as (server,):
        cfg = config([], incidents={"triage": True})
        directory = Directory(probes={svc: f"{server.url}/ok"})
        responder = build_responder(cfg, db_url=db_url, directory=directory, triage_budget_s=3.0)
        try:
            a = alert(svc, T0)
            await step(responder, [fire(a, T0)], [a], T0)
        finally:
            await responder.aclose()
    events = timeline(db_url, watch_incidents(db_url, svc)[0].id)
    triage = [t for k, t in events if k == "triage"]
    assert len(triage) == 1 and triage[0].startswith("watch triage: ")


def test_an_unset_env_url_is_one_sentence_at_start(db_url: str, monkeypatch: Any) -> None:
    monkeypatch.delenv("CRISISCTL_TEST_UNSET_HOOK", raising=False)
    with pytest.raises(ValueError, match=r"env:CRISISCTL_TEST_UNSET_HOOK names an unset variable"):
        build_responder(
            config(["env:CRISISCTL_TEST_UNSET_HOOK"]), db_url=db_url, directory=Directory()
        )


async def test_guard_mode_reaches_pinned_names_and_a_raise_runs_the_new_runbook(
    db_url: str,
) -> None:
    svc = service_name()
    runbooks = {
        "P2": [{"level": 1, "actions": []}],
        "P1": [{"level": 1, "actions": [{"guard_mode": "emergency", "reason": "watch: {rule}"}]}],
    }
    with Receiver() as hook, guard_servers({"token": "t"}) as (server,):
        name = f"{svc}.guard.test"
        guard = GuardEndpoint(
            url=f"http://{name}:{server.port}",
            token="t",
            resolve=(f"{name}:{server.port}:127.0.0.1",),
        )
        directory = Directory({svc: [guard]})
        responder = build_responder(
            config([hook.url()], runbooks=runbooks), db_url=db_url, directory=directory
        )
        try:
            low = alert(svc, T0, severity=Severity.P2)
            await step(responder, [fire(low, T0)], [low], T0)
            assert guard_mode(server.url) == "normal"
            t1 = T0 + timedelta(seconds=10)
            high = alert(svc, t1, severity=Severity.P1)  # same rule and labels: a raise
            await step(responder, [fire(high, t1)], [high], t1)
            assert guard_mode(server.url) == "emergency"
        finally:
            await responder.aclose()
    incident = watch_incidents(db_url, svc)[0]
    assert incident.severity is Severity.P1
    events = timeline(db_url, incident.id)
    assert any(k == "severity_change" and "P2 → P1" in t for k, t in events)
    assert [t.split(":")[0] for t in hook.titles()] == ["FIRING", "ESCALATED"]


async def test_a_person_mitigating_stops_the_escalation(db_url: str) -> None:
    svc = service_name()
    runbooks = {"P1": [{"level": 1, "escalate_after": "1m"}, {"level": 2}]}
    responder = build_responder(config([], runbooks=runbooks), db_url=db_url, directory=Directory())
    try:
        a = alert(svc, T0)
        await step(responder, [fire(a, T0)], [a], T0)
        incident = watch_incidents(db_url, svc)[0]
        db = open_database(db_url)
        try:  # the alert still fires, but someone says the damage is contained
            store.set_status(db, incident.id, Status.MITIGATED, at=T0 + timedelta(seconds=30))
        finally:
            db.close()
        await step(responder, [], [a], T0 + timedelta(minutes=5))
    finally:
        await responder.aclose()
    incident = watch_incidents(db_url, svc)[0]
    assert incident.escalation_level == 1 and incident.status is Status.MITIGATED


def test_two_real_processes_open_one_incident_and_act_once(db_url: str) -> None:
    svc = service_name()
    worker = Path(__file__).with_name("watch_respond_worker.py")
    with Receiver() as hook:
        start = time.time() + 2.0
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(worker),
                    db_url,
                    svc,
                    f"http://127.0.0.1:{hook.port}",
                    str(start),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    assert len(watch_incidents(db_url, svc)) == 1
    assert sorted(r["path"] for r in hook.received) == ["/act", "/hook"]
