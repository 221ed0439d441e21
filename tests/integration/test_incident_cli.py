"""`crisisctl incident …` and `crisisctl postmortem` end to end on SQLite and PostgreSQL, a real
load report from a loopback server, and apprise delivery to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_incident_support import db_url, pg_session_url
from typer.testing import CliRunner

from crisisctl.cli.main import app

__all__ = ["db_url", "pg_session_url"]

runner = CliRunner()


def cli(url: str, *args: str, code: int = 0) -> str:
    """The command's output (errors unwrapped to one line)."""
    result = runner.invoke(app, [*args, "--db", url])
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output if code == 0 else " ".join(result.output.split())


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A JSON webhook receiver on 127.0.0.1 recording what it is sent."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def _load_report(tmp_path: Path, p95: float, rps: float) -> Path:
    path = tmp_path / f"load-{p95}.json"
    path.write_text(json.dumps({
        "report": "load", "url": "http://127.0.0.1:8000/", "requests": 500,
        "requests_per_second": rps, "error_total": 0, "status_counts": {"200": 500},
        "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 2, "max": p95 * 3},
        "per_second": [{"second": 0, "requests": 250, "errors": 0, "p95_ms": p95}],
    }))  # fmt: skip
    return path


def test_cli_lifecycle(db_url: str, tmp_path: Path) -> None:
    out = cli(db_url, "incident", "open", "--title", "API slow", "--severity", "P1",
              "--service", "api", "--started", "2025-11-23T10:00:00Z",
              "--detected", "2025-11-23T10:05:00Z")  # fmt: skip
    ident = out.strip().splitlines()[0]
    assert ident.isdigit()
    cli(db_url, "incident", "status", ident, "investigating", "--at", "2025-11-23T10:06:00Z")
    cli(db_url, "incident", "log", ident, "guard emergency mode", "--kind", "action",
        "--at", "2025-11-23T10:07:00Z")  # fmt: skip
    cli(db_url, "incident", "severity", ident, "P0")
    cli(db_url, "incident", "escalate", ident)
    cli(db_url, "incident", "set", ident, "--commander", "bob", "--peak-latency-ms", "2400",
        "--baseline-latency-ms", "200", "--error-rate", "0.1", "--downtime", "4m")  # fmt: skip
    cli(db_url, "incident", "attach", ident, str(_load_report(tmp_path, 2400, 90)),
        "--label", "before")  # fmt: skip
    cli(db_url, "incident", "attach", ident, str(_load_report(tmp_path, 240, 180)),
        "--label", "after")  # fmt: skip
    cli(db_url, "incident", "cause", ident, "pool exhausted", "--category", "Resources")
    cli(db_url, "incident", "lesson", ident, "went-wrong", "no pool alert")
    cli(db_url, "incident", "action", "add", ident, "Alert on the pool", "--owner", "carol",
        "--due", "2025-12-01", "--priority", "high")  # fmt: skip
    cli(db_url, "incident", "status", ident, "mitigated", "--at", "2025-11-23T10:20:00Z")
    out = cli(db_url, "incident", "resolve", ident, "--at", "2025-11-23T11:00:00Z")
    assert "resolved 1 h 00 min 00 s after it started" in out

    shown = json.loads(cli(db_url, "incident", "show", ident, "--json"))
    assert shown["status"] == "resolved" and shown["severity"] == "P0"
    assert shown["escalation_level"] == 2 and shown["roles"]["commander"] == "bob"
    assert shown["time_to_detect_ms"] == 300_000.0 and shown["time_to_mitigate_ms"] == 1_200_000.0
    assert shown["impact"]["degradation_factor"] == 12.0
    listed = json.loads(cli(db_url, "incident", "list", "--status", "resolved", "--json"))
    assert int(ident) in [i["id"] for i in listed]
    pinned = json.loads(cli(db_url, "incident", "timeline", ident, "--kind", "load_report",
                            "--json"))  # fmt: skip
    assert [e["details"]["label"] for e in pinned] == ["before", "after"]

    md = cli(db_url, "postmortem", ident)
    assert "| p95_ms | 2400 ms | 240 ms | 10.00× | +90.0 % |" in md
    html_path = tmp_path / "pm.html"
    cli(db_url, "postmortem", ident, "--out", str(html_path))
    assert "<svg" in html_path.read_text() and "<polyline" not in md
    doc = json.loads(cli(db_url, "postmortem", ident, "--format", "json"))
    assert doc["response"]["mttx"][3]["ms"] == 3_600_000.0


def test_cli_errors_are_one_sentence_exit_2(db_url: str, tmp_path: Path) -> None:
    ident = cli(db_url, "incident", "open", "--title", "t", "--severity", "P2").split()[0]
    cases = [
        (["incident", "status", ident, "closed"], "cannot move an incident from detected"),
        (["incident", "status", ident, "fixed"], "unknown status 'fixed'"),
        (["incident", "show", "99999"], "there is no incident 99999"),
        (["incident", "severity", ident, "P9"], "unknown severity 'P9'"),
        (["incident", "log", ident, "x", "--kind", "gossip"], "unknown kind 'gossip'"),
        (["incident", "attach", ident, str(tmp_path / "missing.json")], "could not read"),
        (["incident", "status", ident, "mitigated", "--at", "yesterday"], "not an ISO 8601 time"),
        (["incident", "action", "add", ident, "x", "--due", "soon"], "is not a date"),
        (["postmortem", ident, "--format", "pdf"], "unknown format 'pdf'"),
    ]
    for args, message in cases:
        out = cli(db_url, *args, code=2)
        assert message in out and "Traceback" not in out
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert "is not valid JSON" in cli(db_url, "incident", "attach", ident, str(bad), code=2)


def test_cli_unusable_database_exit_2(tmp_path: Path) -> None:
    out = cli("postgresql://postgres@127.0.0.1:1/x", "incident", "list", code=2)
    assert "could not open the incident database" in out
    out = cli(f"sqlite:///{tmp_path / 'no' / 'dir.db'}", "incident", "list", code=2)
    assert "does not exist" in out


def test_notify_stdout_and_apprise_delivery(
    tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    ident = cli(url, "incident", "open", "--title", "DB down", "--severity", "P0").split()[0]
    printed = cli(url, "incident", "notify", ident, "--template", "stakeholder")
    assert printed.startswith(f"Performance incident #{ident}: DB down — detected")
    hook, received = receiver
    cli(url, "incident", "notify", ident, "--to", hook)
    assert len(received) == 1
    assert received[0]["title"] == f"[P0] incident #{ident}: DB down (detected)"
    assert "🚨 PERFORMANCE EMERGENCY 🚨" in received[0]["message"]
    notes = json.loads(cli(url, "incident", "timeline", ident, "--kind", "note", "--json"))
    assert notes[0]["details"] == {"template": "internal", "targets": 1}
    out = cli(url, "incident", "notify", ident, "--to", "json://127.0.0.1:1/closed", code=2)
    assert "could not be delivered" in out
    assert "cannot use the notification URL" in cli(
        url, "incident", "notify", ident, "--to", "nonsense", code=2
    )
