"""Issue 17 end to end with real processes on loopback: a guarded app → Prometheus scraping it
with the rules `crisisctl rules generate` wrote → Alertmanager → `crisisctl watch --listen`
(the intake) → exactly one incident; and `watch` with ``source: prometheus`` reaching the same
verdict as the scraping watch.

One test walks the whole story (each step needs the previous one's state), every wait bounded:
the store fails first (the intake answers 503, Alertmanager retries), recovers (one incident,
the generator URL on its timeline), every query of the generated Grafana dashboard returns data
from the live Prometheus, Alertmanager's repeats change nothing, the app recovers and the
resolved notification resolves the alert and then the incident. Prometheus and Alertmanager run
the generated configurations (prometheus-scrape.yml, alertmanager.yml), changed only for the
test's ports and faster group timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from guard_servers import GuardServer, free_port, guard_servers
from prom_stack import Process, alertmanager, prometheus

from crisisctl.incidents import store
from crisisctl.incidents.alerts import list_alerts
from crisisctl.incidents.db import open_database
from crisisctl.incidents.lifecycle import Status
from crisisctl.watch.grafana import concrete_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "crisisctl.cli.main"]
TOKEN = "am-intake-e2e-token"
FAST_S, SLOW_S = 0.002, 0.3
T = TypeVar("T")

RULES = """\
rules:
  - name: shop_latency
    kind: burn_rate
    objective: 0.9
    latency_below: 100ms
    min_events: 5
    windows: [{long: 20s, short: 5s, factor: 2, severity: P1}]
"""


#: seconds each wait took (printed with -s: docs/watch.md's figures)
TIMES: dict[str, float] = {}


def wait(what: str, check: Callable[[], T | None], timeout: float, proc: Any = None) -> T:
    started = time.monotonic()
    deadline = started + timeout
    while True:
        value = check()
        if value:
            TIMES[what] = time.monotonic() - started
            return value
        if time.monotonic() > deadline:
            extra = f"\n{proc.output()}" if proc is not None else ""
            raise AssertionError(f"{what}: not within {timeout:g} s{extra}")
        time.sleep(0.2)


class Traffic:
    """Four threads calling the app; `delay` is how long each request takes (the app's speed)."""

    def __init__(self, server: GuardServer) -> None:
        self.url = f"{server.url}/slow"
        self.delay = FAST_S
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.url, params={"s": self.delay})
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


class Watcher:
    """`crisisctl watch FILE --listen` in a subprocess."""

    def __init__(self, path: Path, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.log = (path.parent / "watch.log").open("w+b")
        self.proc = subprocess.Popen(
            [*CLI, "watch", str(path), "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        with contextlib.suppress(httpx.TransportError):
            url = f"http://127.0.0.1:{self.port}/healthz"
            return httpx.get(url, trust_env=False, timeout=1).status_code == 200
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def env_for(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CRISISCTL_DB"}
    env.update(PYTHONPATH=str(ROOT / "src"), AM_INTAKE_TOKEN=TOKEN, E2E_DB=db_url)
    return env


def watch_once(path: Path, env: dict[str, str]) -> set[str]:
    """The rules `watch FILE --once` finds firing (two looks 2.5 s apart)."""
    done = subprocess.run(
        [*CLI, "watch", str(path), "--once", "--json", "--gap", "2.5"],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr.decode()
    return {row["rule"] for row in json.loads(done.stdout)["firing"]}


def rename_intake_table(db_path: Path, *, broken: bool) -> None:
    """Make the intake's store fail (or heal it) from outside the watch process."""
    old, new = (
        ("intake_alerts", "intake_alerts_off") if broken else ("intake_alerts_off", "intake_alerts")
    )
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as connection:
        connection.execute(f"ALTER TABLE {old} RENAME TO {new}")
        connection.commit()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url

    def read(self) -> tuple[list[store.IncidentRecord], list[Any], list[Any]]:
        db = open_database(self.url)
        try:
            incidents = store.list_incidents(db, service="shop")
            events = [e for i in incidents for e in store.list_events(db, i.id)]
            return incidents, events, [a for a in list_alerts(db) if a.service == "shop"]
        finally:
            db.close()

    def intake_rows(self) -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as conn:
            return list(conn.execute("SELECT status, dedup_key FROM intake_alerts"))


def make_an_error_and_a_shed_request(app: GuardServer) -> None:
    with httpx.Client(trust_env=False, timeout=10) as client:
        client.post(f"{app.url}/toggle", params={"fail": "1"})
        assert client.get(f"{app.url}/flaky").status_code == 500
        client.post(f"{app.url}/toggle", params={"fail": "0"})
        assert client.get(f"{app.url}/slow", params={"s": 3}).status_code >= 500  # timeout_s 1


def webhook_calls(am: Process, metric: str) -> float:
    return am.metric(metric, integration="webhook")


@contextlib.contextmanager
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Guarded app, generated rules, Prometheus, Alertmanager and the intake, all started."""
    intake_port = free_port()
    db_path = tmp_path / "incidents.db"
    db_url = f"sqlite:///{db_path}"
    env = env_for(db_url)
    with guard_servers({"timeout_s": 1.0}) as (app,):
        scrape = tmp_path / "scrape.yaml"
        scrape.write_text(
            f"interval: 1s\nstate_dir: {tmp_path / 'scrape-state'}\n"
            f'services:\n  shop:\n    guards: ["{app.url}"]\n' + RULES
        )
        token_file = tmp_path / "intake.token"
        token_file.write_text(TOKEN + "\n")
        gen = tmp_path / "gen"
        generated = subprocess.run(
            [*CLI, "rules", "generate", str(scrape), "--out", str(gen),
             "--intake", f"http://127.0.0.1:{intake_port}",
             "--intake-credentials-file", str(token_file)],
            env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert generated.returncode == 0, generated.stderr.decode()
        am_port = free_port()
        # the generated configurations, as generated, but for the test's ports and timings
        prom_doc = yaml.safe_load((gen / "prometheus-scrape.yml").read_text())
        prom_doc["rule_files"] = [str(gen / name) for name in prom_doc["rule_files"]]
        for rule_file in prom_doc["rule_files"]:
            # the SLO budget group is evaluated every 5 minutes: every second here, like the rest
            rules_doc = yaml.safe_load(Path(rule_file).read_text())
            for group in rules_doc["groups"]:
                if "interval" in group:
                    group["interval"] = "1s"
            Path(rule_file).write_text(yaml.safe_dump(rules_doc, sort_keys=False))
        prom_doc["alerting"]["alertmanagers"] = [
            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
        ]
        am_doc = yaml.safe_load((gen / "alertmanager.yml").read_text())
        am_doc["route"].update(group_wait="1s", group_interval="2s", repeat_interval="3s")
        prom_config, am_config = yaml.safe_dump(prom_doc), yaml.safe_dump(am_doc)
        intake_file = tmp_path / "intake.yaml"
        intake_file.write_text(
            f"interval: 1s\nstate_dir: {tmp_path / 'intake-state'}\ndb: env:E2E_DB\n"
            "intake: {bearer: env:AM_INTAKE_TOKEN}\n"
            "incidents: {open_at: P3, resolve_after: 1s, triage: false}\n"
        )
        source_file = tmp_path / "source.yaml"
        watcher = Watcher(intake_file, intake_port, env)
        try:
            with (
                alertmanager(am_config, tmp_path, am_port) as am,
                prometheus(prom_config, tmp_path) as prom,
                Traffic(app) as traffic,
            ):
                source_file.write_text(
                    f"interval: 1s\nstate_dir: {tmp_path / 'source-state'}\n"
                    f"source: {{prometheus: '{prom.url}'}}\n" + RULES
                )
                wait("the intake answers /healthz", watcher.ready, 20, watcher)
                yield {
                    "app": app, "prom": prom, "am": am, "traffic": traffic, "watcher": watcher,
                    "store": Store(db_url), "db_path": db_path, "env": env,
                    "scrape_file": scrape, "source_file": source_file, "gen": gen,
                }  # fmt: skip
        finally:
            watcher.close()


def test_a_generated_alert_goes_through_alertmanager_to_exactly_one_incident(
    tmp_path: Path,
) -> None:
    with stack(tmp_path) as s:
        prom, am, traffic, watcher, db = s["prom"], s["am"], s["traffic"], s["watcher"], s["store"]
        wait(
            "Prometheus scrapes the guard", lambda: prom.query('up{service="shop"} == 1'), 15, prom
        )

        # the store fails before the alert fires: the intake answers 503, Alertmanager retries
        rename_intake_table(s["db_path"], broken=True)
        traffic.delay = SLOW_S
        wait(
            "Prometheus fires the generated alert",
            lambda: prom.query('ALERTS{alertname="shop_latency",alertstate="firing"}'),
            30,
            prom,
        )
        failed = "alertmanager_notification_requests_failed_total"  # each refused request
        wait("the intake refuses while its store fails", lambda: webhook_calls(am, failed), 20, am)
        assert db.read()[0] == []

        # same verdict from Prometheus as source as from scraping (while the app is slow)
        assert watch_once(s["source_file"], s["env"]) == {"shop_latency"}
        assert watch_once(s["scrape_file"], s["env"]) == {"shop_latency"}

        rename_intake_table(s["db_path"], broken=False)
        incidents = wait("one incident after the retry", lambda: db.read()[0], 20, watcher)
        sent = webhook_calls(am, "alertmanager_notifications_total")

        # the generated Grafana dashboard: every panel's query returns data from this Prometheus
        # (a 5xx and a shed request first, so the error-ratio and shed panels have some)
        make_an_error_and_a_shed_request(s["app"])
        queries = concrete_queries(json.loads((s["gen"] / "grafana-dashboard.json").read_text()))
        assert len({panel for panel, _q in queries}) >= 9
        empty: list[str] = []

        def every_query_has_data() -> bool:
            empty[:] = [f"{panel}: {promql}" for panel, promql in queries if not prom.query(promql)]
            return not empty

        try:
            wait("every dashboard query returns data", every_query_has_data, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still empty: {empty}\n{prom.output()}") from None
        wait(
            "Alertmanager repeats the notification",
            lambda: webhook_calls(am, "alertmanager_notifications_total") >= sent + 2,
            20,
            am,
        )
        incidents, events, alerts = db.read()
        assert len(incidents) == 1 and incidents[0].severity.name == "P1"
        firing = [e for e in events if e.kind == "alert" and "firing" in e.text]
        assert len(firing) == len(db.intake_rows()) >= 1  # one booking per stored notification
        assert firing[0].details["evidence"]["generator_url"].startswith(prom.url)
        assert f"— {prom.url}/graph?g0.expr=" in firing[0].text  # visible on the timeline
        assert [a.state for a in alerts] == ["firing"]
        assert webhook_calls(am, "alertmanager_notifications_total") > len(db.intake_rows())

        # the app recovers: the resolved notification resolves the alert, then the incident
        traffic.delay = FAST_S
        wait(
            "the incident resolves after the resolved notification",
            lambda: db.read()[0][0].status is Status.RESOLVED,
            40,
            watcher,
        )
        incidents, events, alerts = db.read()
        assert len(incidents) == 1
        assert {a.state for a in alerts} == {"resolved"}
        assert any(e.text == "alert shop_latency resolved" for e in events)
        assert watch_once(s["source_file"], s["env"]) == set()
        assert watch_once(s["scrape_file"], s["env"]) == set()
    print("\n".join(f"{seconds:6.2f} s  {what}" for what, seconds in TIMES.items()))
