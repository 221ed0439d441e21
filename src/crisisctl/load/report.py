"""The JSON load report: the result, the configuration, thresholds and the environment.

`build_report` assembles what ``crisisctl load --out`` writes and ``--json`` prints: every
field of `LoadResult.to_dict()` (``"report": "load"``, global and per-operation figures, the
per-second series, ``dropped``/``scheduled``/``dropped_rate``), plus ``config`` (the scenario
as run), ``planned_duration_s`` (the schedule's length, even when the run stopped early),
``arrival`` (open model: ``constant`` or ``poisson``; closed: None), ``thresholds`` (each with
its value and verdict), ``latency_spectrum_ms`` (the percentile spectrum the HTML report
draws), ``started_at``/``finished_at`` (ISO 8601 UTC) and ``environment`` (versions, cores).

`DROPPED_WARN_RATE`: above it a run's report says, in red, that it dropped arrivals.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from crisisctl import __version__
from crisisctl.load.recording import LoadResult
from crisisctl.load.scenario import OpenModel, Scenario
from crisisctl.load.thresholds import ThresholdResult
from crisisctl.stats import LatencyHistogram

__all__ = [
    "DROPPED_WARN_RATE",
    "SPECTRUM_PERCENTILES",
    "build_report",
    "dropped_warning",
    "environment",
    "spectrum",
    "utc_iso",
]

#: A run that dropped more than this share of its scheduled arrivals says so (in red).
DROPPED_WARN_RATE = 0.01

#: Percentiles of the spectrum: from the median to the max, denser in the tail.
SPECTRUM_PERCENTILES: tuple[float, ...] = (
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99,
    99.999, 100.0,
)  # fmt: skip


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2026-11-23T10:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Where the run happened: versions, platform, cores."""
    import crisisctl.stats

    return {
        "crisisctl_version": __version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "stats_compiled": not crisisctl.stats.__file__.endswith(".py"),
        "argv0": os.path.basename(sys.argv[0]) if sys.argv else None,
    }


def spectrum(hist: LatencyHistogram) -> list[dict[str, float]]:
    """[{percentile, latency_ms}] at `SPECTRUM_PERCENTILES` (empty without samples)."""
    if hist.count == 0:
        return []
    values = hist.percentiles(SPECTRUM_PERCENTILES)
    return [
        {"percentile": p, "latency_ms": v / 1000.0}
        for p, v in zip(SPECTRUM_PERCENTILES, values, strict=True)
    ]


def dropped_warning(report: Mapping[str, Any]) -> str | None:
    """One sentence when the run dropped more than `DROPPED_WARN_RATE` of its arrivals."""
    rate = float(report.get("dropped_rate") or 0.0)
    if rate <= DROPPED_WARN_RATE:
        return None
    dropped, scheduled = int(report.get("dropped", 0)), int(report.get("scheduled", 0))
    return (
        f"the load generator dropped {rate:.1%} of the scheduled arrivals ({dropped:,} of "
        f"{scheduled:,}): every connection was busy, so the service got less load than asked "
        "and the figures are not those of the rate asked; give more connections (or "
        "processes), or a lower rate."
    )


def build_report(
    result: LoadResult,
    *,
    scenario: Scenario,
    source: str,
    thresholds: Sequence[ThresholdResult],
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    """The whole JSON report of a run."""
    report = result.to_dict()
    model = scenario.model
    passed = all(t.passed for t in thresholds)
    report.update(
        {
            "name": scenario.name,
            "planned_duration_s": scenario.duration_s,
            "arrival": model.arrival if isinstance(model, OpenModel) else None,
            # what `operations` holds: a journey's steps, or weighted operations
            "grouping": "step" if scenario.steps else "operation",
            "started_at": utc_iso(started_at),
            "finished_at": utc_iso(finished_at),
            "config": {
                "source": source,
                "scenario": scenario.model_dump(mode="json", by_alias=True, exclude_none=True),
            },
            "thresholds": [t.as_dict() for t in thresholds],
            "thresholds_passed": passed,
            "latency_spectrum_ms": spectrum(result.latency),
            "environment": environment(),
        }
    )
    return report
