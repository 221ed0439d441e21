"""`crisisctl serve` refuses bad or open configurations in one sentence (exit 2) and
`crisisctl serve hash-password` prints a hash the serve file accepts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crisisctl.cli.main import app
from crisisctl.server.auth import verify_password
from crisisctl.server.settings import parse_serve_text

runner = CliRunner()


def _one_sentence(output: str) -> str:
    """The error, unwrapped (Rich wraps at the terminal's width): one "error:" line."""
    assert output.startswith("error: ") and output.count("error:") == 1, output
    assert "Traceback" not in output
    return " ".join(line.strip() for line in output.splitlines() if line.strip())


def test_hash_password_prints_a_scrypt_hash_the_serve_file_accepts() -> None:
    result = runner.invoke(app, ["serve", "hash-password"], input="hunter2hunter2\n")
    assert result.exit_code == 0, result.output
    encoded = result.output.strip()
    assert verify_password("hunter2hunter2", encoded)
    config = parse_serve_text(f'users: [{{name: bob, password_hash: "{encoded}"}}]', "s.yaml")
    assert config.users[0].password_hash == encoded
    short = runner.invoke(app, ["serve", "hash-password"], input="short\n")
    assert short.exit_code == 2 and "shorter than 8" in short.output


def test_serve_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no tokens or users are configured" in _one_sentence(result.output)
    anywhere = runner.invoke(app, ["serve", "--allow-anonymous-viewer", "--listen", "0.0.0.0:0"])
    assert anywhere.exit_code == 2
    assert "only on a loopback address" in _one_sentence(anywhere.output)


def test_a_bad_serve_file_names_the_line_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("listen: 127.0.0.1:0\nevents: {buffer: 0}\n")
    result = runner.invoke(app, ["serve", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2: events.buffer: " in _one_sentence(result.output).replace("\n", "")
    missing = runner.invoke(app, ["serve", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot be read" in _one_sentence(missing.output)


def test_a_bad_watch_file_or_a_busy_port_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVE_CLI_TOKEN", "serve-cli-token-0123456789")
    (tmp_path / "watch.yaml").write_text("interval: never\n")
    path = tmp_path / "serve.yaml"
    base = (
        f"state_dir: {tmp_path / 'state'}\ndb: sqlite:///{tmp_path / 'i.db'}\n"
        "tokens: [{name: a, token: env:SERVE_CLI_TOKEN, role: operator}]\n"
    )
    path.write_text(base + "watch: watch.yaml\n")
    result = runner.invoke(app, ["serve", str(path)])
    assert result.exit_code == 2
    assert "watch.yaml:1: interval:" in _one_sentence(result.output)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        path.write_text(base + f"listen: 127.0.0.1:{port}\n")
        taken = runner.invoke(app, ["serve", str(path)])
    assert taken.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in _one_sentence(taken.output)


def test_flags_override_the_file_and_users_files_add_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crisisctl.cli.serve import _settings

    monkeypatch.setenv("SERVE_CLI_TOKEN", "serve-cli-token-0123456789")
    path = tmp_path / "conf" / "serve.yaml"
    path.parent.mkdir()
    path.write_text("listen: 127.0.0.1:9000\nwatch: w.yaml\nstate_dir: st\n")
    users = tmp_path / "users.yaml"
    users.write_text("tokens: [{name: ops, token: env:SERVE_CLI_TOKEN, role: operator}]\n")
    settings = _settings(str(path), "127.0.0.1:9100", None, users, None, None, False)
    assert settings.port == 9100
    assert settings.watch_path == path.parent / "w.yaml"
    assert settings.state_dir == path.parent / "st"
    assert settings.tokens == {"serve-cli-token-0123456789": ("ops", "operator")}
    assert settings.problem() is None


def test_an_error_naming_a_long_path_stays_on_one_line(tmp_path: Path) -> None:
    """Rich wraps at 80 columns off a terminal: the path was cut mid-name (``serve.yam`` /
    ``l``), which no one can copy or grep (seen under pytest-xdist's longer tmp paths)."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "serve.yaml"
    result = runner.invoke(app, ["serve", str(deep)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and str(deep) in result.output, result.output
