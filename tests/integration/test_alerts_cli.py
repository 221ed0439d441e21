"""`crisisctl alerts`: listing, silences and their one-sentence errors, on a real SQLite file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner
from watch_support import Directory, alert, fire

from crisisctl.cli.main import app
from crisisctl.watch.respond import build_responder
from crisisctl.watch.respond_config import ResponseConfig

RUNNER = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, list(args))
    return result.exit_code, result.output


async def test_lists_silences_and_unsilences(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'alerts.db'}"
    now = datetime.now(UTC)
    cfg = ResponseConfig.model_validate({"incidents": {"triage": False}})
    responder = build_responder(cfg, db_url=db, directory=Directory())
    try:
        a = alert("checkout", now)
        await responder.handle([fire(a, now)], [a], now)
        await responder.drain()
    finally:
        await responder.aclose()

    code, out = run("alerts", "--db", db, "--json")
    assert code == 0
    listed = json.loads(out)["alerts"]
    assert [(x["rule"], x["state"], x["service"]) for x in listed] == [
        ("latency_p95", "firing", "checkout")
    ]
    assert listed[0]["incident_id"] == 1 and listed[0]["escalation_level"] == 0
    code, out = run("alerts", "--db", db)
    assert code == 0 and "firing" in out

    code, out = run(
        "alerts", "silence", "--db", db, "--rule", "latency_p95", "--label", "service=checkout",
        "--for", "2h", "--reason", "planned failover", "--json",
    )  # fmt: skip
    assert code == 0
    silence = json.loads(out)
    assert silence["matchers"] == {"service": "checkout"} and silence["rule"] == "latency_p95"
    code, out = run("alerts", "silences", "--db", db, "--json")
    assert [s["id"] for s in json.loads(out)["silences"]] == [silence["id"]]
    code, out = run("alerts", "unsilence", "--db", db, str(silence["id"]))
    assert code == 0 and "ended" in out
    code, out = run("alerts", "silences", "--db", db, "--json")
    assert json.loads(out)["silences"] == []


def test_errors_are_one_sentence(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'alerts.db'}"
    code, out = run("alerts", "silence", "--db", db, "--label", "nope", "--for", "1h",
                    "--reason", "x")  # fmt: skip
    assert code == 2 and "is not NAME=VALUE" in out
    code, out = run("alerts", "silence", "--db", db, "--for", "1h", "--reason", "x")
    assert code == 2 and "would mute everything" in out
    code, out = run("alerts", "silence", "--db", db, "--rule", "r", "--for", "soon",
                    "--reason", "x")  # fmt: skip
    assert code == 2 and "is not a duration" in out
    code, out = run("alerts", "unsilence", "--db", db, "42")
    assert code == 2 and "there is no silence 42" in out
    assert "Traceback" not in out
    code, out = run("alerts", "--db", db)
    assert code == 0 and "no firing alert" in out
