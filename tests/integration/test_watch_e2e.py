"""`crisisctl watch FILE` end to end: a real watch process, two guarded uvicorn apps, a
PostgreSQL incident store and an apprise receiver, all on loopback, every interval 1 s.

The test breaks the service (errors on /flaky under steady traffic), and watch must: see it
within two intervals, open ONE incident, switch both guards to emergency (their status says
so), notify once, survive a kill -9 and a restart without a second incident or notification,
escalate when nobody mitigates, keep a relapse within the cooldown silent, and resolve when the
errors stop. A second test drives a guard's RSS up (memory held by the app) under a leak rule.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from guard_servers import GuardServer, guard_servers
from test_incident_support import throwaway_pg_database
from watch_support import Receiver

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "crisisctl.cli.main", "watch"]
TOKEN = "e2e-s3cret-token"
INTERVAL = 1.0
T = TypeVar("T")


def _env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CRISISCTL_DB"}
    env.update(PYTHONPATH=str(ROOT / "src"), COLUMNS="200", WATCH_E2E_DB=db_url)
    env["WATCH_E2E_TOKEN"] = TOKEN
    return env


def _wait(what: str, check: Callable[[], T | None], timeout: float) -> tuple[T, float]:
    """Poll `check` until it returns a value; (value, seconds it took)."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)


class Traffic:
    """Steady GET /flaky on every server (a thread) so the error ratio follows the app."""

    def __init__(self, servers: list[GuardServer]) -> None:
        self.servers = servers
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while not self.stop.is_set():
                for server in self.servers:
                    with contextlib.suppress(httpx.HTTPError):
                        client.get(f"{server.url}/flaky")
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _fail(servers: list[GuardServer], on: bool) -> None:
    for server in servers:
        httpx.post(f"{server.url}/toggle", params={"fail": "1" if on else "0"}, trust_env=False)


def _mode(server: GuardServer) -> str:
    data = httpx.get(f"{server.url}/_crisis/status", trust_env=False, timeout=5.0).json()
    return str(data["mode"]["mode"])


class Incidents:
    """Reads the watch's incident store."""

    def __init__(self, url: str) -> None:
        self.url = url

    def all(self) -> list[store.IncidentRecord]:
        db = open_database(self.url)
        try:
            return store.list_incidents(db, service="api")
        finally:
            db.close()

    def events(self, incident_id: int) -> list[tuple[str, str]]:
        db = open_database(self.url)
        try:
            return [(e.kind, e.text) for e in store.list_events(db, incident_id)]
        finally:
            db.close()


@contextlib.contextmanager
def _watch(path: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen([*CLI, str(path)], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)


def _file(tmp_path: Path, servers: list[GuardServer], hook: Receiver, rules: str) -> Path:
    guards = ", ".join(f'"{s.url}"' for s in servers)
    path = tmp_path / "watch.yaml"
    path.write_text(
        f"""\
interval: 1s
state_dir: {tmp_path / "state"}
db: env:WATCH_E2E_DB
services:
  api:
    guards: [{guards}]
    token: env:WATCH_E2E_TOKEN
rules:
{rules}
incidents: {{open_at: P3, resolve_after: 4s, triage: false, on_resolve: [{{guard_mode: normal}}]}}
notify: {{urls: ["{hook.url("/hook")}"], cooldown: 1h, retries: 1}}
runbooks:
  P1:
    - {{level: 1, actions: [{{guard_mode: emergency, reason: "watch: {{rule}}"}}],
        escalate_after: 4s}}
    - {{level: 2, notify: ["{hook.url("/oncall")}"]}}
  P2:
    - {{level: 1, actions: [{{guard_mode: emergency, reason: "watch: {{rule}}"}}]}}
"""
    )
    return path


ERRORS_RULE = """\
  - {name: errors, kind: threshold, metric: guard_errors_total, ratio_to: guard_requests_total,
     window: 2s, above: 0.05, severity: P1}
"""


@pytest.fixture
def db_url() -> Iterator[str]:
    with throwaway_pg_database() as url:
        yield url


def test_watch_detects_opens_one_incident_acts_escalates_and_resolves(
    tmp_path: Path, db_url: str
) -> None:
    incidents = Incidents(db_url)
    log = tmp_path / "watch.log"
    env = _env(db_url)
    timings: dict[str, float] = {}
    with (
        Receiver() as hook,
        guard_servers({"token": TOKEN}, {"token": TOKEN}) as servers,
        Traffic(servers),
    ):
        path = _file(tmp_path, servers, hook, ERRORS_RULE)
        with _watch(path, env, log) as proc:
            time.sleep(3 * INTERVAL)  # healthy cycles: nothing opens
            assert proc.poll() is None, log.read_text()
            assert incidents.all() == [] and hook.received == []

            _fail(servers, True)
            broke = time.monotonic()
            (incident,), timings["open"] = _wait("an incident", incidents.all, 10)
            assert incident.severity.name == "P1"
            _, timings["emergency"] = _wait(
                "both guards in emergency",
                lambda: all(_mode(s) == "emergency" for s in servers),
                10,
            )
            _, timings["notified"] = _wait("the FIRING notification", lambda: hook.received, 10)
            assert [r["path"] for r in hook.received] == ["/hook"]
            assert hook.titles()[0].startswith("FIRING:")
            proc.kill()  # no chance to save anything on the way out

        with _watch(path, env, log) as proc:  # restarted while the errors go on
            time.sleep(2.5 * INTERVAL)
            assert proc.poll() is None, log.read_text()
            assert [i.id for i in incidents.all()] == [incident.id]
            assert len(hook.received) == 1, hook.titles()  # no second FIRING

            _wait("the level-2 notification", lambda: len(hook.received) >= 3 or None, 15)
            timings["escalated"] = time.monotonic() - broke
            assert sorted(r["path"] for r in hook.received[1:]) == ["/hook", "/oncall"]
            assert all(t.startswith("ESCALATED to level 2") for t in hook.titles()[1:])

            _fail(servers, False)  # mitigated: the errors stop ...
            _wait(
                "the incident mitigated",
                lambda: incidents.all()[0].status.value == "mitigated" or None,
                10,
            )
            _fail(servers, True)  # ... relapse within the cooldown: no second FIRING
            _wait(
                "the relapse",
                lambda: incidents.all()[0].status.value == "investigating" or None,
                10,
            )
            _fail(servers, False)
            healed = time.monotonic()
            _wait(
                "the incident resolved",
                lambda: incidents.all()[0].status.value == "resolved" or None,
                20,
            )
            _wait("the RESOLVED notification", lambda: len(hook.received) >= 4 or None, 10)
            assert [_mode(s) for s in servers] == ["normal", "normal"]  # on_resolve
            timings["resolved"] = time.monotonic() - healed
            proc.send_signal(15)
            assert proc.wait(timeout=15) == 0
    titles = hook.titles()
    assert [t.split(":")[0] for t in titles] == [
        "FIRING",
        "ESCALATED to level 2",
        "ESCALATED to level 2",
        "RESOLVED",
    ], titles
    (only,) = incidents.all()
    events = incidents.events(only.id)
    text = "\n".join(f"{k}: {t}" for k, t in events)
    assert "guard mode → emergency on 2 of 2 instance(s)" in text, text
    assert "on_resolve action: guard mode → normal on 2 of 2 instance(s) (ok" in text, text
    assert "guard mode → normal" in str(hook.received[-1].get("message", ""))
    assert "cooldown" in text  # the relapse's FIRING was suppressed, and said so
    assert text.count("fires again") == 1, text  # the test's relapse; the restart made none
    assert TOKEN not in text and TOKEN not in log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
    print("e2e timings (s):", {k: round(v, 2) for k, v in timings.items()})
    assert timings["open"] <= 2 * INTERVAL + 1.5  # two intervals, plus the store's write


def test_start_up_problems_are_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "watch.yaml"
    path.write_text(
        "services:\n  api:\n    guards: [http://127.0.0.1:9]\n"
        "    headers: {X-Key: env:WATCH_E2E_UNSET}\n"
    )
    for args in ([], ["--once"]):
        proc = subprocess.run(
            [*CLI, str(path), *args], env=_env("unused"), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert "WATCH_E2E_UNSET" in proc.stderr and "Traceback" not in proc.stderr
    path.write_text("interval: 1s\ndb: env:WATCH_E2E_NOPE\nservices: {}\n")
    proc = subprocess.run(
        [*CLI, str(path)], env=_env("unused"), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "WATCH_E2E_NOPE" in proc.stderr and "Traceback" not in proc.stderr
    path.write_text("interval: 1s\ndb: postgresql://nobody@127.0.0.1:1/none\nservices: {}\n")
    proc = subprocess.run(
        [*CLI, str(path)], env=_env("unused"), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2 and "Traceback" not in proc.stderr


LEAK_RULE = """\
  - {name: leak, kind: leak, limit: 4e9, window: 30s, warmup: 0s, min_samples: 3, horizon: 10m,
     min_r2: 0.8, severity: P2, urgent: 1s}
"""
#: two intervals is when a trend has its three points (the last flat one and two rising ones:
#: watch/trend.py), plus 1 s because the guard samples its RSS at most once a second
#: (guard/process.py SAMPLE_EVERY_S: a scrape reads a value up to 1 s old), 1 s because with a
#: 1 s interval two scrapes can read the same guard sample (the two 1 s clocks alias), and
#: 1.5 s for the incident's write and our polling, as for the error test
LEAK_BOUND_S = 2 * INTERVAL + 1.0 + 1.0 + 1.5


def test_watch_sees_a_guard_leak_and_acts_on_it(tmp_path: Path, db_url: str) -> None:
    """RSS grows ~20 MiB/s (memory the app holds): limit 4 GB within the 10 min horizon."""
    incidents = Incidents(db_url)
    log = tmp_path / "watch.log"
    with Receiver() as hook, guard_servers({"token": TOKEN}) as servers:
        (server,) = servers
        path = _file(tmp_path, servers, hook, LEAK_RULE)
        with _watch(path, _env(db_url), log) as proc:
            time.sleep(6 * INTERVAL)  # a flat RSS: nothing fires
            assert proc.poll() is None, log.read_text()
            assert incidents.all() == []
            stop = threading.Event()

            def leak() -> None:
                with httpx.Client(trust_env=False, timeout=5.0) as client:
                    for _ in range(40):  # at most 400 MiB
                        if stop.is_set():
                            return
                        client.post(f"{server.url}/hog", params={"mb": "10"})
                        time.sleep(0.5)

            leaking = threading.Thread(target=leak, daemon=True)
            leaking.start()
            try:
                (incident,), took = _wait("a leak incident", incidents.all, 20)
                _wait("the guard in emergency", lambda: _mode(server) == "emergency", 10)
            finally:
                stop.set()
                leaking.join(timeout=10)
            httpx.post(f"{server.url}/hog", params={"free": "1"}, trust_env=False)
            _wait(
                "the leak alert resolved (RSS flat again)",
                lambda: incidents.all()[0].status.value == "mitigated" or None,
                20,
            )
            proc.send_signal(15)
            assert proc.wait(timeout=15) == 0
    assert incident.severity.name == "P2"
    events = "\n".join(t for _, t in incidents.events(incident.id))
    assert "guard_rss_bytes grows" in events and "limit" in events, events
    assert "Traceback" not in log.read_text(), log.read_text()
    print(f"leak: incident {took:.2f} s after the leak began (bound {LEAK_BOUND_S:g} s)")
    assert took <= LEAK_BOUND_S, took


SLOW_RULE = """\
  - {name: slow, kind: threshold, metric: guard_latency_p95_ms, above: 150, severity: P2}
"""


def test_watch_sees_latency_within_two_intervals(tmp_path: Path, db_url: str) -> None:
    """The app turns slow (300 ms answers): the guards' p95 crosses 150 ms, one incident."""
    incidents = Incidents(db_url)
    log = tmp_path / "watch.log"
    with (
        Receiver() as hook,
        guard_servers({"token": TOKEN}, {"token": TOKEN}) as servers,
        Traffic(servers),
    ):
        path = _file(tmp_path, servers, hook, SLOW_RULE)
        with _watch(path, _env(db_url), log) as proc:
            time.sleep(3 * INTERVAL)
            assert proc.poll() is None, log.read_text()
            assert incidents.all() == []
            stop = threading.Event()

            def slow(server: GuardServer) -> None:
                with httpx.Client(trust_env=False, timeout=5.0) as client:
                    while not stop.is_set():
                        client.get(f"{server.url}/slow", params={"s": "0.3"})

            workers = [threading.Thread(target=slow, args=(s,), daemon=True) for s in servers * 4]
            for worker in workers:
                worker.start()
            try:
                (incident,), took = _wait("a latency incident", incidents.all, 15)
                _wait(
                    "both guards in emergency",
                    lambda: all(_mode(s) == "emergency" for s in servers),
                    10,
                )
            finally:
                stop.set()
                for worker in workers:
                    worker.join(timeout=10)
            time.sleep(2 * INTERVAL)
            assert [i.id for i in incidents.all()] == [incident.id]  # one, whatever the scrapes
            proc.send_signal(15)
            assert proc.wait(timeout=15) == 0
    assert incident.severity.name == "P2"
    assert [t.split(":")[0] for t in hook.titles()] == ["FIRING"]
    print(f"latency: incident {took:.2f} s after the slow traffic began")
    # the slow answers need 0.3 s to count, then one interval to be scraped, one to be judged
    assert took <= 2 * INTERVAL + 0.3 + 1.5
