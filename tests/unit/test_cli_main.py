"""The root command: every command listed, each imported only when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from crisisctl.cli.main import COMMANDS, app

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name, spec in COMMANDS.items():
        assert name in result.output
        assert spec.summary.split(":")[0][:20] in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_resolves_and_has_help(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "--install-completion" not in result.output


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys\n"
        "from crisisctl.cli.main import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('sqlalchemy', 'pydantic', 'jinja2', 'crisisctl.cli.load',"
        " 'crisisctl.incidents') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2
