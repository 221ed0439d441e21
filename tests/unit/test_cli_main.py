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


def test_load_imports_nothing_a_run_of_operations_does_not_need() -> None:
    """`crisisctl load URL` is measured as a whole process (start-up included): the guard,
    httpx (login steps only), jinja2 (--html only), rich.live (a terminal only) and the
    journey modules stay out of its imports."""
    code = (
        "import sys\n"
        "from crisisctl.cli.main import app\n"
        "try:\n"
        "    app(['load', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'crisisctl.cli.load' in sys.modules\n"
        "heavy = [m for m in ('crisisctl.guard', 'httpx', 'jinja2', 'rich.live', 'jmespath',"
        " 'crisisctl.load.journey', 'prometheus_client') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_the_package_still_exports_the_guard_lazily() -> None:
    import crisisctl
    from crisisctl.guard import Guard, GuardConfig, track

    assert (crisisctl.Guard, crisisctl.GuardConfig, crisisctl.track) == (Guard, GuardConfig, track)
    with pytest.raises(AttributeError):
        crisisctl.no_such_name  # noqa: B018


def test_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2
