"""From measurements to the triage report: health, availability, the verdict and next steps.

`build_report()` grades the worst operation (worst latency severity, then highest p95 ÷
reference; highest error rate) with `severity.classify()`, decides availability (a failing or
silent health check, or operations that got no response at all) and assembles the JSON report
every output is made from.

Against a baseline, each operation's factor gets its confidence interval from the baseline's
own spread (spread.py; from this run's requests alone for a baseline saved without samples),
at a confidence split over the operations graded (Bonferroni), so that grading the worst of
several operations keeps the false-alarm rate of one: a factor whose interval reaches 1× is
OK, a significant one is graded on its value (severity.py). A ``--target-ms`` has no spread.
Pure functions of their arguments apart from the report's finish time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from crisisctl import __version__
from crisisctl.probe.http import ProbeResult
from crisisctl.probe.plan import TriagePlan
from crisisctl.probe.profile import baseline_count, baseline_p95, baseline_rounds, resource_changes
from crisisctl.probe.recommendations import recommendations
from crisisctl.probe.sampling import OperationStats, summarize
from crisisctl.probe.spread import (
    DEFAULT_CONFIDENCE,
    factor_interval,
    family_confidence,
    healthy_ratio_range,
)
from crisisctl.severity import FactorInterval, Severity, Verdict, classify, severity_for_factor
from crisisctl.stats import LatencyHistogram


def now_iso() -> str:
    """The current UTC time in ISO 8601 with a Z."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def judge_health(results: list[ProbeResult]) -> dict[str, Any]:
    """Pick the health endpoint and judge it: ok True/False, or None when there is none."""
    probes = [r.as_dict() for r in results]
    for result in results:
        if result.answered and result.status not in (404, 405):
            ok = result.status is not None and result.status < 400
            return {"path": result.operation.split(" ", 1)[1], "status": result.status,
                    "ok": ok, "total_ms": result.total_ms, "probes": probes}  # fmt: skip
    failures = [r for r in results if not r.answered]
    if failures:
        first = failures[0]
        return {"path": first.operation.split(" ", 1)[1], "status": None, "ok": False,
                "error": first.error, "detail": first.detail, "probes": probes}  # fmt: skip
    return {"path": None, "status": None, "ok": None, "probes": probes,
            "detail": "no health endpoint answered (all 404)"}  # fmt: skip


_UNAVAILABLE_WHY: Final = {
    "refused": "connection refused",
    "timeout": "no answer within the timeout (the service hangs)",
    "reset": "connections closed or reset before a complete response",
    "bad_response": "the answers are not valid HTTP",
    "dns": "the host name does not resolve",
    "other": "requests failed",
}


def availability(
    health: dict[str, Any], stats: list[OperationStats]
) -> tuple[bool, str | None, bool]:
    """(available, why not, reachable at all)."""
    answered = sum(s.answered for s in stats)
    sent = sum(s.sent for s in stats)
    health_answered = health.get("status") is not None
    reachable = answered > 0 or health_answered
    if health.get("ok") is False:
        if health_answered:
            why = f"health check GET {health['path']} answered HTTP {health['status']}"
        else:
            why = f"health check GET {health['path']}: {_UNAVAILABLE_WHY[health['error']]}"
        return False, why, reachable
    if sent and not answered:
        kinds: dict[str, int] = {}
        for s in stats:
            for kind, n in s.errors.items():
                kinds[kind] = kinds.get(kind, 0) + n
        worst = max(kinds, key=lambda k: kinds[k]) if kinds else "other"
        return False, f"no operation got a response: {_UNAVAILABLE_WHY[worst]}", reachable
    if not sent and health.get("ok") is None and not health_answered:
        return False, "nothing could be measured within the budget", reachable
    return True, None, reachable


@dataclass(frozen=True, slots=True)
class LatencyJudgement:
    """One operation's p95 against its reference, with the factor's interval when it has one."""

    operation: str
    p95_ms: float
    reference_ms: float
    factor: float
    interval: FactorInterval | None
    #: whose spread the interval comes from: "baseline", "run" (old baseline) or None (target)
    spread: str | None
    severity: Severity

    def as_dict(self) -> dict[str, Any]:
        """The per-operation figures of the report's ``reference`` section."""
        return {
            "p95_ratio": self.factor,
            "interval": self.interval.as_dict() if self.interval else None,
            "spread": self.spread,
            "severity": self.severity.name,
        }


def judge_latency(
    plan: TriagePlan, stats: list[OperationStats], confidence: float = DEFAULT_CONFIDENCE
) -> list[LatencyJudgement]:
    """Every operation with a p95 and a reference, judged (see the module docstring)."""
    inputs: list[tuple[OperationStats, float, float]] = []
    for s in stats:
        p95 = s.p95_ms
        if p95 is None:
            continue
        if plan.baseline is not None:
            ref = baseline_p95(plan.baseline.profile, s.operation.name)
        else:
            ref = plan.target_ms
        if ref is not None:
            inputs.append((s, p95, ref))
    level = family_confidence(confidence, len(inputs))
    out: list[LatencyJudgement] = []
    for s, p95, ref in inputs:
        factor = p95 / ref
        interval: FactorInterval | None = None
        spread: str | None = None
        samples = s.latency_samples_ms
        if plan.baseline is not None and samples:
            name = s.operation.name
            rounds = baseline_rounds(plan.baseline.profile, name)
            if rounds is not None:
                healthy = healthy_ratio_range(rounds, len(samples), confidence=level)
                spread = "baseline"
            else:  # saved without samples: this run's own spread stands in for the baseline's
                count = baseline_count(plan.baseline.profile, name) or len(samples)
                healthy = healthy_ratio_range(
                    [samples], len(samples), reference_n=count, confidence=level
                )
                spread = "run"
            interval = factor_interval(factor, healthy, level)
        severity = severity_for_factor(factor, interval)
        out.append(LatencyJudgement(s.operation.name, p95, ref, factor, interval, spread,
                                    severity))  # fmt: skip
    return out


def _latency_verdict_inputs(
    judged: list[LatencyJudgement], stats: list[OperationStats]
) -> tuple[float | None, float | None, str | None, FactorInterval | None]:
    """(p95, reference, operation, interval) of the worst operation's latency."""
    if not judged:
        worst = max((s for s in stats if s.p95_ms is not None), key=lambda s: s.p95_ms or 0.0,
                    default=None)  # fmt: skip
        p95 = worst.p95_ms if worst else None
        return p95, None, (worst.operation.name if worst else None), None
    best = max(judged, key=lambda j: (j.severity, j.factor))
    return best.p95_ms, best.reference_ms, best.operation, best.interval


def _merged(stats: list[OperationStats], attr: str) -> LatencyHistogram:
    hist = LatencyHistogram()
    for s in stats:
        hist.merge(getattr(s, attr))
    return hist


def build_report(
    plan: TriagePlan,
    started_at: str,
    t0: float,
    health: dict[str, Any],
    guard: dict[str, Any],
    stats: list[OperationStats],
    host: dict[str, Any],
) -> dict[str, Any]:
    available, why, reachable = availability(health, stats)
    sent = sum(s.sent for s in stats)
    failed = sum(s.failed for s in stats)
    # Like latency, errors are graded on the worst operation: one failing endpoint is a crisis
    # even when the others dilute the overall rate.
    rates = [(s.error_rate, s.operation.name) for s in stats if s.error_rate is not None]
    error_rate, error_op = max(rates) if rates else (None, None)
    judged = judge_latency(plan, stats)
    p95, reference, worst_op, interval = _latency_verdict_inputs(judged, stats)
    verdict: Verdict = classify(
        p95_ms=p95, target_ms=reference, error_rate=error_rate, available=available,
        unavailable_reason=why, reference="baseline" if plan.baseline else "target",
        factor_interval=interval,
    )  # fmt: skip
    errors: dict[str, int] = {}
    status_classes: dict[str, int] = {}
    for s in stats:
        for kind, n in s.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        for cls, n in s.status_classes().items():
            status_classes[cls] = status_classes.get(cls, 0) + n
    latency = _merged(stats, "latency")
    warnings = list(plan.warnings)
    not_sent = sum(s.not_sent for s in stats)
    if not_sent:
        warnings.append(
            f"{not_sent} of {plan.samples * len(stats)} planned requests were not sent: the "
            f"{plan.budget_s:g} s budget ran out."
        )
    host_ready = host if host.get("collected") else None
    steps = recommendations(verdict, url=plan.url, guard=guard, host=host_ready, errors=errors)
    report: dict[str, Any] = {
        "report": "triage",
        "crisisctl_version": __version__,
        "url": plan.url,
        "started_at": started_at,
        "finished_at": now_iso(),
        "duration_s": round(time.monotonic() - t0, 3),
        "budget_s": plan.budget_s,
        **verdict.as_dict(),
        "reachable": reachable,
        "overall_error_rate": failed / sent if sent else None,
        "worst_operation": worst_op,
        "worst_error_operation": error_op,
        "latency_ms": summarize(latency)
        or {
            "count": 0,
            "min": None,
            "p50": None,
            "p95": None,
            "p99": None,
            "max": None,
        },
        "samples": sent,
        "sampling": {
            "per_operation": plan.samples,
            "planned": plan.samples * len(stats),
            "sent": sent,
            "answered": sum(s.answered for s in stats),
            "failed": failed,
            "not_sent": not_sent,
        },
        "reference": _reference(plan, stats, host_ready, judged),
        "limits": {
            "max_in_flight": plan.concurrency,
            "max_control_in_flight": len(plan.health_paths) + 1,
            "max_requests": plan.max_requests,
            "per_request_timeout_s": plan.timeout_s,
            "budget_s": plan.budget_s,
        },
        "status_classes": status_classes,
        "errors": errors,
        "timing_ms": {
            "dns": summarize(_merged(stats, "dns")),
            "connect": summarize(_merged(stats, "connect")),
            "tls": None,
            "first_byte": summarize(_merged(stats, "first_byte")),
            "total": summarize(latency),
        },
        "health": health,
        "operations": [s.as_dict() for s in stats],
        "requests": [row for s in stats for row in s.requests],
        "guard": guard,
        "host": host,
        "recommendations": steps,
        "warnings": warnings,
    }
    return report


def _reference(
    plan: TriagePlan,
    stats: list[OperationStats],
    host: dict[str, Any] | None,
    judged: list[LatencyJudgement],
) -> dict[str, Any]:
    if plan.baseline is None:
        return {"kind": "target", "target_ms": plan.target_ms}
    b = plan.baseline
    by_name = {j.operation: j.as_dict() for j in judged}
    return {
        "kind": "baseline",
        "name": b.name,
        "created_at": b.created_at.isoformat(),
        "expires_at": b.expires_at.isoformat(),
        "expired": b.expired(),
        "per_operation": {
            s.operation.name: {
                "baseline_p95_ms": baseline_p95(b.profile, s.operation.name),
                "observed_p95_ms": s.p95_ms,
                **by_name.get(s.operation.name, {}),
            }
            for s in stats
        },
        "resources": resource_changes(b.profile, host),
    }
