"""`crisisctl validate` against Debian's nginx in front of an unprotected app.

nginx (installed by `make test` through scripts/ensure-system-packages.sh) runs from its own
temporary prefix on 127.0.0.1 (see nginx_server.py): `limit_req` (20 requests/s per client,
a burst of 10) under /api/ answering 429 and under /rate503/ answering 503, `limit_conn` (4
requests of a client at once) under /conn/; the app behind it has no protection of its own.
A rate limit passes rate_limiting and never concurrency_control, whatever its status; the
concurrency limit passes concurrency_control. Without nginx the tests fail saying how to
install it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nginx_server import (
    NGINX_BURST,
    NGINX_CONNECTIONS,
    Process,
    bare_server,
    nginx_binary,
    nginx_proxy,
)
from typer.testing import CliRunner

from crisisctl.cli.main import app

runner = CliRunner()
#: every check but concurrency control
ONLY_CONCURRENCY = ["--skip", "monitoring,error_handling,performance_baseline,load_resilience,"
                    "resource_utilization,rate_limiting"]  # fmt: skip


@pytest.fixture(scope="module")
def nginx_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nginx")


@pytest.fixture(scope="module")
def nginx(nginx_prefix: Path) -> Iterator[Process]:
    try:
        nginx_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with bare_server() as upstream, nginx_proxy(upstream.port, nginx_prefix) as proxy:
        yield proxy


def validate_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["validate", *args, "--json"])
    assert result.stdout.startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def test_nginx_limit_req_passes_every_check_but_concurrency(
    nginx: Process, nginx_prefix: Path
) -> None:
    code, report = validate_json(
        f"{nginx.url}/", "--burst-path", "/api/items", "--load-duration", "2s",
        "--load-rate", "40",
    )  # fmt: skip
    checks = {c["name"]: c for c in report["checks"]}
    assert [name for name, c in checks.items() if not c["passed"]] == ["concurrency_control"]
    # six of seven is under the seeds' 90 %: a rate limit alone does not validate
    assert code == 1 and report["passed"] is False

    rate = checks["rate_limiting"]["evidence"]
    assert rate["path"] == "/api/items"
    assert rate["status_counts"]["429"] == rate["rate_limited"] > 0
    # nginx lets the burst allowance (and what the rate refills meanwhile) through, then 429s;
    # the two error-handling requests to /api/items used up part of the allowance before
    assert 1 <= rate["served"] <= NGINX_BURST + 1 + 20
    assert "guard" not in rate  # nginx is not the guard: no status document

    # the parallel burst meets the rate limit: refused with 429, none of it for concurrency
    conc = checks["concurrency_control"]
    assert conc["evidence"]["refused"] > 0 and conc["evidence"]["shed"] == 0
    assert conc["evidence"]["causes"] == {"rate_limit": conc["evidence"]["refused"]}
    assert "a rate limit is not concurrency control" in conc["summary"]

    # through nginx to the app: the root takes GET only, so malformed JSON goes to the POST
    # route that OPTIONS /api/items lists; it is the app's 400, DELETE its 405
    errors = checks["error_handling"]["evidence"]
    assert errors["malformed_json"]["status"] == 400
    assert (errors["malformed_json"]["method"], errors["malformed_json"]["path"]) == (
        "POST", "/api/items",
    )  # fmt: skip
    assert errors["wrong_method"]["status"] == 405
    assert errors["unknown_route"]["status"] == 404

    # the process listening on nginx's port is nginx itself
    assert checks["resource_utilization"]["evidence"]["process"]["name"] == "nginx"
    assert checks["load_resilience"]["evidence"]["success_rate"] >= 95.0
    assert report["settings"]["guard_detected"] is False

    # nginx's own access log in its prefix: the 429s really came from nginx
    log = (nginx_prefix / "access.log").read_text().splitlines()
    assert any('"GET /api/items HTTP/1.1" 429' in line for line in log)


@pytest.mark.parametrize(
    "path",
    ["/api/items",          # limit_req answering 429
     "/rate503/api/items",  # limit_req answering 503: refused when sent alone too
     "/rate503/slow?s=0.2"],  # 503 on a slow route: refusals do not track what is in flight
)  # fmt: skip
def test_nginx_limit_req_alone_does_not_pass_concurrency_control(nginx: Process, path: str) -> None:
    code, report = validate_json(f"{nginx.url}/", "--concurrency-path", path, *ONLY_CONCURRENCY)
    conc = report["checks"][-1]
    assert conc["name"] == "concurrency_control" and conc["passed"] is False, conc["summary"]
    assert conc["status"] == "failed"
    ev = conc["evidence"]
    assert ev["refused"] > 0 and ev["shed"] == 0, conc["summary"]
    assert ev["shape"]["tracks_concurrency"] is not True
    assert code == 1


def test_nginx_limit_conn_passes_concurrency_control(nginx: Process, nginx_prefix: Path) -> None:
    code, report = validate_json(
        f"{nginx.url}/", "--concurrency-path", "/conn/slow?s=0.2", *ONLY_CONCURRENCY
    )
    conc = report["checks"][-1]
    assert conc["status"] == "passed", conc["summary"]
    ev = conc["evidence"]
    # nginx's 503 says nothing of why: the time shape does
    assert ev["causes"] == {"unexplained": ev["refused"]} and ev["shed"] == ev["refused"] > 0
    assert ev["shape"]["tracks_concurrency"] is True
    assert ev["alone"]["refused"] == 0
    # the client's count of what is in flight may run a little above nginx's own limit
    assert ev["shape"]["peak_served_in_flight"] >= NGINX_CONNECTIONS
    assert code == 0 and report["passed"] is True
    log = (nginx_prefix / "error.log").read_text()
    assert "limiting connections by zone" in log
