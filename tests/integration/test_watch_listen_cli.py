"""`crisisctl watch FILE --listen HOST:PORT` as a real process: it refuses to start an intake
that is not safe or cannot listen (one sentence, exit 2), and otherwise serves the intake
beside the watch loop and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from guard_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "crisisctl.cli.main", "watch"]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "CRISISCTL_DB"}
    out.update(PYTHONPATH=str(ROOT / "src"), COLUMNS="300", LISTEN_TOKEN="listen-s3cret")
    return out


def watch_file(tmp_path: Path, intake: str) -> Path:
    path = tmp_path / "watch.yaml"
    path.write_text(
        f"interval: 1s\nstate_dir: {tmp_path / 'state'}\ndb: {tmp_path / 'i.db'}\n{intake}"
    )
    return path


@pytest.mark.parametrize(
    ("intake", "listen", "extra", "words"),
    [
        ("", "127.0.0.1:{port}", [], "has no credential"),
        ("intake: {allow_unauthenticated: true}\n", "0.0.0.0:{port}", [], "loopback listener"),
        ("intake: {bearer: env:LISTEN_TOKEN}\n", "nonsense", [], "is not HOST:PORT"),
        ("intake: {bearer: env:LISTEN_TOKEN}\n", "127.0.0.1:{taken}", [], "cannot listen"),
        ("intake: {bearer: env:UNSET_TOKEN_X}\n", "127.0.0.1:{port}", [], "UNSET_TOKEN_X"),
        ("intake: {bearer: env:LISTEN_TOKEN}\n", "127.0.0.1:{port}", ["--once"], "drop --once"),
    ],
)
def test_an_intake_that_cannot_be_safe_or_listen_is_refused_in_one_sentence(
    tmp_path: Path, intake: str, listen: str, extra: list[str], words: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = listen.format(port=free_port(), taken=taken.getsockname()[1])
        done = subprocess.run(
            [*CLI, str(watch_file(tmp_path, intake)), "--listen", address, *extra],
            env=env(), capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    message = done.stderr.decode().strip()
    assert done.returncode == 2, message
    assert words in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_the_intake_serves_beside_the_watch_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = watch_file(tmp_path, "intake: {bearer: env:LISTEN_TOKEN}\n")
    proc = subprocess.Popen(
        [*CLI, str(path), "--listen", f"127.0.0.1:{port}"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        with httpx.Client(trust_env=False, timeout=2) as client:
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    if client.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.1)
            body = {"version": "4", "alerts": []}
            refused = client.post(f"{url}/api/v1/alertmanager", json=body)
            accepted = client.post(
                f"{url}/api/v1/alertmanager",
                json=body,
                headers={"Authorization": "Bearer listen-s3cret"},
            )
        assert (refused.status_code, accepted.status_code) == (401, 200)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
        assert f"intake listening on {url}/api/v1/alertmanager" in err.decode()
        assert "listen-s3cret" not in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
