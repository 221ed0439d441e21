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
from crisisctl.watch.promrules import GeneratedRules, generate

__all__ = ["FILES", "Written", "render_files", "write_files"]

RULES: Final = "crisisctl-rules.yaml"
FILES: Final = (RULES,)


@dataclass(frozen=True)
class Written:
    """What `write_files` wrote: the paths, and the rules (alerts, skipped watch rules)."""

    paths: list[Path]
    rules: GeneratedRules


def render_files(config: WatchConfig) -> tuple[dict[str, str], GeneratedRules]:
    """Every file's text by name, and the generated rules."""
    rules = generate(config)
    return {RULES: rules.to_yaml()}, rules


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_files(config: WatchConfig, directory: Path) -> Written:
    """Write every file into `directory` (created if missing); OSError when it cannot be."""
    texts, rules = render_files(config)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = directory / name
        _write_atomic(path, text)
        paths.append(path)
    return Written(paths, rules)
