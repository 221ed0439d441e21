"""What the demo's incident learns, written from the figures the run measured.

Pure functions: the root causes (the seeds' four categories, each with its measured evidence),
the lessons, the action items (mitigate / prevent / process, from the seeds' lessons and
prevention measures), the impact figures and the summary. Nothing here is invented: a figure
that was not measured is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crisisctl.lab.crowd import BACKOFF, EVERY_2S


@dataclass(frozen=True, slots=True)
class Action:
    """An action item: `done` ones were carried out during the demo."""

    title: str
    kind: str
    priority: str
    done: bool = False


def _ms(value: Any) -> str:
    return f"{value:,.0f} ms" if isinstance(value, int | float) else "n/a"


def _p95(report: dict[str, Any]) -> float | None:
    latency = report.get("latency_ms") or {}
    value = latency.get("p95")
    return float(value) if isinstance(value, int | float) else None


def root_causes(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """The seeds' four root-cause categories with this run's evidence."""
    sick = facts["sick_stats"]
    crowd = facts["crowd_before"]
    triage = facts["triage_before"]
    users, tabs = facts["users"], facts["tabs"]
    return [
        {
            "category": "Resource Management",
            "cause": f"Unlimited concurrent scans ran on the {sick['workers']}-thread worker pool "
            "that also serves status reads, so every read waited behind queued scans.",
            "evidence": [
                f"triage: p95 {_ms(_p95(triage))} for GET /api/scans/{{id}}, "
                f"{triage.get('degradation_factor') or 0:.1f}× the "
                f"{facts['target_ms']:g} ms target",
                f"at the restart {sick['scans_active']} scans were active and "
                f"{sick['pool_waiting']} pool tasks waiting for {sick['workers']} threads",
            ],
        },
        {
            "category": "API Protection",
            "cause": "No rate limiting or admission control: every POST /api/scans started a scan.",
            "evidence": [
                f"{sick['scans_accepted']} scans accepted, none refused, by the unprotected "
                "service",
            ],
        },
        {
            "category": "Frontend Optimization",
            "cause": f"Aggressive polling without exponential backoff: {EVERY_2S.name}.",
            "evidence": [
                f"{users} users × {tabs} tabs sent {crowd['polls_per_s']} polls/s, and "
                f"{crowd['polls_skipped_busy']} more polls were skipped because every browser "
                "connection was busy",
            ],
        },
        {
            "category": "Memory Management",
            "cause": "Finished scans and their result data were kept forever.",
            "evidence": [
                f"{sick['scans_stored']} finished scans stored ({sick['stored_result_mb']} MB of "
                f"results); RSS {sick.get('rss_mb')} MB at the restart",
                f"triage saw RSS grow {facts['rss_growth_mb']} MB in its window",
            ],
        },
    ]


def actions(facts: dict[str, Any]) -> list[Action]:
    """Action items: the mitigations applied during the run, then prevention and process."""
    ttl = facts["ttl_s"]
    return [
        Action("Run the scanning service behind the crisisctl guard: per-client rate limits "
               "(scan creation 10/min), adaptive concurrency, per-route timeouts",
               "mitigate", "high", done=True),
        Action("Cap concurrent scans at 2 (MAX_CONCURRENT_SCANS) with the guard's operation "
               "quota, so status reads keep free worker threads", "mitigate", "high", done=True),
        Action(f"Drop finished scans unread for {ttl:g} s (a periodic cleanup "
               "hook of the guard's memory policy; 1 hour in production)",
               "mitigate", "medium", done=True),
        Action(f"Ship the dashboard's polling fix: {BACKOFF.name}", "mitigate", "high", done=True),
        Action("Alert on scan-status p95 above the 250 ms target and on worker-pool queue depth "
               "(Prometheus /_crisis/metrics)", "prevent", "high"),
        Action("Run scans on a dedicated worker pool or job queue, apart from request handling",
               "prevent", "medium"),
        Action("Include rate limiting and concurrency limits in every API service template",
               "prevent", "medium"),
        Action("Replace status polling with push notifications (server-sent events)",
               "prevent", "low"),
        Action("Make `crisisctl validate` mandatory before declaring a crisis resolved",
               "process", "medium"),
        Action("Establish crisis escalation procedures and an on-call rotation",
               "process", "low"),
    ]  # fmt: skip


def lessons(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, text) lessons: what went well, what went wrong, where we got lucky."""
    triage = facts["triage_before"]
    improvement = facts.get("p95_improvement_pct")
    out = [
        ("went_well", f"Triage graded the crisis {triage['severity']} within "
         f"{triage.get('duration_s', 0):.1f} s, with its reasons, and the incident was opened "
         "automatically with the verdict."),
        ("went_wrong", "Nothing limited scans: the shared worker pool queued status reads behind "
         "scans for seconds."),
        ("went_wrong", f"Every tab polled every scan every 2 s: {facts['tabs']} tabs of one user "
         "sent the same poll up to that many times."),
        ("went_wrong", "Finished scans were never dropped, so memory grew with every scan."),
        ("got_lucky", "Memory was still far below the 2048 MB RSS limit when the service was "
         "restarted, so no process was killed for running out of memory."),
    ]  # fmt: skip
    if improvement is not None:
        out.insert(1, ("went_well", f"The guard, the scan cap, TTL cleanup and backoff polling "
                       f"improved the status read's p95 by {improvement:.1f} %, and the "
                       "validation suite passed before the incident was resolved."))  # fmt: skip
    return out


def impact(facts: dict[str, Any]) -> dict[str, Any]:
    """Impact figures for `update_incident` (only the measured ones)."""
    before, after = facts["load_before"], facts["load_after"]
    out: dict[str, Any] = {"affected_users": facts["users"]}
    peak = (before.get("latency_ms") or {}).get("p99")
    if isinstance(peak, int | float):
        out["peak_latency_ms"] = float(peak)
    base = _p95(after)
    if base is not None:
        out["baseline_latency_ms"] = base
    factor = facts["triage_before"].get("degradation_factor")
    if isinstance(factor, int | float):
        out["degradation_factor"] = float(factor)
    rate = before.get("error_rate")
    if isinstance(rate, int | float):
        out["error_rate"] = float(rate)
    out["affected_requests"] = int(facts["affected_requests"])
    return out


def summary(facts: dict[str, Any]) -> str:
    """The post-mortem's summary paragraph."""
    triage = facts["triage_before"]
    text = (
        f"A crowd of {facts['users']} users × {facts['tabs']} dashboard tabs polling every 2 s "
        f"overloaded the scanning service: unlimited concurrent scans on the shared worker pool "
        f"made status reads wait {_ms(_p95(triage))} at p95 "
        f"({triage.get('degradation_factor') or 0:.1f}× the {facts['target_ms']:g} ms target, "
        f"{triage['severity']}) while finished scans piled up in memory."
    )
    after = _p95(facts["load_after"])
    improvement = facts.get("p95_improvement_pct")
    if after is not None and improvement is not None:
        text += (
            f" The service was restarted behind the guard with a 2-scan operation quota and TTL "
            f"cleanup, the "
            f"dashboard switched to backoff polling, and the status read's p95 came down to "
            f"{_ms(after)} ({improvement:.1f} % better)."
        )
    return text
