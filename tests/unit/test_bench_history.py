"""Benchmark results keep every run, and the reported figure is the median of the full runs.

`benchmarks/apps/history.py`: a results file from before the rule (one run document) becomes
the first run of the list; quick (smoke) runs are stored but never counted in a median; a run
without the figure is skipped rather than failing the report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.history import append_run, load_runs, median_across


def test_an_old_single_run_file_becomes_the_first_run_of_the_list(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"figure": 3.0}))
    runs = append_run(path, {"figure": 5.0})
    assert [r["figure"] for r in runs] == [3.0, 5.0]
    assert [r["figure"] for r in load_runs(path)] == [3.0, 5.0]


def test_a_file_that_says_what_its_runs_are_keeps_saying_it(tmp_path: Path) -> None:
    """An experiments file ({"about", "runs"}) was read as one run and rewritten as
    [whole file, new run] by benchmarks/against_base.py (2026-12-07)."""
    path = tmp_path / "bench_experiments.json"
    path.write_text(json.dumps({"about": "side-by-side runs", "runs": [{"figure": 3.0}]}))
    assert [r["figure"] for r in load_runs(path)] == [3.0]
    runs = append_run(path, {"figure": 5.0})
    assert [r["figure"] for r in runs] == [3.0, 5.0]
    data = json.loads(path.read_text())
    assert data["about"] == "side-by-side runs"
    assert [r["figure"] for r in data["runs"]] == [3.0, 5.0]


def test_the_median_is_over_every_full_run_never_the_best(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    for value in (9.0, 4.0, 6.0):
        append_run(path, {"figure": value})
    append_run(path, {"figure": 1.0}, quick=True)  # a smoke run: stored, not counted
    append_run(path, {"other": 2.0})  # a run from before the figure existed
    med, values = median_across(load_runs(path), lambda run: run["figure"])
    assert values == [9.0, 4.0, 6.0]
    assert med == 6.0
    assert len(load_runs(path)) == 5


def test_no_full_run_gives_no_median(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    append_run(path, {"figure": 1.0}, quick=True)
    assert median_across(load_runs(path), lambda run: run["figure"]) == (None, [])
