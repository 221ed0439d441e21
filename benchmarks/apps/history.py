"""Every benchmark run kept: results files are JSON lists of runs, figures are medians of all.

The rule of `make bench`: store every run, report the median of all runs, never the best one.
A results file (``benchmarks/results/NAME.json``) is a JSON list whose items are whole run
documents, oldest first. A file written before this rule holds a single run document (a JSON
object): it becomes the first item of the list, so earlier results stay as history. A file
whose object says what its runs are (``{"about": ..., "runs": [...]}``, the experiments files)
keeps that shape: its runs are the list, and a new run is appended to them.

Smoke runs (``--quick``) are stored too, marked ``"quick": true``, but a median never counts
them: they are shorter and noisier by design. `median_across` reads one figure out of every
full run with a getter and returns the median with the values it was taken from (a run that
lacks the figure, e.g. from before a benchmark measured it, is skipped).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["append_run", "code_fingerprint", "load_runs", "median_across", "print_median"]

ROOT = Path(__file__).resolve().parent.parent.parent


def code_fingerprint(*patterns: str) -> str:
    """A short hash of the files matching `patterns` (globs under the repository root): runs
    with the same fingerprint measured the same code, so their median is one figure; a run of
    earlier code stays in the history but is not mixed into today's median."""
    digest = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file():
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The stored runs of a results file, oldest first ([] when it does not exist yet)."""
    return _read(path)[0]


def _read(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The stored runs of `path`, and the annotated object holding them (None: a plain list)."""
    if not path.exists():
        return [], None
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        runs = data.get("runs")
        if isinstance(runs, list) and all(isinstance(item, dict) for item in runs):
            return list(runs), data  # an annotated list of runs
        return [data], None  # a file from before the rule: its one run is the first of the list
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"{path} is neither a run document nor a list of them")
    return data, None


def append_run(path: Path, doc: dict[str, Any], *, quick: bool = False) -> list[dict[str, Any]]:
    """Append `doc` (marked ``quick`` for smoke runs) to the runs of `path`; all the runs."""
    runs, annotated = _read(path)
    runs.append({**doc, "quick": quick})
    # (an annotated file keeps what it says about its runs)
    stored: Any = runs if annotated is None else {**annotated, "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(stored, indent=2) + "\n")
    tmp.replace(path)
    return runs


def median_across(
    runs: list[dict[str, Any]], getter: Callable[[dict[str, Any]], float | None]
) -> tuple[float | None, list[float]]:
    """(median, values) of one figure over every full (not quick) run that has it."""
    values: list[float] = []
    for run in runs:
        if run.get("quick"):
            continue
        try:
            value = getter(run)
        except (KeyError, TypeError, IndexError):
            value = None
        if isinstance(value, int | float):
            values.append(float(value))
    return (statistics.median(values) if values else None), values


def print_median(
    label: str,
    runs: list[dict[str, Any]],
    getter: Callable[[dict[str, Any]], float | None],
    unit: str = "",
) -> float | None:
    """Print ``label: median M over N stored runs (v1, v2, …)``; return the median."""
    med, values = median_across(runs, getter)
    if med is None:
        print(f"{label}: no full run stored yet (quick runs are not counted)")
        return None
    listed = ", ".join(f"{v:.2f}" for v in values)
    print(f"{label}: median {med:.2f}{unit} over {len(values)} stored full run(s) ({listed})")
    return med
