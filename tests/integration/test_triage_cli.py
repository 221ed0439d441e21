"""`crisisctl triage` and `crisisctl baseline` end to end (Typer's CliRunner), on loopback.

Baselines and incidents are stored for real: a fresh SQLite file per test, and the machine's
PostgreSQL (CRISISCTL_TEST_DATABASE_URL) for the baseline round trip.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from triage_servers import raw_server, refused_port, sick_server
from typer.testing import CliRunner

from crisisctl.cli.main import app
from crisisctl.incidents.baselines import get_baseline, save_baseline
from crisisctl.incidents.db import open_database
from crisisctl.incidents.store import get_incident, list_events

runner = CliRunner()
PG_URL = os.environ.get("CRISISCTL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = (
    "severity",
    "degradation_factor",
    "available",
    "error_rate",
    "latency_ms",
    "samples",
    "reasons",
    "guard",
    "host",
    "recommendations",
    "duration_s",
)


@pytest.fixture(scope="module")
def sick() -> Iterator[str]:
    with sick_server() as url:
        yield url


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crisis.db'}"


def _json(args: list[str]) -> tuple[int, Any]:
    result = runner.invoke(app, args)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def test_json_contract_and_out_file(sick: str, tmp_path: Path) -> None:
    out = tmp_path / "triage.json"
    code, data = _json(
        [
            "triage",
            f"{sick}/x2",
            "--target-ms",
            "100",
            "--samples",
            "8",
            "--json",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for key in REQUIRED:
        assert key in data
    assert data["report"] == "triage" and data["url"] == f"{sick}/x2"
    assert str(data["started_at"]).endswith("Z") and data["crisisctl_version"]
    assert data["severity"] == "P2"
    assert set(data["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert all(k == k.lower() and " " not in k for k in data)
    assert json.loads(out.read_text()) == data


def test_human_panel(sick: str) -> None:
    result = runner.invoke(app, ["triage", f"{sick}/x5", "--target-ms", "100", "--samples", "4"])
    assert result.exit_code == 0, result.output
    for needle in ("P1 major performance crisis", "next steps", "GET /x5", "why"):
        assert needle in result.stdout


def test_fail_on(sick: str) -> None:
    args = ["triage", f"{sick}/err60", "--target-ms", "100", "--samples", "20", "--json"]
    assert runner.invoke(app, [*args, "--fail-on", "P1"]).exit_code == 1
    assert runner.invoke(app, [*args, "--fail-on", "p0"]).exit_code == 1
    ok = ["triage", f"{sick}/ok", "--target-ms", "1000", "--samples", "4", "--json"]
    assert runner.invoke(app, [*ok, "--fail-on", "P3"]).exit_code == 0


def test_unreachable_exits_3_only_with_fail_on() -> None:
    url = f"http://127.0.0.1:{refused_port()}/"
    assert runner.invoke(app, ["triage", url, "--json", "--budget", "2s"]).exit_code == 0
    result = runner.invoke(app, ["triage", url, "--json", "--budget", "2s", "--fail-on", "P0"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["severity"] == "P0"


def test_budget_holds_for_the_whole_command() -> None:
    with raw_server("hang") as url:
        started = time.monotonic()
        code, data = _json(["triage", url, "--budget", "3s", "--json"])
        wall = time.monotonic() - started
    assert code == 0 and data["severity"] == "P0"
    assert wall < 3.0 + 1.5, f"the command took {wall:.2f} s for a 3 s budget"


@pytest.mark.parametrize(
    "args",
    [
        ["ftp://127.0.0.1/"],
        ["http://127.0.0.1:1/", "--fail-on", "P9"],
        ["http://127.0.0.1:1/", "--budget", "soon"],
        ["http://127.0.0.1:1/", "--samples", "1000"],
        ["http://127.0.0.1:1/", "--body", "{"],
        ["http://127.0.0.1:1/", "--baseline", "x", "--target-ms", "5"],
    ],
)
def test_bad_input_exits_2_with_one_sentence(args: list[str], db_url: str) -> None:
    result = runner.invoke(app, ["triage", *args, "--db", db_url])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("error:") == 1


def test_baseline_lifecycle_on_sqlite(sick: str, db_url: str) -> None:
    save = [
        "baseline",
        "save",
        "api",
        sick,
        "--path",
        "/ok",
        "--path",
        "/x2",
        "--samples",
        "6",
        "--rounds",
        "2",
        "--every",
        "0s",
        "--db",
        db_url,
        "--json",
    ]
    code, saved = _json(save)
    assert code == 0 and saved["expired"] is False
    ops = saved["operations"]
    assert set(ops) == {"GET /ok", "GET /x2"}
    # every round's latencies are kept: triage takes the baseline's spread from them
    assert saved["profile"]["rounds"] == 2 and saved["rounds"] == 2
    assert [len(r) for r in saved["profile"]["operations"]["GET /ok"]["rounds_ms"]] == [6, 6]
    code, listed = _json(["baseline", "list", "--db", db_url, "--json"])
    assert [b["name"] for b in listed] == ["api"]
    code, shown = _json(["baseline", "show", "api", "--db", db_url, "--json"])
    assert shown["profile"]["resources"]["process_threads"] >= 1

    # triage against it: the baseline's operations are used when no --path is given
    code, report = _json(
        ["triage", sick, "--baseline", "api", "--samples", "6", "--db", db_url, "--json"]
    )
    assert code == 0
    ref = report["reference"]
    assert ref["kind"] == "baseline" and ref["expired"] is False
    assert set(ref["per_operation"]) == {"GET /ok", "GET /x2"}
    assert isinstance(report["degradation_factor"], float)
    assert {op["spread"] for op in ref["per_operation"].values()} == {"baseline"}
    interval = report["degradation_factor_interval"]
    assert interval["low"] <= report["degradation_factor"] <= interval["high"]
    assert interval["confidence"] == pytest.approx(0.995)  # 99 % shared by two operations

    assert runner.invoke(app, ["baseline", "delete", "api", "--db", db_url]).exit_code == 0
    gone = runner.invoke(app, ["baseline", "show", "api", "--db", db_url])
    assert gone.exit_code == 2 and "no baseline named 'api'" in gone.stderr


def test_slower_than_baseline_and_expired_warning(sick: str, db_url: str) -> None:
    db = open_database(db_url)
    profile = {"operations": {"GET /x5": {"method": "GET", "path": "/x5", "p95": 100.0}}}
    save_baseline(db, name="old", url=sick, profile=profile, valid_for=timedelta(milliseconds=1))
    code, report = _json(
        ["triage", f"{sick}/x5", "--baseline", "old", "--samples", "4", "--db", db_url, "--json"]
    )
    assert code == 0
    assert report["severity"] == "P1"  # 5× the baseline p95
    assert report["reference"]["expired"] is True
    assert any("expired" in w for w in report["warnings"])
    assert "baseline" in report["reasons"][0]["message"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_baseline_saved_without_samples_still_judges_with_the_runs_spread(
    sick: str, db_url: str, backend: str
) -> None:
    """Profiles stored before the rounds (version 1, no samples) load and fall back clearly."""
    url = db_url if backend == "sqlite" else PG_URL
    name = f"old-{uuid.uuid4().hex[:8]}"
    old = {"version": 1, "operations": {"GET /ok": {"method": "GET", "path": "/ok",
                                                     "count": 20, "p95": 25.0}}}  # fmt: skip
    save_baseline(open_database(url), name=name, url=sick, profile=old)
    try:
        code, report = _json(["triage", f"{sick}/ok", "--baseline", name, "--db", url, "--json"])
    finally:
        runner.invoke(app, ["baseline", "delete", name, "--db", url])
    assert code == 0
    assert report["reference"]["per_operation"]["GET /ok"]["spread"] == "run"
    assert report["degradation_factor_interval"] is not None
    assert any("kept no latency samples" in w and "save it again" in w for w in report["warnings"])


def test_unhealthy_service_cannot_become_a_baseline(sick: str, db_url: str) -> None:
    result = runner.invoke(app, ["baseline", "save", "bad", f"{sick}/err60", "--db", db_url])
    assert result.exit_code == 2 and "does not look healthy" in result.stderr
    assert get_baseline(open_database(db_url), "bad") is None
    down = runner.invoke(
        app,
        [
            "baseline",
            "save",
            "down",
            f"http://127.0.0.1:{refused_port()}/",
            "--db",
            db_url,
            "--budget",
            "2s",
        ],
    )
    assert down.exit_code == 3


def test_baseline_round_trip_on_postgresql(sick: str) -> None:
    name = f"triage-test-{uuid.uuid4().hex[:8]}"
    code, saved = _json(
        [
            "baseline",
            "save",
            name,
            f"{sick}/ok",
            "--samples",
            "4",
            "--rounds",
            "2",
            "--every",
            "0s",
            "--valid-for",
            "2h",
            "--db",
            PG_URL,
            "--json",
        ]
    )
    assert code == 0 and saved["name"] == name
    stored = get_baseline(open_database(PG_URL), name)
    assert stored is not None and "GET /ok" in stored.profile["operations"]
    assert len(stored.profile["operations"]["GET /ok"]["rounds_ms"]) == 2
    assert stored.expires_at - stored.created_at == timedelta(hours=2)
    result = runner.invoke(app, ["baseline", "delete", name, "--db", PG_URL])
    assert result.exit_code == 0
    assert get_baseline(open_database(PG_URL), name) is None


def test_incident_opens_with_the_verdict(sick: str, db_url: str) -> None:
    code, report = _json(
        ["triage", f"{sick}/err60", "--target-ms", "100", "--incident", "--db", db_url, "--json"]
    )
    assert code == 0
    incident = report["incident"]
    assert incident["opened"] is True
    db = open_database(db_url)
    record = get_incident(db, incident["id"])
    assert record.severity.name == "P0"
    kinds = [e.kind for e in list_events(db, record.id)]
    assert "triage" in kinds
    triage_event = next(e for e in list_events(db, record.id) if e.kind == "triage")
    assert triage_event.details["severity"] == "P0"
    # the same URL again reuses the open incident instead of opening a second one
    code, again = _json(
        ["triage", f"{sick}/err60", "--target-ms", "100", "--incident", "--db", db_url, "--json"]
    )
    assert again["incident"]["id"] == incident["id"]
    assert again["incident"]["reused"] is True


def test_incident_not_opened_when_ok(sick: str, db_url: str) -> None:
    code, report = _json(
        [
            "triage",
            f"{sick}/ok",
            "--target-ms",
            "1000",
            "--samples",
            "4",
            "--incident",
            "--db",
            db_url,
            "--json",
        ]
    )
    assert code == 0 and report["severity"] == "OK"
    assert report["incident"] == {"opened": False, "reason": "severity OK: no incident opened"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rounds", "0"], "--rounds must be between 1 and 50"),
        (["--every", "soon"], "--every: 'soon' is not a duration"),
        (["--every", "20m"], "--every must be between 0 s and 600 s"),
    ],
)
def test_baseline_save_rejects_bad_rounds_with_one_sentence(
    args: list[str], needle: str, db_url: str
) -> None:
    result = runner.invoke(app, ["baseline", "save", "x", "http://127.0.0.1:1/", *args,
                                 "--db", db_url])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.count("error:") == 1 and needle in " ".join(result.stderr.split())
