"""`crisisctl guard status|mode` reach a guard over TLS like every command, on loopback only.

A guarded Starlette app is served by uvicorn over TLS with certificates from a private CA made
by `trustme`, under the name ``guard.test.local`` that the commands reach through
``--resolve guard.test.local:PORT:127.0.0.1`` (nothing is resolved or sent off this machine).
The guard trusts no network, so its token must reach it; an outer recorder keeps the headers
of every request. Also checked: the call watch's ``guard_mode`` action makes
(`probe.guard_mode.switch_mode` with pins and a `TransportSpec`) goes over the same path.
"""

from __future__ import annotations

import asyncio
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
from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.types import Receive, Scope, Send
from crisisctl.probe.guard_mode import GuardModeError, switch_mode
from crisisctl.transport.settings import TransportSpec
from crisisctl.watch.actions import ActionContext, run_action
from crisisctl.watch.model import GuardEndpoint
from crisisctl.watch.respond_config import GuardModeAction

HOST = "guard.test.local"
WRITE_TOKEN = "w-tok3n-Guard-4242"
READ_TOKEN = "r-tok3n-Guard-1717"
runner = CliRunner()
#: the headers of every request the server got (name lower-cased -> value), with its path
SEEN: list[tuple[str, dict[str, str]]] = []


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


class Recorder:
    """Outer ASGI layer: keep each HTTP request's path and headers, then call the guard."""

    def __init__(self, inner: Guard) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            SEEN.append((scope["path"], headers))
        await self.inner(scope, receive, send)


def guarded_app() -> Recorder:
    config = GuardConfig.from_dict(
        {"token": WRITE_TOKEN, "read_token": READ_TOKEN, "control_networks": []}
    )
    return Recorder(Guard(Starlette(routes=[Route("/ok", ok)]), config))


class TlsGuard:
    """uvicorn serving a guarded app over TLS on a free loopback port, in a background thread."""

    def __init__(self, cert: Path, ca: Path | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        extra = {"ssl_ca_certs": str(ca), "ssl_cert_reqs": ssl.CERT_REQUIRED} if ca else {}
        config = uvicorn.Config(
            guarded_app(), host="127.0.0.1", port=self.port, log_level="critical",
            access_log=False, lifespan="off", ssl_certfile=str(cert), ssl_keyfile=str(cert),
            **extra,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def pin(self) -> str:
        return f"{HOST}:{self.port}:127.0.0.1"

    def __enter__(self) -> TlsGuard:
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
    leaf: Path
    client: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(root / "ca.pem")
    ca.issue_cert(HOST).private_key_and_cert_chain_pem.write_to_path(root / "leaf.pem")
    client = ca.issue_cert("ops@test.local").private_key_and_cert_chain_pem
    client.write_to_path(root / "client.pem")
    return Pki(root / "ca.pem", root / "leaf.pem", root / "client.pem")


@pytest.fixture(scope="module")
def guard(pki: Pki) -> Iterator[TlsGuard]:
    with TlsGuard(pki.leaf) as server:
        yield server


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {"CRISISCTL_GUARD_TOKEN": "", "CRISISCTL_GUARD_READ_TOKEN": ""}
    result = runner.invoke(cli, ["guard", *args], env={**base, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def one_sentence(stderr: str) -> str:
    assert "Traceback" not in stderr
    assert stderr.count("error:") == 1, stderr
    text = " ".join(stderr.split())
    assert text.endswith("."), text
    return text


def test_status_over_tls_with_a_pinned_name_an_env_token_and_a_header(
    guard: TlsGuard, pki: Pki
) -> None:
    SEEN.clear()
    code, out, err = invoke(
        "status", guard.url, "--resolve", guard.pin, "--cacert", str(pki.ca),
        "--token", "env:GUARD_READ", "-H", "X-Trace: guardcli-1", "--json",
        env={"GUARD_READ": READ_TOKEN},
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["service"] == "crisisctl-guard"
    status = [headers for path, headers in SEEN if path == "/_crisis/status"]
    assert len(status) == 1
    assert status[0]["authorization"] == f"Bearer {READ_TOKEN}"
    assert status[0]["x-trace"] == "guardcli-1"
    assert status[0]["host"] == f"{HOST}:{guard.port}"  # the pinned name, not the address
    assert READ_TOKEN not in out + err
    # the human view too
    code, out, err = invoke(
        "status", guard.url, "--resolve", guard.pin, "--cacert", str(pki.ca),
        "--token", READ_TOKEN,
    )  # fmt: skip
    assert code == 0, err
    assert "mode" in out and "normal" in out and READ_TOKEN not in out + err


def test_mode_over_tls_switches_and_never_shows_the_token(guard: TlsGuard, pki: Pki) -> None:
    flags = ["--resolve", guard.pin, "--cacert", str(pki.ca), "--token", "env:GUARD_WRITE"]
    env = {"GUARD_WRITE": WRITE_TOKEN}
    SEEN.clear()
    code, out, err = invoke("mode", guard.url, "emergency", *flags, "-H", "X-Trace: m", env=env)
    assert code == 0, err
    assert "guard mode is now emergency" in out and WRITE_TOKEN not in out + err
    posted = [headers for path, headers in SEEN if path == "/_crisis/mode"]
    assert posted and posted[-1]["authorization"] == f"Bearer {WRITE_TOKEN}"
    assert posted[-1]["x-trace"] == "m"
    code, out, err = invoke("mode", guard.url, "normal", *flags, "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["mode"] == "normal" and WRITE_TOKEN not in out + err


@pytest.mark.parametrize("command", [["status"], ["mode", "--token", WRITE_TOKEN]])
def test_an_unknown_ca_is_one_sentence_and_exit_3(command: list[str], guard: TlsGuard) -> None:
    verb, *rest = command
    args = [verb, guard.url, *(["emergency"] if verb == "mode" else []), *rest]
    code, out, err = invoke(*args, "--resolve", guard.pin)
    assert code == 3, err
    text = one_sentence(err)
    assert f"certificate of {HOST}" in text and "unknown certificate authority" in text
    assert WRITE_TOKEN not in out + err


def test_a_guard_requiring_a_client_certificate(pki: Pki) -> None:
    with TlsGuard(pki.leaf, ca=pki.ca) as mtls:
        flags = ["--resolve", mtls.pin, "--cacert", str(pki.ca), "--token", READ_TOKEN, "--json"]
        code, _, err = invoke("status", mtls.url, *flags)
        assert code == 3, err
        assert "requires a client certificate" in one_sentence(err) and HOST in err
        code, out, err = invoke("status", mtls.url, *flags, "--cert", str(pki.client))
        assert code == 0, err
        assert json.loads(out)["service"] == "crisisctl-guard"


def test_insecure_reaches_the_guard_with_a_warning(guard: TlsGuard) -> None:
    code, out, err = invoke(
        "status", guard.url, "--resolve", guard.pin, "--insecure", "--token", READ_TOKEN, "--json"
    )
    assert code == 0, err
    assert "--insecure" in err and "not verified" in err
    assert json.loads(out)["service"] == "crisisctl-guard"


def test_token_mistakes_are_one_sentence_and_never_echo_the_token(
    guard: TlsGuard, pki: Pki
) -> None:
    flags = ["--resolve", guard.pin, "--cacert", str(pki.ca)]
    code, _, err = invoke("status", guard.url, *flags, "--token", "env:GUARDCLI_NOPE")
    assert code == 2 and "GUARDCLI_NOPE" in one_sentence(err)
    wrong = "wrong-token-0000"
    code, out, err = invoke("mode", guard.url, "emergency", *flags, "--token", wrong)
    assert code == 2 and "refused the switch (HTTP 401)" in err
    assert wrong not in out + err and "Traceback" not in err
    code, _, err = invoke("status", guard.url, *flags, "--token", "a", "--bearer", "b")
    assert code == 2 and "not both" in one_sentence(err)


def test_bearer_is_the_token_and_wins_over_the_token_variable(guard: TlsGuard, pki: Pki) -> None:
    flags = ["--resolve", guard.pin, "--cacert", str(pki.ca), "--bearer", "env:GUARDCLI_GW"]
    env = {"GUARDCLI_GW": WRITE_TOKEN, "CRISISCTL_GUARD_TOKEN": "stale-token-from-env"}
    SEEN.clear()
    code, out, err = invoke("mode", guard.url, "emergency", *flags, env=env)
    assert code == 0, err
    posted = [headers for path, headers in SEEN if path == "/_crisis/mode"]
    assert posted and posted[-1]["authorization"] == f"Bearer {WRITE_TOKEN}"
    assert WRITE_TOKEN not in out + err
    code, _, err = invoke("mode", guard.url, "normal", *flags, env=env)
    assert code == 0, err


def test_the_watch_call_uses_the_same_transport(guard: TlsGuard, pki: Pki) -> None:
    async def switch(spec: TransportSpec) -> dict[str, object]:
        return await switch_mode(
            guard.url, "recovering", token=WRITE_TOKEN, reason="watch", actor="watch",
            resolve=(guard.pin,), transport=spec, timeout_s=5.0,
        )  # fmt: skip

    with pytest.raises(GuardModeError) as info:
        asyncio.run(switch(TransportSpec()))
    assert info.value.unreachable and "unknown certificate authority" in str(info.value)
    assert WRITE_TOKEN not in str(info.value)
    data = asyncio.run(switch(TransportSpec(cacert=str(pki.ca))))
    assert data["mode"] == "recovering"
    asyncio.run(
        switch_mode(
            guard.url, "normal", token=WRITE_TOKEN, resolve=(guard.pin,),
            transport=TransportSpec(cacert=str(pki.ca)),
        )
    )  # fmt: skip


def test_the_watch_action_reaches_a_private_ca_guard_with_its_headers(
    guard: TlsGuard, pki: Pki
) -> None:
    endpoint = GuardEndpoint(
        guard.url, token=WRITE_TOKEN, resolve=(guard.pin,),
        transport=TransportSpec(cacert=str(pki.ca)), headers=(("x-watch-tenant", "blue"),),
    )  # fmt: skip
    ctx = ActionContext(
        incident_id=1, service="api", rule="slow", severity="P1", level=1, alert={},
        guards=(endpoint,),
    )  # fmt: skip
    SEEN.clear()
    outcome = asyncio.run(run_action(GuardModeAction(guard_mode="emergency"), ctx))
    assert outcome.ok, outcome
    posted = [headers for path, headers in SEEN if path == "/_crisis/mode"]
    assert posted and posted[-1]["x-watch-tenant"] == "blue"
    assert WRITE_TOKEN not in repr(endpoint) + repr(outcome)
    untrusted = ActionContext(
        incident_id=1, service="api", rule="slow", severity="P1", level=1, alert={},
        guards=(GuardEndpoint(guard.url, token=WRITE_TOKEN, resolve=(guard.pin,)),),
    )  # fmt: skip
    failed = asyncio.run(run_action(GuardModeAction(guard_mode="normal"), untrusted))
    assert not failed.ok and "certificate" in repr(failed)
    asyncio.run(run_action(GuardModeAction(guard_mode="normal"), ctx))


def test_a_watch_file_s_directory_reaches_a_private_ca_guard(
    guard: TlsGuard, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory `crisisctl watch` builds from its file carries the service's TLS options,
    pins and headers into the action (as scraped and as found by a scrape)."""
    from crisisctl.watch.config import Directory, parse_watch_text
    from crisisctl.watch.scrape import Scraper

    monkeypatch.setenv("WATCH_TLS_TOKEN", WRITE_TOKEN)
    monkeypatch.setenv("WATCH_TLS_TENANT", "green")
    config = parse_watch_text(
        f'services:\n  api:\n    guards: ["{guard.url}"]\n    token: env:WATCH_TLS_TOKEN\n'
        f'    transport: {{cacert: "{pki.ca}", resolve: ["{guard.pin}"]}}\n'
        '    headers: {x-watch-tenant: "env:WATCH_TLS_TENANT"}\n',
        "w.yaml",
    )
    directory = Directory(config)
    scraper = Scraper(config)
    asyncio.run(scraper.instances())
    for guards in (directory.guards("api"), scraper.discovered["api"]):
        time.sleep(1.1)  # the control surface allows 10 calls a second per client
        ctx = ActionContext(
            incident_id=1, service="api", rule="slow", severity="P1", level=1, alert={},
            guards=tuple(guards),
        )  # fmt: skip
        SEEN.clear()
        outcome = asyncio.run(run_action(GuardModeAction(guard_mode="emergency"), ctx))
        assert outcome.ok, outcome
        posted = [headers for path, headers in SEEN if path == "/_crisis/mode"]
        assert posted and posted[-1]["x-watch-tenant"] == "green"
        asyncio.run(run_action(GuardModeAction(guard_mode="normal"), ctx))
