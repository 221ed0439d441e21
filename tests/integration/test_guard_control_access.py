"""Reading the guard's control surface over real HTTP (uvicorn on 127.0.0.1): a public client
behind a trusted proxy is refused without a token, loopback readers (triage, `crisisctl guard
status`) keep working, and status and metrics have their own rate limit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from crisisctl.cli.main import app as cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_servers import GuardServer, guard_servers

PUBLIC = "203.0.113.9"


@pytest.fixture(scope="module")
def proxied() -> Iterator[GuardServer]:
    """A guard behind a (pretend) proxy on loopback that it trusts, with a read token."""
    config = {"token": "writer", "read_token": "reader", "trusted_proxies": ["127.0.0.1"]}
    with guard_servers(config) as (server,):
        yield server


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, trust_env=False, timeout=5.0)


def test_a_public_client_behind_a_trusted_proxy_is_refused(proxied: GuardServer) -> None:
    for endpoint in ("status", "metrics", "mode"):
        refused = get(f"{proxied.url}/_crisis/{endpoint}", **{"x-forwarded-for": PUBLIC})
        assert refused.status_code == 403, endpoint
        assert "read_token" in refused.json()["error"]
    assert get(f"{proxied.url}/_crisis/health", **{"x-forwarded-for": PUBLIC}).status_code == 200


def test_a_read_token_opens_status_and_metrics_to_a_public_client(proxied: GuardServer) -> None:
    for token in ("reader", "writer"):
        headers = {"x-forwarded-for": PUBLIC, "authorization": f"Bearer {token}"}
        status = get(f"{proxied.url}/_crisis/status", **headers)
        assert status.status_code == 200 and status.json()["service"] == "crisisctl-guard"
        metrics = get(f"{proxied.url}/_crisis/metrics", **headers)
        assert metrics.status_code == 200 and "crisisctl_guard_mode" in metrics.text


def test_a_private_client_behind_the_trusted_proxy_may_read(proxied: GuardServer) -> None:
    response = get(f"{proxied.url}/_crisis/status", **{"x-forwarded-for": "10.20.30.40"})
    assert response.status_code == 200


def test_the_guard_status_command_sends_a_read_token() -> None:
    runner = CliRunner()
    # no trusted network at all: even loopback needs the token
    config = {"token": "", "read_token": "reader", "control_networks": []}
    with guard_servers(config) as (server,):
        refused = runner.invoke(cli, ["guard", "status", server.url])
        assert refused.exit_code == 2
        assert "refused to show its status (HTTP 403)" in refused.output
        wrong = runner.invoke(cli, ["guard", "status", server.url, "--token", "nope"])
        assert wrong.exit_code == 2 and "wrong bearer token" in wrong.output
        ok = runner.invoke(cli, ["guard", "status", server.url, "--token", "reader", "--json"])
        assert ok.exit_code == 0, ok.output
        assert '"service": "crisisctl-guard"' in ok.output


def test_loopback_reads_by_default_but_not_through_an_untrusted_proxy() -> None:
    # (`crisisctl triage` reads status from loopback too: test_triage_severity's
    # test_guard_awareness)
    with guard_servers({"token": ""}) as (server,):
        get(f"{server.url}/ok")
        status = get(f"{server.url}/_crisis/status")
        assert status.status_code == 200 and status.json()["requests"]["total"] == 1
        # nginx on loopback without trusted_proxies: the origin is unknown, so refused
        forwarded = get(f"{server.url}/_crisis/status", **{"x-forwarded-for": PUBLIC})
        assert forwarded.status_code == 403
        assert "trusted_proxies" in forwarded.json()["error"]


def test_status_and_metrics_answer_429_past_their_own_rate_limit() -> None:
    with guard_servers({"token": "", "control_rate_limit": "3/minute"}) as (server,):
        codes = [get(f"{server.url}/_crisis/{e}").status_code for e in ("status", "metrics") * 2]
        assert codes == [200, 200, 200, 429]
        limited = get(f"{server.url}/_crisis/status")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert get(f"{server.url}/_crisis/health").status_code == 200
        assert get(f"{server.url}/ok").status_code == 200  # the app's own traffic is untouched
