"""`crisisctl guard mode`'s failures stay one sentence with the right exit code now that the call
lives in `crisisctl.probe.guard_mode` (shared with watch's guard_mode action)."""

from __future__ import annotations

from guard_servers import free_port, guard_servers
from typer.testing import CliRunner

from crisisctl.cli.main import app

RUNNER = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, ["guard", "mode", *args], env={"CRISISCTL_GUARD_TOKEN": ""})
    return result.exit_code, result.output


def test_usage_unreachable_and_refused() -> None:
    code, out = run("ftp://x", "emergency", "--token", "t")
    assert code == 2 and "is not an http(s) URL" in out
    code, out = run("http://127.0.0.1:1", "panic", "--token", "t")
    assert code == 2 and "unknown mode 'panic'" in out
    code, out = run("http://127.0.0.1:1", "emergency")
    assert code == 2 and "no token given" in out
    port = free_port()  # nothing listens there
    code, out = run(f"http://127.0.0.1:{port}", "emergency", "--token", "t", "--timeout", "2")
    assert code == 3 and "could not reach" in out
    with guard_servers({"token": "right"}) as (server,):
        code, out = run(server.url, "emergency", "--token", "not-the-token")
        assert code == 2 and "refused the switch (HTTP 40" in out and "not-the-token" not in out
        code, out = run(server.url, "emergency", "--token", "right", "--reason", "test")
        assert code == 0 and "guard mode is now emergency" in out
    assert "Traceback" not in out
