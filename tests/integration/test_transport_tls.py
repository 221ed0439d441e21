"""https://, --resolve, TLS verification, mTLS and auth flags end to end, on loopback only.

uvicorn serves TLS with certificates from a private CA made by `trustme`, under the name
``api.test.local`` that the commands reach through ``--resolve api.test.local:PORT:127.0.0.1``
(nothing is ever resolved or sent off this machine). Each certificate problem — unknown CA,
name mismatch, expired, client certificate required — is one sentence with exit code 3, for
every command that sends traffic. The auth flags reach the server and never appear in an output.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from crisisctl.cli.main import app as cli

HOST = "api.test.local"
runner = CliRunner()
#: the headers of every request the servers got (name lower-cased -> value)
SEEN: list[dict[str, str]] = []


async def echo(request: Request) -> JSONResponse:
    SEEN.append({k.lower(): v for k, v in request.headers.items()})
    return JSONResponse({"ok": True, "path": request.url.path})


APP = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "HEAD", "OPTIONS"])])


class TlsServer:
    """uvicorn serving `APP` over TLS on a free loopback port, in a background thread."""

    def __init__(self, cert: Path, ca: Path | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        extra = {"ssl_ca_certs": str(ca), "ssl_cert_reqs": ssl.CERT_REQUIRED} if ca else {}
        config = uvicorn.Config(
            APP, host="127.0.0.1", port=self.port, log_level="critical", access_log=False,
            lifespan="off", ssl_certfile=str(cert), ssl_keyfile=str(cert), **extra,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def url(self, host: str = HOST, path: str = "/echo") -> str:
        return f"https://{host}:{self.port}{path}"

    def pin(self, host: str = HOST) -> list[str]:
        return ["--resolve", f"{host}:{self.port}:127.0.0.1"]

    def __enter__(self) -> TlsServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    good: Path
    expired: Path
    client: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(root / "ca.pem")
    other.cert_pem.write_to_path(root / "other.pem")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    leaf = ca.issue_cert(HOST)
    old = ca.issue_cert(HOST, not_before=past - dt.timedelta(days=30), not_after=past)
    client = ca.issue_cert("client@test.local")
    for cert, name in ((leaf, "good"), (old, "expired"), (client, "client")):
        cert.private_key_and_cert_chain_pem.write_to_path(root / f"{name}.pem")
    return Pki(root / "ca.pem", root / "other.pem", root / "good.pem", root / "expired.pem",
               root / "client.pem")  # fmt: skip


@pytest.fixture(scope="module")
def good(pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(pki.good) as server:
        yield server


@pytest.fixture(scope="module")
def expired(pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(pki.expired) as server:
        yield server


@pytest.fixture(scope="module")
def mtls(pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(pki.good, ca=pki.ca) as server:
        yield server


#: the shortest run of each command that sends traffic (the URL and flags come after)
COMMANDS = {
    "triage": ["triage", "--budget", "2s", "--samples", "2", "--json"],
    "load": ["load", "--rate", "20", "--duration", "0.3s", "--processes", "1", "--json"],
    "validate": [
        "validate",
        "--budget",
        "8s",
        "--load-duration",
        "1s",
        "--load-rate",
        "10",
        "--burst",
        "10",
        "--baseline-requests",
        "5",
        "--json",
    ],
    "baseline": ["baseline", "save", "tls-test", "--rounds", "1", "--samples", "2", "--json"],
}


def invoke(command: str, url: str, *flags: str, db: Path | None = None) -> tuple[int, str, str]:
    args = [*COMMANDS[command], url, *flags]
    if command == "baseline":
        args = [*COMMANDS[command][:3], url, *COMMANDS[command][3:], *flags]
        args += ["--db", f"sqlite:///{db}"] if db is not None else []
    result = runner.invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def one_sentence(stderr: str) -> str:
    assert "Traceback" not in stderr
    assert stderr.count("error:") == 1, stderr
    text = " ".join(stderr.split())
    assert text.endswith("."), text
    return text


def test_triage_over_tls_with_a_pinned_name_and_a_private_ca(good: TlsServer, pki: Pki) -> None:
    code, out, err = invoke("triage", good.url(), *good.pin(), "--cacert", str(pki.ca))
    assert code == 0, err
    report = json.loads(out)
    op = report["operations"][0]
    assert op["status_codes"] == {"200": 2}
    # the TLS handshake is split out of the connect time
    assert op["tls_ms"] is not None and op["tls_ms"]["count"] == 2
    assert op["connect_ms"] is not None


def test_load_over_tls_reuses_connections_and_splits_connect_from_tls(
    good: TlsServer, pki: Pki
) -> None:
    SEEN.clear()
    args = ["load", good.url(), *good.pin(), "--cacert", str(pki.ca), "--users", "2",
            "--duration", "0.5s", "--processes", "1", "--json"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status_counts"] == {"200": report["requests"]} and report["requests"] >= 20
    assert report["connects"] == 2  # keep-alive over TLS: two users, two handshakes
    assert report["connect_ms_mean"] > 0 and report["tls_ms_mean"] > 0
    assert all(seen["host"] == f"{HOST}:{good.port}" for seen in SEEN)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_ca_is_one_sentence_and_exit_3(
    command: str, good: TlsServer, pki: Pki, tmp_path: Path
) -> None:
    code, _, err = invoke(command, good.url(), *good.pin(), db=tmp_path / "b.db")
    assert code == 3, err
    text = one_sentence(err)
    assert f"certificate of {HOST}" in text and "unknown certificate authority" in text
    code, _, err = invoke(
        command, good.url(), *good.pin(), "--cacert", str(pki.other_ca), db=tmp_path / "b.db"
    )
    assert code == 3 and "unknown certificate authority" in one_sentence(err)


def test_a_name_mismatch_is_one_sentence_and_exit_3(good: TlsServer, pki: Pki) -> None:
    wrong = "wrong.test.local"
    code, _, err = invoke("triage", good.url(wrong), *good.pin(wrong), "--cacert", str(pki.ca))
    assert code == 3, err
    text = one_sentence(err)
    assert f"does not name {wrong}" in text and "mismatch" in text


def test_an_expired_certificate_is_one_sentence_and_exit_3(expired: TlsServer, pki: Pki) -> None:
    code, _, err = invoke("load", expired.url(), *expired.pin(), "--cacert", str(pki.ca))
    assert code == 3, err
    assert f"the certificate of {HOST} has expired" in one_sentence(err)


def test_mtls_requires_a_client_certificate(mtls: TlsServer, pki: Pki) -> None:
    code, _, err = invoke("triage", mtls.url(), *mtls.pin(), "--cacert", str(pki.ca))
    assert code == 3, err
    # uvicorn (asyncio) drops the connection without TLS's "certificate required" alert
    assert "requires a client certificate" in one_sentence(err) and HOST in err
    code, out, err = invoke(
        "triage", mtls.url(), *mtls.pin(), "--cacert", str(pki.ca), "--cert", str(pki.client)
    )
    assert code == 0, err
    assert json.loads(out)["operations"][0]["status_codes"] == {"200": 2}


def test_insecure_skips_verification_with_a_warning(good: TlsServer) -> None:
    code, out, err = invoke("triage", good.url(), *good.pin(), "--insecure")
    assert code == 0, err
    assert "--insecure" in err and "not verified" in err
    assert json.loads(out)["operations"][0]["status_codes"] == {"200": 2}


def test_an_unreadable_cacert_is_a_usage_error(good: TlsServer, tmp_path: Path) -> None:
    code, _, err = invoke("triage", good.url(), *good.pin(), "--cacert", str(tmp_path / "no"))
    assert code == 2 and "--cacert" in one_sentence(err)


# -- headers and auth ------------------------------------------------------------------------
TOKEN = "s3cr3t-T0ken-abc123"
PASSWORD = "pa55-w0rd-xyz"
API_KEY = "k3y-from-env-789"


def test_bearer_from_env_reaches_the_server_and_is_redacted_in_load_outputs(
    good: TlsServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISISCTL_TEST_TOKEN", TOKEN)
    SEEN.clear()
    out_file, html = tmp_path / "r.json", tmp_path / "r.html"
    code, out, err = invoke(
        "load", good.url(), *good.pin(), "--cacert", str(pki.ca),
        "--bearer", "env:CRISISCTL_TEST_TOKEN", "-H", "X-Trace: visible-value",
        "--out", str(out_file), "--html", str(html),
    )  # fmt: skip
    assert code == 0, err
    assert SEEN and all(s["authorization"] == f"Bearer {TOKEN}" for s in SEEN)
    assert all(s["x-trace"] == "visible-value" for s in SEEN)
    for text in (out, err, out_file.read_text(), html.read_text()):
        assert TOKEN not in text
    scenario = json.loads(out)["config"]["scenario"]
    assert scenario["headers"]["Authorization"] == "[REDACTED]"
    assert scenario["headers"]["X-Trace"] == "visible-value"


def test_basic_and_secret_headers_reach_triage_and_validate_and_are_redacted(
    good: TlsServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISISCTL_TEST_KEY", API_KEY)
    flags = [*good.pin(), "--cacert", str(pki.ca), "--basic", f"ops:{PASSWORD}",
             "-H", "X-Api-Key: env:CRISISCTL_TEST_KEY"]  # fmt: skip
    for command in ("triage", "validate"):
        SEEN.clear()
        out_file = tmp_path / f"{command}.json"
        code, out, err = invoke(command, good.url(), *flags, "--out", str(out_file))
        assert code in (0, 1), err  # validate may fail checks: this app has no guard
        assert SEEN and all(s["x-api-key"] == API_KEY for s in SEEN)
        assert all(s["authorization"].startswith("Basic ") for s in SEEN)
        for text in (out, err, out_file.read_text()):
            assert PASSWORD not in text and API_KEY not in text


def test_a_missing_env_variable_is_a_usage_error(good: TlsServer) -> None:
    code, _, err = invoke("triage", good.url(), *good.pin(), "--bearer", "env:CRISISCTL_NOPE_X")
    assert code == 2
    assert "CRISISCTL_NOPE_X" in one_sentence(err)


@pytest.mark.parametrize("flag", [["--resolve", "api:x:1.2.3.4"], ["--resolve", "a:1:notip"]])
def test_a_bad_pin_is_a_usage_error(flag: list[str], good: TlsServer) -> None:
    code, _, err = invoke("triage", good.url(), *flag)
    assert code == 2 and "--resolve" in one_sentence(err)


def test_a_tls_failure_mid_run_is_its_own_error_kind(good: TlsServer, pki: Pki) -> None:
    """The preflight passed, then every handshake fails (here: a CA the server's certificate is
    not from): the run's breakdown says ``tls``, in JSON, text and HTML, never ``other``."""
    import asyncio

    from crisisctl.load.engine import RateSchedule, run_closed_ops
    from crisisctl.load.html_report import render_html
    from crisisctl.load.journey_client import JourneyClient
    from crisisctl.load.runbase import Operation
    from crisisctl.load.templates import FixedRequest
    from crisisctl.transport.client import RequestError, build_request
    from crisisctl.transport.settings import TransportSpec

    spec = TransportSpec(resolve=[f"{HOST}:{good.port}:127.0.0.1"], cacert=str(pki.other_ca))
    target = spec.target(good.url())
    op = Operation("GET /echo", FixedRequest(build_request(target, "GET", None, None)))
    result = asyncio.run(
        run_closed_ops(target, [op], users=RateSchedule.constant(2, 0.3), timeout_s=2.0)
    )
    data = result.to_dict()
    assert data["errors"]["tls"] == result.requests > 0, data["errors"]
    assert data["errors"]["other"] == 0 and data["errors"]["refused"] == 0
    assert f"tls: {result.requests}" in render_html({**data, "thresholds": [], "name": "t"})
    with pytest.raises(RequestError) as caught:
        asyncio.run(JourneyClient(target, 2.0).request("GET", "/echo", {}, None))
    assert caught.value.kind == "tls"


SCENARIO_WITH_ENV = """
base_url: {url}
headers:
  X-Tenant: env:CRISISCTL_TEST_TENANT
transport:
  resolve: ["{pin}"]
  cacert: env:CRISISCTL_TEST_CA
model: {{type: closed, users: 1, duration: 0.3s}}
operations:
  - path: /echo
    headers: {{X-Api-Key: "env:CRISISCTL_TEST_KEY"}}
"""


def test_env_values_in_a_scenario_file_reach_the_server_and_are_redacted(
    good: TlsServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = "tenant-{braces}-4711"  # sent as it is: not a template
    monkeypatch.setenv("CRISISCTL_TEST_TENANT", tenant)
    monkeypatch.setenv("CRISISCTL_TEST_KEY", API_KEY)
    monkeypatch.setenv("CRISISCTL_TEST_CA", str(pki.ca))
    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO_WITH_ENV.format(url=good.url(path=""), pin=f"{HOST}:{good.port}:127.0.0.1")
    )
    SEEN.clear()
    out_file, html = tmp_path / "r.json", tmp_path / "r.html"
    result = runner.invoke(
        cli, ["load", str(path), "--processes", "1", "--json", "--out", str(out_file),
              "--html", str(html)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    sent = [s for s in SEEN if "x-api-key" in s]  # (the preflight sends no scenario header)
    assert len(sent) == json.loads(result.stdout)["requests"] > 0
    assert all(s["x-tenant"] == tenant and s["x-api-key"] == API_KEY for s in sent)
    for text in (result.stdout, result.stderr, out_file.read_text(), html.read_text()):
        assert tenant not in text and tenant.replace("{", "{{") not in text
        assert API_KEY not in text and str(pki.ca) not in text
    scenario = json.loads(result.stdout)["config"]["scenario"]
    assert scenario["headers"]["X-Tenant"] == "[REDACTED]"


def test_a_missing_env_variable_in_a_scenario_file_is_one_error_at_its_line(
    good: TlsServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISISCTL_TEST_TENANT", "t")
    monkeypatch.setenv("CRISISCTL_TEST_CA", str(pki.ca))
    monkeypatch.delenv("CRISISCTL_TEST_KEY", raising=False)
    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO_WITH_ENV.format(url=good.url(path=""), pin=f"{HOST}:{good.port}:127.0.0.1")
    )
    result = runner.invoke(cli, ["load", str(path), "--processes", "1", "--json"])
    assert result.exit_code == 2
    text = one_sentence(result.stderr)
    assert f"{path}:11: operations[0].headers.X-Api-Key" in text
    assert "'CRISISCTL_TEST_KEY' is not set" in text
