"""`crisisctl validate` against Debian's nginx with `limit_req` in front of an unprotected app.

nginx (installed by `make test` through scripts/ensure-system-packages.sh) runs from its own
temporary prefix on 127.0.0.1 (see nginx_server.py) and limits /api/ to 20 requests/s per
client with a burst of 10, answering 429; the app behind it has no protection of its own.
Without nginx the test fails saying how to install it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from nginx_server import NGINX_BURST, Process, bare_server, nginx_binary, nginx_proxy
from typer.testing import CliRunner

from crisisctl.cli.main import app

runner = CliRunner()


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


def test_nginx_limit_req_passes_rate_limiting(nginx: Process, nginx_prefix: Path) -> None:
    # host CPU is raised to 100 % for the shared test machine (see test_validate_servers.py)
    result = runner.invoke(
        app,
        ["validate", f"{nginx.url}/", "--burst-path", "/api/items", "--load-duration", "2s",
         "--load-rate", "40", "--max-cpu-percent", "100", "--json"],
    )  # fmt: skip
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert [name for name, c in checks.items() if not c["passed"]] == [], checks
    assert result.exit_code == 0

    rate = checks["rate_limiting"]["evidence"]
    assert rate["path"] == "/api/items"
    assert rate["status_counts"]["429"] == rate["rate_limited"] > 0
    # nginx lets the burst allowance (and what the rate refills meanwhile) through, then 429s;
    # the two error-handling requests to /api/items used up part of the allowance before
    assert 1 <= rate["served"] <= NGINX_BURST + 1 + 20
    assert "guard" not in rate  # nginx is not the guard: no status document

    # the parallel burst meets the exhausted allowance: shed with 429, nothing timed out
    conc = checks["concurrency_control"]["evidence"]
    assert conc["shed"] > 0 and conc["transport_errors"] == 0

    # through nginx to the app: malformed JSON is the app's 400, DELETE its 405
    errors = checks["error_handling"]["evidence"]
    assert errors["malformed_json"]["status"] == 400
    assert errors["wrong_method"]["status"] == 405
    assert errors["unknown_route"]["status"] == 404

    # the process listening on nginx's port is nginx itself
    assert checks["resource_utilization"]["evidence"]["process"]["name"] == "nginx"
    assert checks["load_resilience"]["evidence"]["success_rate"] >= 95.0
    assert report["settings"]["guard_detected"] is False

    # nginx's own access log in its prefix: the 429s really came from nginx
    log = (nginx_prefix / "access.log").read_text().splitlines()
    assert any('"GET /api/items HTTP/1.1" 429' in line for line in log)
