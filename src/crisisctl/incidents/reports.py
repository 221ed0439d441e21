"""Reading attached report JSON (load, validate, triage) into timeline events and comparisons.

``summarise_report()`` turns a crisisctl JSON report into the (kind, text, details) of a
timeline event: the figures that matter (latency percentiles, throughput, error rate, severity,
checks passed) and, for load reports, a per-second series bounded to `MAX_SERIES_POINTS` for the
post-mortem chart. The report's top-level ``"report"`` field says what it is; a load report of an
older crisisctl without it is recognised by its shape (``model`` and ``latency_ms``).

``compare_load()`` gives the before/after improvement of two load summaries:
improvement = (before − after) ÷ before for p50/p95/p99 and the error rate; for requests per
second the ratio after ÷ before (improvement = ratio − 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from crisisctl.incidents.db import StoreError
from crisisctl.incidents.lifecycle import EVENT_LOAD_REPORT, EVENT_TRIAGE, EVENT_VALIDATION

MAX_SERIES_POINTS: Final = 240
LABELS: Final = ("before", "after")
_PERCENTILES: Final = ("p50", "p90", "p95", "p99", "max", "mean")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _latency(summary: Any) -> dict[str, float | None]:
    data = summary if isinstance(summary, dict) else {}
    return {key: _num(data.get(key)) for key in _PERCENTILES if key in data}


def fmt_ms(value: float | None) -> str:
    """``812 ms`` / ``12.5 ms`` / ``0.84 ms``; "n/a" for None."""
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _percent_to_fraction(value: Any) -> float | None:
    number = _num(value)
    return None if number is None else number / 100.0


def fmt_pct(rate: float | None) -> str:
    """A 0..1 fraction as a percentage, ``3.2 %``; "n/a" for None."""
    return "n/a" if rate is None else f"{rate * 100:.3g} %"


def _series(per_second: Any) -> list[dict[str, float]]:
    """[{t_s, p50_ms, p95_ms, p99_ms, rps, errors}] from the per-second rows, downsampled."""
    rows = [r for r in per_second if isinstance(r, dict)] if isinstance(per_second, list) else []
    step = max(1, math.ceil(len(rows) / MAX_SERIES_POINTS))
    out: list[dict[str, float]] = []
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        point: dict[str, float] = {"t_s": float(_num(chunk[0].get("second")) or start)}
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            values = [v for v in (_num(r.get(key)) for r in chunk) if v is not None]
            if values:
                point[key] = max(values)
        requests = sum(_int(r.get("requests")) or 0 for r in chunk)
        point["rps"] = requests / len(chunk)
        point["errors"] = float(sum(_int(r.get("errors")) or 0 for r in chunk))
        out.append(point)
    return out


def _load_error_rate(report: dict[str, Any]) -> float | None:
    """The report's own error_rate, else (transport errors + 5xx answers) ÷ requests."""
    given = _num(report.get("error_rate"))
    if given is not None:
        return given
    requests = _int(report.get("requests"))
    if not requests:
        return None
    errors = _int(report.get("error_total")) or 0
    statuses = report.get("status_counts")
    if isinstance(statuses, dict):
        errors += sum(
            n
            for code, n in statuses.items()
            if str(code).isdigit() and int(code) >= 500 and isinstance(n, int)
        )
    return errors / requests


def _summarise_load(report: dict[str, Any], label: str | None) -> tuple[str, str, dict[str, Any]]:
    latency = _latency(report.get("latency_ms"))
    if not latency:
        raise StoreError("the load report has no latency_ms summary: attach a crisisctl report.")
    error_rate = _load_error_rate(report)
    details: dict[str, Any] = {
        "report": "load",
        "label": label,
        "url": _str(report.get("url")),
        "measured_at": _str(report.get("started_at")),
        "model": _str(report.get("model")),
        "duration_s": _num(report.get("duration_s")),
        "requests": _int(report.get("requests")),
        "requests_per_second": _num(report.get("requests_per_second")),
        "error_rate": error_rate,
        "latency_ms": latency,
        "series": _series(report.get("per_second")),
    }
    head = f"load report{f' ({label})' if label else ''}"
    where = f" on {details['url']}" if details["url"] else ""
    rps = details["requests_per_second"]
    text = (
        f"{head}{where}: p50 {fmt_ms(latency.get('p50'))}, p95 {fmt_ms(latency.get('p95'))}, "
        f"p99 {fmt_ms(latency.get('p99'))}, "
        f"{'n/a' if rps is None else f'{rps:.1f}'} req/s, errors {fmt_pct(error_rate)}"
    )
    return EVENT_LOAD_REPORT, text, details


def _summarise_triage(report: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    latency = _latency(report.get("latency_ms"))
    reasons = report.get("reasons")
    messages = [
        r["message"] for r in reasons if isinstance(r, dict) and isinstance(r.get("message"), str)
    ] if isinstance(reasons, list) else []  # fmt: skip
    details: dict[str, Any] = {
        "report": "triage",
        "url": _str(report.get("url")),
        "measured_at": _str(report.get("started_at")),
        "severity": _str(report.get("severity")),
        "degradation_factor": _num(report.get("degradation_factor")),
        "available": report.get("available") if isinstance(report.get("available"), bool) else None,
        "error_rate": _num(report.get("error_rate")),
        "latency_ms": latency,
        "samples": _int(report.get("samples")),
        "reasons": messages,
    }
    factor = details["degradation_factor"]
    parts = [f"p95 {fmt_ms(latency.get('p95'))}"]
    if factor is not None:
        parts.append(f"{factor:.3g}× the reference")
    parts.append(f"errors {fmt_pct(details['error_rate'])}")
    if details["available"] is False:
        parts.append("unavailable")
    where = f" of {details['url']}" if details["url"] else ""
    text = f"triage{where}: {details['severity'] or 'no severity'} — {', '.join(parts)}"
    return EVENT_TRIAGE, text, details


def _summarise_validate(report: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    checks_in = report.get("checks")
    checks = []
    for check in checks_in if isinstance(checks_in, list) else []:
        if isinstance(check, dict) and isinstance(check.get("name"), str):
            checks.append(
                {
                    "name": check["name"],
                    "passed": bool(check.get("passed")),
                    "skipped": bool(check.get("skipped")),
                }
            )
    details: dict[str, Any] = {
        "report": "validate",
        "url": _str(report.get("url")),
        "measured_at": _str(report.get("started_at")),
        "passed": report.get("passed") if isinstance(report.get("passed"), bool) else None,
        # the validate report gives percentages (85.7); details keep fractions like the rest
        "success_rate": _percent_to_fraction(report.get("success_rate")),
        "required_rate": _percent_to_fraction(report.get("required_rate")),
        "checks": checks,
    }
    counted = [c for c in checks if not c["skipped"]]
    passed = sum(1 for c in counted if c["passed"])
    failed = [c["name"] for c in counted if not c["passed"]]
    verdict = {True: "PASSED", False: "FAILED", None: "no verdict"}[details["passed"]]
    where = f" of {details['url']}" if details["url"] else ""
    text = (
        f"validation{where}: {verdict}, {passed}/{len(counted)} checks passed "
        f"(success rate {fmt_pct(details['success_rate'])}, "
        f"required {fmt_pct(details['required_rate'])})"
    )
    if failed:
        text += f"; failed: {', '.join(failed)}"
    return EVENT_VALIDATION, text, details


def summarise_report(
    report: dict[str, Any], *, label: str | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(event kind, one-line text, details with the figures) for a crisisctl JSON report."""
    if not isinstance(report, dict):
        raise StoreError("the report is not a JSON object: attach a crisisctl --json report.")
    if label is not None and label not in LABELS:
        raise StoreError(f"unknown label {label!r}: use before or after.")
    kind = report.get("report")
    if kind is None and "model" in report and "latency_ms" in report:
        kind = "load"
    if label is not None and kind != "load":
        raise StoreError("--label before/after only applies to load reports.")
    if kind == "load":
        return _summarise_load(report, label)
    if kind == "triage":
        return _summarise_triage(report)
    if kind == "validate":
        return _summarise_validate(report)
    raise StoreError(
        f"the report says it is {kind!r}: attach a crisisctl load, validate or triage JSON report."
        if kind is not None
        else 'this JSON has no "report" field: attach a crisisctl load, validate or triage '
        "JSON report."
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One figure before and after.

    `improvement` is a fraction (+0.5 = 50 % better): (before − after) ÷ before for latency and
    error rate, after ÷ before − 1 for throughput. `ratio` is how many times better: before ÷
    after for latency and error rate, after ÷ before for throughput.
    """

    metric: str
    before: float | None
    after: float | None
    improvement: float | None
    ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
            "ratio": self.ratio,
            "improvement_percent": None if self.improvement is None else self.improvement * 100,
        }


def _lower_is_better(metric: str, before: float | None, after: float | None) -> Change:
    if before is None or after is None or before <= 0:
        return Change(metric, before, after, None, None)
    return Change(
        metric, before, after, (before - after) / before, before / after if after else None
    )


def compare_load(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Before/after changes of p50/p95/p99, error rate and requests/s between two load-report
    event details (see `Change` for the arithmetic)."""
    b_lat, a_lat = before.get("latency_ms") or {}, after.get("latency_ms") or {}
    changes = [
        _lower_is_better(f"{p}_ms", _num(b_lat.get(p)), _num(a_lat.get(p)))
        for p in ("p50", "p95", "p99")
    ]
    changes.append(
        _lower_is_better(
            "error_rate", _num(before.get("error_rate")), _num(after.get("error_rate"))
        )
    )
    b_rps, a_rps = _num(before.get("requests_per_second")), _num(after.get("requests_per_second"))
    if b_rps is None or a_rps is None or b_rps <= 0:
        changes.append(Change("requests_per_second", b_rps, a_rps, None, None))
    else:
        changes.append(
            Change("requests_per_second", b_rps, a_rps, a_rps / b_rps - 1, a_rps / b_rps)
        )
    return changes


def measured_at(details: dict[str, Any], fallback: datetime) -> datetime:
    """When a report was measured (its started_at), else `fallback` (when it was attached)."""
    text = details.get("measured_at")
    if isinstance(text, str):
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        if value.tzinfo is not None:
            return value
    return fallback
