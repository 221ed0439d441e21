"""Compare two JSON load reports: each figure before and after, as a ratio and a percentage.

For latency (p50, p95, p99, max) and the error rate lower is better: ratio = before ÷ after
and improvement = (before − after) ÷ before × 100 — so 25 minutes → 30 seconds is a ratio
of 50 and a 98 % improvement, as the seeds count it. For throughput (requests/s) higher is
better: ratio = after ÷ before, improvement = (after − before) ÷ before × 100. Either way a
ratio above 1 and a positive percentage mean "better". Both are None when undefined (a zero
denominator). Operations present in both reports are compared too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "ReportError", "Row", "compare_reports", "improvement", "load_report"]

#: (key, label, unit, lower is better)
FIGURES: tuple[tuple[str, str, str, bool], ...] = (
    ("p50", "p50 latency", "ms", True),
    ("p95", "p95 latency", "ms", True),
    ("p99", "p99 latency", "ms", True),
    ("max", "max latency", "ms", True),
    ("error_rate", "error rate", "%", True),
    ("rps", "requests/s", "req/s", False),
)


class ReportError(ValueError):
    """A file that cannot be read as a crisisctl load report."""


@dataclass(frozen=True, slots=True)
class Row:
    """One figure of one scope (the whole run, or an operation) before and after."""

    scope: str | None
    figure: str
    label: str
    unit: str
    before: float
    after: float
    ratio: float | None
    improvement_pct: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "operation": self.scope,
            "figure": self.figure,
            "unit": self.unit,
            "before": self.before,
            "after": self.after,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "improvement_pct": (
                None if self.improvement_pct is None else round(self.improvement_pct, 2)
            ),
        }


def improvement(
    before: float, after: float, lower_is_better: bool
) -> tuple[float | None, float | None]:
    """(ratio, improvement %) of a change; each None when its denominator is zero."""
    if before == after:
        return 1.0, 0.0
    if lower_is_better:
        ratio = before / after if after else None
        pct = (before - after) / before * 100.0 if before else None
    else:
        ratio = after / before if before else None
        pct = (after - before) / before * 100.0 if before else None
    return ratio, pct


def load_report(path: Path) -> dict[str, Any]:
    """Read a report written by ``crisisctl load --out``; ReportError says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist.") from None
    except OSError as exc:
        raise ReportError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReportError(f"{path} is not JSON, so not a crisisctl load report.") from None
    if not isinstance(data, dict) or data.get("report") != "load":
        raise ReportError(
            f"{path} is not a crisisctl load report (write one with crisisctl load --out)."
        )
    try:
        _figures(data)
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{path} is a load report with missing or invalid figures.") from None
    return data


def _figures(scope: Mapping[str, Any]) -> dict[str, float]:
    latency = scope["latency_ms"]
    out = {key: float(latency[key]) for key in ("p50", "p95", "p99", "max")}
    out["error_rate"] = float(scope["error_rate"]) * 100.0
    out["rps"] = float(scope["requests_per_second"])
    return out


def _rows(scope: str | None, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Row]:
    b, a = _figures(before), _figures(after)
    rows = []
    for key, label, unit, lower in FIGURES:
        ratio, pct = improvement(b[key], a[key], lower)
        rows.append(Row(scope, key, label, unit, b[key], a[key], ratio, pct))
    return rows


def compare_reports(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Row]:
    """Rows for the whole run, then for each operation both reports have (when either report
    has several operations: a single operation's figures are the run's)."""
    rows = _rows(None, before, after)
    ops_before = before.get("operations") or {}
    ops_after = after.get("operations") or {}
    if len(ops_before) < 2 and len(ops_after) < 2:
        return rows
    for name in ops_before:
        if name in ops_after:
            try:
                rows += _rows(name, ops_before[name], ops_after[name])
            except (KeyError, TypeError, ValueError):
                continue  # an operation without figures (e.g. an older report) is skipped
    return rows
