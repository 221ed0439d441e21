"""Scenario runs end to end against a real uvicorn app on 127.0.0.1 that requires a login.

The app runs in a thread of the test process (`AppServer`), so the tests read what it saw
(logins, client ids, order bodies) from `SEEN`. Used by test_load_processes.py too.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from crisisctl.cli.main import app as cli

runner = CliRunner()
TOKENS: set[str] = set()
SEEN: dict[str, Any] = {}


def reset() -> None:
    SEEN.update(logins=0, ids=[], bodies=[], unauthorized=0, requests=0, stamps=[])


reset()


def _authorized(request: Request) -> bool:
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    ok = request.cookies.get("sid") in TOKENS or bearer in TOKENS
    SEEN["requests"] += 1
    if not ok:
        SEEN["unauthorized"] += 1
    return ok


async def login(request: Request) -> Response:
    body = await request.json()
    if body != {"user": "alice", "password": "secret"}:
        return JSONResponse({"error": "bad credentials"}, status_code=401)
    SEEN["logins"] += 1
    token = secrets.token_hex(8)
    TOKENS.add(token)
    response = JSONResponse({"data": {"access_token": token}})
    response.set_cookie("sid", token)
    return response


async def client(request: Request) -> Response:
    if not _authorized(request):
        return JSONResponse({}, status_code=401)
    SEEN["ids"].append(int(request.path_params["id"]))
    return JSONResponse({"id": request.path_params["id"], "q": dict(request.query_params)})


async def orders(request: Request) -> Response:
    if not _authorized(request):
        return JSONResponse({}, status_code=401)
    SEEN["bodies"].append(await request.json())
    return JSONResponse({"ok": True}, status_code=201)


async def fail(request: Request) -> Response:
    SEEN["requests"] += 1
    return PlainTextResponse("broken", status_code=500)


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.02)
    return PlainTextResponse("slow")


async def stamp(request: Request) -> Response:
    SEEN["stamps"].append(time.monotonic())  # when each request arrived
    return PlainTextResponse("ok")


async def hello(request: Request) -> Response:
    SEEN["requests"] += 1
    return PlainTextResponse("hello")


APP = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/api/clients/{id:int}", client),
        Route("/api/orders", orders, methods=["POST"]),
        Route("/fail", fail),
        Route("/slow", slow),
        Route("/stamp", stamp),
        Route("/", hello),
    ]
)


class AppServer:
    """uvicorn serving `APP` on a free loopback port, in a background thread."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            APP, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="off",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with AppServer() as srv:
        yield srv


def scenario_file(tmp_path: Path, server: AppServer, body: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"base_url: {server.url}\n" + body)
    return path


def invoke(*args: object) -> Any:
    return runner.invoke(cli, [str(a) for a in args])


CLIENTS_API = """\
name: clients
login:
  path: /login
  json: {user: alice, password: secret}
  expect_status: 200
  token: {json_field: data.access_token}
model: {type: open, rate: 100, duration: 2s, connections: 8}
variables:
  id: {range: [1, 5]}
  email: {csv: people.csv, column: email, order: sequential}
operations:
  - name: get client
    weight: 3
    path: /api/clients/{id}
    query: {expand: portfolios}
    thresholds: [p95 < 2s]
  - name: create order
    weight: 1
    method: POST
    path: /api/orders
    json: {client_id: "{id}", contact: "{email}", note: "client {id}"}
    expect_status: 201
thresholds:
  - error_rate < 1%
  - checks > 99%
  - requests >= 180
"""


def test_open_scenario_with_login_weights_and_templates(server: AppServer, tmp_path: Path) -> None:
    reset()
    (tmp_path / "people.csv").write_text("email,name\na@x.test,A\nb@x.test,B\n")
    path = scenario_file(tmp_path, server, CLIENTS_API)
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    result = invoke("load", path, "--processes", 1, "--out", out, "--html", html)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["report"] == "load" and report["thresholds_passed"]
    assert SEEN["logins"] == 1 and SEEN["unauthorized"] == 0  # once per process
    ops = report["operations"]
    assert ops["get client"]["requests"] + ops["create order"]["requests"] == report["requests"]
    assert abs(report["requests"] - 200) <= 4
    # weights 3:1 — 150 ± 5 standard deviations of a binomial(200, 0.75)
    assert 120 <= ops["get client"]["requests"] <= 180
    assert set(SEEN["ids"]) <= {1, 2, 3, 4, 5} and len(set(SEEN["ids"])) >= 4
    bodies = SEEN["bodies"]
    assert len(bodies) == ops["create order"]["status_counts"]["201"]
    assert all(isinstance(b["client_id"], int) and b["note"] == f"client {b['client_id']}"
               for b in bodies)  # fmt: skip
    assert [b["contact"] for b in bodies[:4]] == ["a@x.test", "b@x.test"] * 2  # sequential
    assert {t["expression"]: t["passed"] for t in report["thresholds"]} == {
        "error_rate < 1%": True, "checks > 99%": True, "requests >= 180": True,
        "p95 < 2s": True, "dropped_rate < 1%": True,  # the open model's default one, last
    }  # fmt: skip
    parser = HTMLParser()
    parser.feed(html.read_text())  # parses; the structure is checked in the unit tests
    assert html.read_text().count("<svg") == 3


def test_closed_scenario_logs_in_every_user_and_keeps_cookies(
    server: AppServer, tmp_path: Path
) -> None:
    reset()
    text = """\
login: {path: /login, json: {user: alice, password: secret}}
model: {type: closed, users: 4, duration: 1s, think: {distribution: uniform, min: 5ms, max: 15ms}}
operations:
  - path: /api/clients/{id}
    variables: {id: {list: [7]}}
    expect_status: [200]
"""
    result = invoke("load", scenario_file(tmp_path, server, text), "--json", "--processes", 1)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert SEEN["logins"] == 4 and SEEN["unauthorized"] == 0
    assert report["users"] == 4 and report["status_counts"] == {"200": report["requests"]}
    assert report["requests"] >= 40 and set(SEEN["ids"]) == {7}


def test_bad_login_exits_2(server: AppServer, tmp_path: Path) -> None:
    text = """\
login: {path: /login, json: {user: alice, password: wrong}}
model: {type: open, rate: 10, duration: 1s}
operations: [{path: /}]
"""
    result = invoke("load", scenario_file(tmp_path, server, text), "--processes", 1)
    assert result.exit_code == 2, result.output
    assert "got status 401" in " ".join(result.stderr.split())


def test_failing_threshold_exits_1_and_abort_on_fail_stops_early(
    server: AppServer, tmp_path: Path
) -> None:
    text = """\
model: {type: open, rate: 100, duration: 20s}
operations:
  - {name: broken, path: /fail}
thresholds:
  - {expr: error_rate < 1%, abort_on_fail: true, delay_abort_eval: 1s}
  - p99 < 10s
"""
    started = time.monotonic()
    result = invoke("load", scenario_file(tmp_path, server, text), "--json", "--processes", 1)
    assert time.monotonic() - started < 15  # 20 s planned
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["aborted"] == "threshold 'error_rate < 1%' failed"
    assert report["requests"] < 1000 and report["unexpected_status"] == report["completed"]
    verdicts = {t["expression"]: t for t in report["thresholds"]}
    assert verdicts["error_rate < 1%"]["aborted_run"] and not verdicts["error_rate < 1%"]["passed"]
    assert verdicts["p99 < 10s"]["passed"]
    assert verdicts["dropped_rate < 1%"]["default"]  # stopped early: nothing was dropped
    assert "1 of 3 thresholds failed: error_rate < 1%" in " ".join(result.stderr.split())


def test_quick_form_with_headers_body_stages_and_thresholds(server: AppServer) -> None:
    reset()
    token = httpx.post(
        f"{server.url}/login", json={"user": "alice", "password": "secret"}, trust_env=False
    ).json()["data"]["access_token"]
    result = invoke(
        "load", f"{server.url}/api/orders", "--rate", 0, "--stage", "1s:50", "--stage", "1s:50",
        "--method", "POST", "-H", f"Authorization: Bearer {token}", "-H", "X-Test: {raw}",
        "--body", '{"qty": 2}', "--threshold", "p95 < 5s", "--threshold", "rps > 1000000",
        "--processes", 1, "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # the rps threshold fails
    report = json.loads(result.stdout)
    assert abs(report["requests"] - 75) <= 2 and report["status_counts"] == {
        "201": report["requests"]
    }
    assert SEEN["bodies"][0] == {"qty": 2} and SEEN["unauthorized"] == 0
    assert [t["passed"] for t in report["thresholds"]] == [True, False, True]
    assert report["config"]["source"] == "command line"
    assert "rps > 1000000" in " ".join(result.stderr.split())


def test_expected_statuses_are_checks(server: AppServer, tmp_path: Path) -> None:
    text = """\
model: {type: closed, users: 2, duration: 500ms, think: 10ms}
operations:
  - {name: known failure, path: /fail, expect_status: 500}
  - {name: plain, path: /fail}
thresholds:
  - {expr: checks == 100%, operation: known failure}
  - {expr: checks == 0%, operation: plain}
"""
    result = invoke("load", scenario_file(tmp_path, server, text), "--json", "--processes", 1)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    ops = report["operations"]
    assert ops["known failure"]["unexpected_status"] == 0
    assert ops["plain"]["unexpected_status"] == ops["plain"]["completed"] > 0


def test_scenario_errors_exit_2_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("base_url: http://127.0.0.1:9\nmodel: {type: open, rate: 5}\noperations: []\n")
    result = invoke("load", path)
    assert result.exit_code == 2
    err = " ".join(result.stderr.split())
    assert f"{path}:2: model: an open model needs rate > 0 and a duration" in err
    assert f"{path}:3: operations: List should have at least 1 item" in err
    assert "Traceback" not in result.output
    result = invoke("load", path, "--rate", 5)
    assert result.exit_code == 2 and "only apply to a URL" in result.stderr
    result = invoke("load", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "neither a scenario file" in " ".join(result.stderr.split())
