"""Journeys end to end against a real FastAPI app on 127.0.0.1 (`journey_app`): a CSV feeder of
users, login → extract token → list → pick an id (extracted) → read; per-step figures and
step thresholds in the report; cookies kept per user; failed extractions counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from journey_app import SEEN, JourneyServer, reset
from typer.testing import CliRunner

from crisisctl.cli.main import app as cli

runner = CliRunner()

JOURNEY = """
name: shop
model: {{type: closed, users: 3, duration: 1.5s}}
feeders:
  - csv: users.csv
    mode: unique
steps:
  - name: login
    method: POST
    path: /login
    json: {{username: "{{username}}", password: "{{password}}"}}
    extract:
      token: data.token
  - name: list
    path: /items
    headers: {{Authorization: "Bearer {{token}}"}}
    extract:
      item: {{json: "items[{pick}].id"}}
  - name: read
    path: /items/{{item}}
    headers: {{Authorization: "Bearer {{token}}"}}
thresholds:
  - "p95{{step:login}} < 2s"
  - "error_rate{{step:read}} < 1%"
{extra}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[JourneyServer]:
    with JourneyServer() as srv:
        yield srv


def _write(tmp_path: Path, server: JourneyServer, text: str, users: int = 3) -> Path:
    rows = "".join(f"user{i},pw{i}\n" for i in range(1, users + 1))
    (tmp_path / "users.csv").write_text("username,password\n" + rows)
    path = tmp_path / "journey.yaml"
    path.write_text(f"base_url: {server.url}\n" + text)
    return path


def test_journey_runs_in_order_with_feeder_and_extracted_values(
    tmp_path: Path, server: JourneyServer
) -> None:
    reset()
    text = JOURNEY.replace("{pick}", "1").format(extra="")
    path = _write(tmp_path, server, text)
    html_out = str(tmp_path / "report.html")
    result = runner.invoke(
        cli, ["load", str(path), "--json", "--processes", "1", "--html", html_out]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    steps = report["operations"]
    assert list(steps) == ["login", "list", "read"]
    for step in steps.values():  # per-step figures
        assert step["requests"] > 0 and step["latency_ms"]["p99"] is not None
    assert set(SEEN["logins"]) == {"user1", "user2", "user3"}  # unique: one row per user
    assert SEEN["reads"] and {item for _, item in SEEN["reads"]} == {202}
    assert SEEN["bad_auth"] == 0
    assert report["grouping"] == "step"
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Steps</h2>" in html and "<td>login</td>" in html and "<td>read</td>" in html
    text = runner.invoke(cli, ["load", str(path), "--processes", "2"])
    assert text.exit_code == 0, text.output
    assert "step" in text.output and "login" in text.output and "read" in text.output
    verdicts = report["thresholds"]
    assert [(v["operation"], v["passed"]) for v in verdicts][:2] == [
        ("login", True),
        ("read", True),
    ]


def test_failed_extraction_counts_as_failed_request_of_the_step(
    tmp_path: Path, server: JourneyServer
) -> None:
    reset()
    text = JOURNEY.replace("{pick}", "7").format(extra="")  # items[7] is not there
    path = _write(tmp_path, server, text)
    result = runner.invoke(cli, ["load", str(path), "--json", "--processes", "1"])
    assert result.exit_code == 1  # the read step never ran: its threshold has no data
    report = json.loads(result.output[: result.output.rindex("\n}") + 2])
    assert SEEN["reads"] == []  # the journey stopped at the failed extraction
    steps = report["operations"]
    assert steps["list"]["errors"]["extract"] == steps["list"]["requests"] > 0
    assert steps["list"]["error_rate"] == 1.0
    assert steps["read"]["requests"] == 0


def test_cookies_are_kept_per_user_and_header_regex_extraction(
    tmp_path: Path, server: JourneyServer
) -> None:
    reset()
    text = """
model: {type: closed, users: 3, duration: 1s}
feeders: [{csv: users.csv, mode: unique}]
steps:
  - name: add
    method: POST
    path: /cart?owner={username}
    extract: {cart_id: {header: X-Cart-Id}}
  - name: view
    path: /cart
    query: {owner: "{username}", id: "{cart_id}"}
    extract: {csrf: {regex: 'name="csrf" value="([^"]+)"'}}
"""
    path = _write(tmp_path, server, text)
    result = runner.invoke(cli, ["load", str(path), "--json", "--processes", "1"])
    assert result.exit_code == 0, result.output
    assert SEEN["cart_ok"] > 0
    assert SEEN["cart_bad"] == 0  # every user got its own cookie back, never another's


def test_journey_problems_are_reported_at_file_line_before_the_run(
    tmp_path: Path, server: JourneyServer
) -> None:
    reset()
    text = """
model: {type: closed, users: 5, duration: 1s}
feeders: [{csv: users.csv, mode: unique}]
steps:
  - name: list
    path: /items
    headers: {Authorization: "Bearer {token}"}
  - name: login
    method: POST
    path: /login
    json: {username: "{usernme}", password: "{password}"}
    extract: {token: data.token}
thresholds: ["p95{step:logn} < 1s"]
"""
    path = _write(tmp_path, server, text, users=3)
    result = runner.invoke(cli, ["load", str(path)])
    assert result.exit_code == 2
    # the terminal wraps the sentences where the temporary path's length puts the edge (even
    # inside "journey.yaml:12"): compare without any whitespace
    out = "".join(result.output.split())
    for expected in (
        "journey.yaml:4: feeders[0].mode", "3 rows for 5 users",
        "journey.yaml:8: steps[0].headers", "used before it is extracted",
        "journey.yaml:12: steps[1].json: no variable named usernme", "no step named 'logn'",
    ):  # fmt: skip
        assert "".join(expected.split()) in out, expected
    assert SEEN["logins"] == [] and SEEN["lists"] == 0
    assert "Traceback" not in result.output


def test_abort_on_stops_a_run_hurting_its_target(server: JourneyServer) -> None:
    # every GET /items without a token is a 401: an error rate of 100 % from the first second
    args = ["load", f"{server.url}/items", "--users", "2", "--duration", "20s", "--json"]
    args += ["--abort-on", "error_rate > 50% for 2s", "--think", "20ms", "--processes", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["aborted"] == "abort_on 'error_rate > 50% for 2s' held"
    assert 2.0 <= data["elapsed_s"] < 6.0


def test_journey_max_requests_is_exact(tmp_path: Path, server: JourneyServer) -> None:
    reset()
    path = _write(tmp_path, server, JOURNEY.replace("{pick}", "0").format(extra=""))
    args = ["load", str(path), "--json", "--processes", "1", "--max-requests", "20"]
    result = runner.invoke(cli, args)
    report = json.loads(result.output[: result.output.rindex("\n}") + 2])
    assert report["requests"] == 20
    assert report["aborted"] == "stopped at the --max-requests bound (20 requests)"


def test_the_login_step_follows_resolve_pins(tmp_path: Path, server: JourneyServer) -> None:
    reset()
    name = f"shop.crisis.test:{server.port}"
    path = tmp_path / "login.yaml"
    path.write_text(
        f"base_url: http://{name}\n"
        "model: {type: closed, users: 2, duration: 1s}\n"
        "login:\n"
        "  path: /login\n"
        "  json: {username: user1, password: pw1}\n"
        "  token: {json_field: data.token}\n"
        "operations:\n"
        "  - path: /items\n"
    )
    args = ["load", str(path), "--json", "--processes", "1", "--resolve", f"{name}:127.0.0.1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert SEEN["logins"] == ["user1", "user1"]
    assert SEEN["lists"] > 0 and SEEN["bad_auth"] == 0


OPEN_JOURNEY = JOURNEY.replace(
    "model: {{type: closed, users: 3, duration: 1.5s}}",
    "model: {{type: open, rate: 20, duration: 1.5s, connections: 8}}",
)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_open_model_journeys_each_arrival_runs_the_steps_once(
    tmp_path: Path, server: JourneyServer, processes: str
) -> None:
    reset()
    path = _write(tmp_path, server, OPEN_JOURNEY.replace("{pick}", "1").format(extra=""), 30)
    result = runner.invoke(cli, ["load", str(path), "--json", "--processes", processes])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "open" and report["grouping"] == "step"
    assert report["journeys"] == 30 and report["dropped"] == 0 and report["scheduled"] == 30
    steps = report["operations"]
    assert [steps[name]["requests"] for name in ("login", "list", "read")] == [30, 30, 30]
    assert report["requests"] == 90 and report["latency_uncorrected_ms"]["count"] == 90
    # unique: every arrival its own row, across processes too
    assert sorted(SEEN["logins"]) == sorted(f"user{i}" for i in range(1, 31))
    assert SEEN["bad_auth"] == 0 and {item for _, item in SEEN["reads"]} == {202}
    text = runner.invoke(cli, ["load", str(path), "--processes", processes])
    assert "journeys started" in text.output and "30" in text.output


def test_open_model_journeys_count_arrivals_no_user_could_take_as_dropped(
    tmp_path: Path, server: JourneyServer
) -> None:
    # one journey user, 50 ms a journey, 100 arrivals a second: about 80 of them find no
    # user free within the 0.2 s timeout
    text = """
model: {type: open, rate: 100, duration: 1s, connections: 1}
timeout: 200ms
steps:
  - {name: slow, path: /slow}
"""
    path = _write(tmp_path, server, text)
    result = runner.invoke(cli, ["load", str(path), "--json", "--processes", "1"])
    assert result.exit_code == 1  # the default dropped_rate < 1% threshold fails
    report = json.loads(result.stdout)
    assert report["journeys"] + report["dropped"] == report["scheduled"] == 100
    assert (
        10 <= report["journeys"] <= 30
        and report["operations"]["slow"]["requests"] == (report["journeys"])
    )
    assert report["dropped_rate"] == report["dropped"] / 100
    verdict = next(t for t in report["thresholds"] if t["metric"] == "dropped_rate")
    assert verdict["value"] == report["dropped_rate"] and not verdict["passed"]


def test_open_model_unique_feeder_needs_a_row_per_arrival(
    tmp_path: Path, server: JourneyServer
) -> None:
    path = _write(tmp_path, server, OPEN_JOURNEY.replace("{pick}", "1").format(extra=""), 10)
    result = runner.invoke(cli, ["load", str(path)])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "journey.yaml:7: feeders[0].mode" in out and "10 rows for 30 arrivals" in out
