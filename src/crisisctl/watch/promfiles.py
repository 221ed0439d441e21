"""The files `crisisctl rules generate` writes, from one watch file, into one directory.

`FILES` names them; `write_files(config, directory)` builds every document first and only
then writes each file atomically (a temporary file renamed over it), so a failure leaves the
directory as it was. The documents come from ``promrules`` (rules), ``promtests`` (the
``promtool test rules`` file), ``promconfig`` (Alertmanager and scrape configuration) and
``grafana`` (the dashboard).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from crisisctl.watch.config import WatchConfig
from crisisctl.watch.grafana import dashboard_json
from crisisctl.watch.promconfig import (
    SECRETS_DIR,
    IntakeTarget,
    alertmanager_config,
    prometheus_config,
)
from crisisctl.watch.promrules import GeneratedRules, generate
from crisisctl.watch.promtests import promtool_tests

__all__ = [
    "ALERTMANAGER",
    "DASHBOARD",
    "FILES",
    "RULES",
    "SCRAPE",
    "TESTS",
    "Written",
    "render_files",
    "write_files",
]

RULES: Final = "crisisctl-rules.yaml"
TESTS: Final = "crisisctl-rules.test.yaml"
ALERTMANAGER: Final = "alertmanager.yml"
SCRAPE: Final = "prometheus-scrape.yml"
DASHBOARD: Final = "grafana-dashboard.json"
FILES: Final = (RULES, TESTS, ALERTMANAGER, SCRAPE, DASHBOARD)


@dataclass(frozen=True)
class Written:
    """What `write_files` wrote: the paths, the rules (alerts, skipped watch rules) and the
    alerts the promtool test file cannot prove."""

    paths: list[Path]
    rules: GeneratedRules
    unproven: list[str]


def render_files(
    config: WatchConfig, intake: IntakeTarget | None = None, secrets_dir: str = SECRETS_DIR
) -> tuple[dict[str, str], GeneratedRules, list[str]]:
    """Every file's text by name, the generated rules, and what the tests cannot prove."""
    rules = generate(config)
    tests = promtool_tests(config, rules, RULES)
    texts = {
        RULES: rules.to_yaml(),
        TESTS: tests.to_yaml(),
        ALERTMANAGER: alertmanager_config(rules, intake or IntakeTarget()),
        SCRAPE: prometheus_config(config, RULES, secrets_dir=secrets_dir),
        DASHBOARD: dashboard_json(),
    }
    return texts, rules, tests.unproven


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_files(
    config: WatchConfig,
    directory: Path,
    intake: IntakeTarget | None = None,
    secrets_dir: str = SECRETS_DIR,
) -> Written:
    """Write every file into `directory` (created if missing); OSError when it cannot be."""
    texts, rules, unproven = render_files(config, intake, secrets_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = directory / name
        _write_atomic(path, text)
        paths.append(path)
    return Written(paths, rules, unproven)
