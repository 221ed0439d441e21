"""`crisisctl serve` with an ``intake:`` in its watch file serves the Alertmanager intake too.

A real serve process on loopback (no guard: the watched target is down, which is fine here):
Alertmanager's webhook with the intake's bearer opens one incident, a repeat books nothing,
the firing alert is listed by ``/api/alerts`` beside the watch's own and is published on the
event stream; the serve operator's token is not the intake's credential (nor is no credential).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from guard_servers import free_port
from serve_support import OPERATOR_TOKEN, ServeProcess, bearer
from test_watch_intake import TOKEN, notification

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database

INTAKE = "/api/v1/alertmanager"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    watch = f"""\
interval: 1s
services:
  checkout:
    guards: ["http://127.0.0.1:{free_port()}"]
incidents: {{triage: false}}
intake: {{bearer: env:SERVE_TEST_INTAKE}}
"""
    process = ServeProcess(
        tmp_path_factory.mktemp("serve-intake"), watch, env={"SERVE_TEST_INTAKE": TOKEN}
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _incidents(serve: ServeProcess) -> list[store.IncidentRecord]:
    db = open_database(serve.db_url)
    try:
        return store.list_incidents(db, service="checkout")
    finally:
        db.close()


def test_an_alertmanager_alert_opens_one_incident_and_is_listed(serve: ServeProcess) -> None:
    with httpx.Client(base_url=serve.url, trust_env=False, timeout=10.0) as client:
        body = notification(fingerprint="5e77e0000000a001")
        assert client.post(INTAKE, json=body).status_code == 401
        assert client.post(INTAKE, json=body, headers=bearer(OPERATOR_TOKEN)).status_code == 401
        first = client.post(INTAKE, json=body, headers=bearer(TOKEN))
        assert first.status_code == 200
        assert first.json() == {"received": 1, "booked": 1, "truncated": 0}
        again = client.post(INTAKE, json={**body, "groupKey": "other"}, headers=bearer(TOKEN))
        assert again.status_code == 200 and again.json()["booked"] == 0
        incidents = _incidents(serve)
        assert len(incidents) == 1 and incidents[0].severity.name == "P1"

        alerts = client.get("/api/alerts", headers=bearer(OPERATOR_TOKEN)).json()
        mine = [a for a in alerts if a["source"] == "alertmanager"]
        assert [a["rule"] for a in mine] == ["CheckoutSlow"]
        assert mine[0]["service"] == "checkout" and mine[0]["state"] == "firing"
        assert mine[0]["evidence"]["generator_url"].startswith("http://127.0.0.1:9090/")

        last = client.get("/api/events/poll", headers=bearer(OPERATOR_TOKEN)).json()
        since = {"last_event_id": last["last_event_id"].split("-")[0] + "-0"}  # from the start
        deadline = time.monotonic() + 10.0
        while True:  # the booking is published: an alert event and the incident
            polled = client.get(
                "/api/events/poll", params=since, headers=bearer(OPERATOR_TOKEN)
            ).json()
            kinds = {(e["type"], e["data"].get("source")) for e in polled["events"]}
            if ("alert", "alertmanager") in kinds and any(k == "incident" for k, _ in kinds):
                break
            assert time.monotonic() < deadline, polled
            time.sleep(0.2)

        resolved = notification("resolved", fingerprint="5e77e0000000a001")
        assert client.post(INTAKE, json=resolved, headers=bearer(TOKEN)).status_code == 200
        alerts = client.get("/api/alerts", headers=bearer(OPERATOR_TOKEN)).json()
        assert not [a for a in alerts if a["source"] == "alertmanager"]


def test_an_intake_without_a_credential_on_a_public_listener_is_refused(tmp_path: Path) -> None:
    process = ServeProcess(
        tmp_path,
        "interval: 1s\nservices:\n  x:\n    guards: ['http://127.0.0.1:9']\nintake: {}\n",
    )
    with pytest.raises(RuntimeError, match="has no credential"):
        process.start()
