"""`crisisctl serve` against a real guarded app: one serve process (watch interval 0.5 s) and
one guarded uvicorn app under light traffic, both on loopback, started once for the module.

It must show the guard's real figures in /api/fleet, switch the real guard's mode from the
API and write who did it on the incident's timeline, refuse every change to a viewer and to a
session without its CSRF header, and resume an event stream across a restart.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from guard_servers import GuardServer, guard_servers
from serve_support import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    ServeProcess,
    bearer,
    read_events,
)

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database
from crisisctl.severity import Severity

GUARD_TOKEN = "serve-guard-control-token"
T = TypeVar("T")


def _wait(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)


class _Traffic:
    """Steady GET /ok on the guarded app (a thread), so the figures are not zero."""

    def __init__(self, server: GuardServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"{self.server.url}/ok")
                time.sleep(0.01)

    def __enter__(self) -> _Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def guard() -> Iterator[GuardServer]:
    with guard_servers({"token": GUARD_TOKEN}) as (server,), _Traffic(server):
        yield server


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, guard: GuardServer) -> Iterator[ServeProcess]:
    watch = f"""\
interval: 0.5s
services:
  api:
    guards: ["{guard.url}"]
    token: env:SERVE_TEST_GUARD_TOKEN
incidents: {{triage: false}}
"""
    extra = "events: {ping: 1s}\n"
    process = ServeProcess(
        tmp_path_factory.mktemp("serve"),
        watch,
        extra,
        env={"SERVE_TEST_GUARD_TOKEN": GUARD_TOKEN},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _client(serve: ServeProcess, token: str | None = OPERATOR_TOKEN) -> httpx.Client:
    headers = bearer(token) if token else {}
    return httpx.Client(base_url=serve.url, headers=headers, trust_env=False, timeout=10.0)


def _open_incident(serve: ServeProcess) -> int:
    db = open_database(serve.db_url)
    try:
        record = store.open_incident(
            db, title="api is slow", severity=Severity.P2, service="api", dedup_key=None
        )
        return record.id
    finally:
        db.close()


def _guard_mode(guard: GuardServer) -> str:
    answer = httpx.get(f"{guard.url}/_crisis/status", trust_env=False, timeout=5.0)
    return str(answer.json()["mode"]["mode"])


def test_the_fleet_shows_the_real_guards_figures(serve: ServeProcess) -> None:
    with _client(serve) as client:

        def ready() -> dict[str, Any] | None:
            fleet = client.get("/api/fleet").json()
            services = fleet["services"]
            if not services or not services[0]["rate_rps"] or services[0]["p95_ms"] is None:
                return None
            return dict(services[0])

        api = _wait("figures of the guarded app", ready, 15)
        series = _wait(
            "three points of history",
            lambda: (s := client.get("/api/services/api/series?window=600").json())["t"][2:] and s,
            10,
        )
    assert api["name"] == "api" and api["severity"] == "OK"
    (instance,) = api["instances"]
    assert instance["up"] is True and instance["mode"] == "normal"
    assert instance["url_redacted"].startswith("http://127.0.0.1:")
    assert instance["limit"] is not None and instance["limit"] > 0
    assert 10 < api["rate_rps"] < 500  # the traffic thread sends ≤ 100/s
    assert api["error_ratio"] == 0.0
    assert 0 < api["p50_ms"] <= api["p95_ms"] <= api["p99_ms"] < 1000
    assert api["rss_bytes"] > 10e6
    assert len(series["t"]) >= 3 and len(series["t"]) == len(series["rate_rps"])
    assert any(v is not None and v > 0 for v in series["rate_rps"])


def test_the_guard_token_never_appears_in_an_answer(serve: ServeProcess) -> None:
    with _client(serve) as client:
        texts = [client.get(p).text for p in ("/api/fleet", "/api/alerts", "/api/incidents")]
    assert all(GUARD_TOKEN not in text for text in texts)


def test_switching_a_service_to_emergency_changes_the_real_guard_and_the_timeline(
    serve: ServeProcess, guard: GuardServer
) -> None:
    incident_id = _open_incident(serve)
    try:
        with _client(serve) as client:
            answer = client.post(
                "/api/services/api/mode", json={"mode": "emergency", "reason": "drill"}
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert result["ok"] is True and result["incident_id"] == incident_id
            assert _guard_mode(guard) == "emergency"
            timeline = client.get(f"/api/incidents/{incident_id}").json()["timeline"]
            fleet_mode = _wait(
                "the fleet showing emergency",
                lambda: (
                    client.get("/api/fleet").json()["services"][0]["instances"][0]["mode"]
                    == "emergency"
                ),
                10,
            )
        assert fleet_mode
        (entry,) = [e for e in timeline if e["kind"] == "guard_mode"]
        assert entry["author"] == "alice" and entry["source"] == "serve"
        assert "emergency on 1 of 1 instance(s): drill" in entry["text"]
        assert GUARD_TOKEN not in str(timeline)
    finally:
        with _client(serve) as client:
            client.post("/api/services/api/mode", json={"mode": "normal"})
            client.post(f"/api/incidents/{incident_id}/resolve", json={})


CHANGES = [
    ("/api/services/api/mode", {"mode": "emergency", "reason": "x"}),
    ("/api/services/api/triage", None),
    ("/api/incidents/{id}/ack", None),
    ("/api/incidents/{id}/note", {"text": "x"}),
    ("/api/incidents/{id}/status", {"status": "investigating"}),
    ("/api/incidents/{id}/escalate", None),
    ("/api/incidents/{id}/resolve", None),
]


def test_a_viewer_and_a_session_without_csrf_can_change_nothing(
    serve: ServeProcess, guard: GuardServer
) -> None:
    incident_id = _open_incident(serve)
    with _client(serve, VIEWER_TOKEN) as viewer, _client(serve, None) as browser:
        assert viewer.get("/api/fleet").status_code == 200
        assert browser.get("/api/fleet").status_code == 401
        assert browser.post("/api/session", json={"token": OPERATOR_TOKEN}).status_code == 204
        csrf = browser.cookies["crisisctl_csrf"]
        for path, body in CHANGES:
            url = path.format(id=incident_id)
            refused = viewer.post(url, json=body)
            assert refused.status_code == 403, (url, refused.text)
            assert "viewer" in refused.json()["error"]
            no_csrf = browser.post(url, json=body)
            assert no_csrf.status_code == 403, (url, no_csrf.text)
            assert "CSRF" in no_csrf.json()["error"]
        assert viewer.get("/api/debug/connections").status_code == 403
        noted = browser.post(
            f"/api/incidents/{incident_id}/note",
            json={"text": "checked the dashboards"},
            headers={"X-CSRF-Token": csrf},
        )
        assert noted.status_code == 200, noted.text
        assert noted.json()["author"] == "alice"
    assert _guard_mode(guard) == "normal"
    db = open_database(serve.db_url)
    try:
        kinds = [e.kind for e in store.list_events(db, incident_id)]
        record = store.get_incident(db, incident_id)
    finally:
        db.close()
    assert kinds == ["opened", "note"] and record.status == "detected"


def test_an_incident_opened_by_the_cli_reaches_the_event_stream(serve: ServeProcess) -> None:
    with _client(serve) as client:
        head = client.get("/api/events/poll").json()["last_event_id"]
        incident_id = _open_incident(serve)  # the store, as `crisisctl incident open` writes it

        def published() -> list[dict[str, Any]] | None:
            answer = client.get("/api/events/poll", params={"last_event_id": head}).json()
            found = [
                e
                for e in answer["events"]
                if e["type"] == "incident" and e["data"]["id"] == incident_id
            ]
            return found or None

        (event,) = _wait("the incident event", published, 10)
    assert event["data"]["title"] == "api is slow" and event["data"]["status"] == "detected"


@pytest.mark.slow
def test_an_event_stream_resumes_after_a_restart_without_losing_an_event(
    serve: ServeProcess,
) -> None:
    headers = bearer(OPERATOR_TOKEN)
    first = [e for e in read_events(serve.url, headers, seconds=5, until=3) if e["type"] != ":"]
    assert [e["type"] for e in first][:1] == ["fleet"]
    last = first[-1]["id"]
    epoch, seq = last.split("-")
    stopped_in = serve.stop()
    assert serve.proc is not None and serve.proc.returncode == 0, serve.log()
    assert stopped_in < 5.0
    serve.start()
    resumed = read_events(serve.url, {**headers, "Last-Event-ID": last}, seconds=5, until=2)
    events = [e for e in resumed if e["type"] != ":"]
    assert events[0]["type"] != "reset"
    assert events[0]["id"] == f"{epoch}-{int(seq) + 1}"
    seqs = [int(e["id"].split("-")[1]) for e in events]
    assert seqs == list(range(int(seq) + 1, int(seq) + 1 + len(seqs)))
    stale = read_events(serve.url, {**headers, "Last-Event-ID": "1-1"}, seconds=5, until=1)
    assert next(e["type"] for e in stale if e["type"] != ":") == "reset"


@pytest.mark.slow
def test_serve_stops_within_three_seconds_with_streams_open(serve: ServeProcess) -> None:
    headers = bearer(OPERATOR_TOKEN)
    streams: list[threading.Thread] = []
    for _ in range(5):
        thread = threading.Thread(
            target=read_events, args=(serve.url, headers), kwargs={"seconds": 20}, daemon=True
        )
        thread.start()
        streams.append(thread)
    with _client(serve) as client:
        _wait(
            "five open streams",
            lambda: client.get("/api/debug/connections").json()["sse_connections"] >= 5,
            10,
        )
    # open streams would hold uvicorn's shutdown for ever: they end at the signal (~1 s in all
    # on this host; 3 s leaves room for a busy machine)
    assert serve.stop() < 3.0, serve.log()
    for thread in streams:
        thread.join(timeout=5)
        assert not thread.is_alive()
    serve.start()  # the module's other tests may still use it


LOAD_REPORT = {
    "report": "load",
    "url": "http://127.0.0.1:1/",
    "model": "open",
    "requests": 300,
    "requests_per_second": 100.0,
    "latency_ms": {"p50": 5.0, "p95": 9.0, "p99": 12.0},
    "per_second": [
        {"second": s, "requests": 100, "errors": 0, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 12.0}
        for s in range(3)
    ],
}


def test_changes_reach_the_event_stream_and_reports_are_served(serve: ServeProcess) -> None:
    incident_id = _open_incident(serve)
    db = open_database(serve.db_url)
    try:
        report = store.attach_report(db, incident_id, LOAD_REPORT, label="before")
    finally:
        db.close()
    with _client(serve) as client:
        head = client.get("/api/events/poll").json()
        assert head["events"] == []
        client.post(f"/api/incidents/{incident_id}/ack").raise_for_status()
        client.post(f"/api/incidents/{incident_id}/escalate", json={"reason": "slow"})
        polled = client.get("/api/events/poll", params={"last_event_id": head["last_event_id"]})
        detail = client.get(f"/api/incidents/{incident_id}").json()
        stored = client.get(f"/api/incidents/{incident_id}/reports/{report.id}").json()
        postmortem = client.get(f"/api/incidents/{incident_id}/postmortem")
        again = client.post(f"/api/incidents/{incident_id}/ack")
    timeline = [
        e["data"]["entry"]
        for e in polled.json()["events"]
        if e["type"] == "timeline" and e["data"]["incident_id"] == incident_id
    ]
    assert [(e["kind"], e["author"]) for e in timeline][-2:] == [
        ("status_change", "alice"),
        ("escalation", "alice"),
    ]
    assert any(e["type"] == "incident" for e in polled.json()["events"])
    assert detail["status"] == "investigating" and detail["escalation_level"] == 2
    assert detail["mttx"]["time_to_acknowledge_ms"] is not None
    assert detail["reports"] == [
        {"id": report.id, "kind": "load", "title": report.text, "at": detail["reports"][0]["at"]}
    ]
    assert stored["kind"] == "load" and len(stored["report"]["series"]) == 3
    assert postmortem.headers["content-type"].startswith("text/html")
    assert "api is slow" in postmortem.text
    assert again.status_code == 409 and "already acknowledged" in again.json()["error"]


def test_a_triage_from_the_api_gives_a_verdict_on_the_timeline(serve: ServeProcess) -> None:
    incident_id = _open_incident(serve)
    with _client(serve) as client:
        answer = client.post("/api/services/api/triage")
        assert answer.status_code == 200, answer.text
        verdict = answer.json()
        timeline = client.get(f"/api/incidents/{incident_id}").json()["timeline"]
        missing = client.post("/api/services/nope/triage")
    assert verdict["severity"] in ("OK", "P3", "P2", "P1", "P0")
    assert verdict["incident_id"] == incident_id
    (entry,) = [e for e in timeline if e["kind"] == "triage"]
    assert entry["author"] == "alice" and entry["text"].startswith("triage by alice:")
    assert missing.status_code == 404


def test_repeated_failed_sign_ins_are_refused_for_a_while(serve: ServeProcess) -> None:
    # (last in the module: it blocks sign-ins from 127.0.0.1 for a minute)
    with _client(serve, None) as browser:
        codes = [
            browser.post("/api/session", json={"token": f"wrong-{n}"}).status_code
            for n in range(10)
        ]
        blocked = browser.post("/api/session", json={"token": OPERATOR_TOKEN})
        bearer_still_works = browser.get("/api/fleet", headers=bearer(OPERATOR_TOKEN))
    assert codes == [401] * 10
    assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.json()["error"]
    assert bearer_still_works.status_code == 200
