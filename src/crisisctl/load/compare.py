"""Compare two JSON load reports: each figure before and after, as a ratio and a percentage.

Only runs of the same test compare: `mismatches` lists what differs between two reports —
URL, methods, model, rate (open model: the target rate; closed model: the users), planned
duration, arrivals — and `mismatch_sentence` says it in one sentence (``crisisctl compare``
refuses such a pair unless ``--allow-mismatch``).

For latency (p50, p95, p99, max), the error rate and the dropped rate (open model: arrivals
the generator could not send ÷ arrivals scheduled; whole run only) lower is better:
ratio = before ÷ after and improvement = (before − after) ÷ before × 100 — so 25 minutes →
30 seconds is a ratio of 50 and a 98 % improvement, as the seeds count it. For throughput
(requests/s) higher is better: ratio = after ÷ before, improvement = (after − before) ÷
before × 100. Either way a ratio above 1 and a positive percentage mean "better". Both are
None when undefined (a zero denominator). Operations present in both reports are compared
too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FIGURES",
    "Mismatch",
    "ReportError",
    "Row",
    "compare_reports",
    "describe",
    "dropped_pct",
    "improvement",
    "load_report",
    "mismatch_sentence",
    "mismatches",
]

#: (key, label, unit, lower is better)
FIGURES: tuple[tuple[str, str, str, bool], ...] = (
    ("p50", "p50 latency", "ms", True),
    ("p95", "p95 latency", "ms", True),
    ("p99", "p99 latency", "ms", True),
    ("max", "max latency", "ms", True),
    ("error_rate", "error rate", "%", True),
    ("dropped_rate", "dropped arrivals", "%", True),
    ("rps", "requests/s", "req/s", False),
)
#: Two rates (or durations) closer than this, relatively, are the same.
_SAME = 1e-6


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


def dropped_pct(report: Mapping[str, Any]) -> float:
    """The whole run's dropped arrivals in % of those scheduled (reports before
    ``dropped_rate`` existed: from ``dropped`` and ``requests``; 0 without either)."""
    if "dropped_rate" in report:
        return float(report["dropped_rate"]) * 100.0
    dropped = int(report.get("dropped") or 0)
    scheduled = int(report.get("requests") or 0) + dropped
    return dropped / scheduled * 100.0 if scheduled else 0.0


def _figures(scope: Mapping[str, Any], run: bool = True) -> dict[str, float]:
    latency = scope["latency_ms"]
    out = {key: float(latency[key]) for key in ("p50", "p95", "p99", "max")}
    out["error_rate"] = float(scope["error_rate"]) * 100.0
    if run:
        out["dropped_rate"] = dropped_pct(scope)
    out["rps"] = float(scope["requests_per_second"])
    return out


def _rows(scope: str | None, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Row]:
    b, a = _figures(before, scope is None), _figures(after, scope is None)
    rows = []
    for key, label, unit, lower in FIGURES:
        if key not in b:
            continue  # an operation has no dropped arrivals of its own
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


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing two reports' runs differ in, as the user would write it."""

    field: str
    before: str
    after: str

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"field": self.field, "before": self.before, "after": self.after}

    def phrase(self) -> str:
        """e.g. ``rate (100/s vs 200/s)``."""
        return f"{self.field} ({self.before} vs {self.after})"


def _num(value: float) -> str:
    return f"{value:,.6g}"


def _methods(report: Mapping[str, Any]) -> str | None:
    ops = report.get("operations")
    if not isinstance(ops, Mapping) or not ops:
        return None
    methods = sorted({str(op.get("method", "GET")).upper() for op in ops.values()})
    return ", ".join(methods)


def _differ(a: float, b: float) -> bool:
    return abs(a - b) > _SAME * max(abs(a), abs(b), 1e-9)


def mismatches(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Mismatch]:
    """What differs between the runs of two reports: URL, methods, model, rate (open model)
    or users (closed model), planned duration and arrivals; empty for runs of one test."""
    out: list[Mismatch] = []
    for field, key in (("URL", "url"), ("model", "model")):
        b, a = str(before.get(key)), str(after.get(key))
        if b != a:
            out.append(Mismatch(field, b, a))
    mb, ma = _methods(before), _methods(after)
    if mb is not None and ma is not None and mb != ma:
        out.append(Mismatch("method", mb, ma))
    same_model = before.get("model") == after.get("model")
    if same_model and before.get("model") == "open":
        rb, ra = float(before.get("target_rate") or 0), float(after.get("target_rate") or 0)
        if _differ(rb, ra):
            out.append(Mismatch("rate", f"{_num(rb)}/s", f"{_num(ra)}/s"))
    elif same_model and before.get("model") == "closed":
        ub, ua = int(before.get("users") or 0), int(after.get("users") or 0)
        if ub != ua:
            out.append(Mismatch("users", str(ub), str(ua)))
    db = float(before.get("planned_duration_s") or before.get("duration_s") or 0)
    da = float(after.get("planned_duration_s") or after.get("duration_s") or 0)
    if _differ(db, da):
        out.append(Mismatch("duration", f"{_num(db)} s", f"{_num(da)} s"))
    if same_model and before.get("model") == "open":
        ab = str(before.get("arrival") or "constant")
        aa = str(after.get("arrival") or "constant")
        if ab != aa:
            out.append(Mismatch("arrivals", ab, aa))
    return out


def describe(found: list[Mismatch]) -> str:
    """The differences as a phrase: ``rate (100/s vs 200/s) and duration (30 s vs 60 s)``."""
    phrases = [m.phrase() for m in found]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def mismatch_sentence(found: list[Mismatch]) -> str:
    """One sentence naming every difference and what to do."""
    return (
        f"the runs differ in {describe(found)}; compare runs of the same test or pass "
        "--allow-mismatch."
    )
