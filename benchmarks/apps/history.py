"""Every benchmark run kept: results files are JSON lists of runs, figures are medians of all.

The rule of `make bench`: store every run, report the median of all runs, never the best one.
A results file (``benchmarks/results/NAME.json``) is a JSON list whose items are whole run
documents, oldest first. A file written before this rule holds a single run document (a JSON
object): it becomes the first item of the list, so earlier results stay as history.

Smoke runs (``--quick``) are stored too, marked ``"quick": true``, but a median never counts
them: they are shorter and noisier by design. `median_across` reads one figure out of every
full run with a getter and returns the median with the values it was taken from (a run that
lacks the figure, e.g. from before a benchmark measured it, is skipped).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["append_run", "load_runs", "median_across", "print_median"]


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The stored runs of a results file, oldest first ([] when it does not exist yet)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        return [data]  # a file from before the rule: its one run is the first of the list
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"{path} is neither a run document nor a list of them")
    return data


def append_run(path: Path, doc: dict[str, Any], *, quick: bool = False) -> list[dict[str, Any]]:
    """Append `doc` (marked ``quick`` for smoke runs) to the runs of `path`; all the runs."""
    runs = load_runs(path)
    runs.append({**doc, "quick": quick})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(runs, indent=2) + "\n")
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
