"""The seeds' next steps for a triage verdict: per severity, then per signal and evidence.

The per-severity steps follow the seeds' crisis protocol (phase 1 emergency triage and phase 2
rapid stabilisation, the emergency playbook's "immediate actions", the response times and
escalation of the severity table). Signal-specific steps are added for what the evidence shows:
errors, unavailability, a guard that is (or is not) present, and the host findings.
Pure functions of the report's parts: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from crisisctl.severity import Severity, Verdict

_BY_SEVERITY: Final[dict[Severity, tuple[str, ...]]] = {
    Severity.P0: (
        "Open a P0 incident now and get all hands on deck: respond immediately (0-4 hours).",
        "Stabilise before diagnosing: emergency rate limiting and strict concurrency control "
        "in front of the service, low-priority work suspended.",
        "Clean up competing resource consumers: check the top CPU and memory processes and the "
        "process's open files against `ulimit -n`.",
        "If the degradation started with a deploy or config change, consider an emergency "
        "rollback.",
    ),
    Severity.P1: (
        "Open a P1 incident and involve the performance team lead: respond within 4-24 hours.",
        "Apply the quick wins: rate limiting, a concurrency limit, backoff for pollers and "
        "retries.",
        "Find the bottleneck: CPU, memory growth, connection pools and the slowest operation "
        "(profile the process).",
    ),
    Severity.P2: (
        "Assign the issue to the team as high priority: respond within 24-72 hours.",
        "Profile the slowest operation and look at query optimisation and caching for it.",
    ),
    Severity.P3: (
        "Plan an optimisation in regular sprint planning (within 1-2 weeks).",
        "Keep watching: re-run triage or compare against a saved baseline after changes.",
    ),
    Severity.OK: (
        "No action needed: the service is within its target.",
        "Save this healthy profile as a baseline (`crisisctl baseline save NAME URL`) to compare "
        "against during the next crisis.",
    ),
}


def recommendations(
    verdict: Verdict,
    *,
    url: str,
    guard: dict[str, Any] | None,
    host: dict[str, Any] | None,
    errors: dict[str, int],
) -> list[str]:
    """The next steps for `verdict`, most urgent first, without duplicates."""
    severity = verdict.severity
    steps: list[str] = list(_BY_SEVERITY[severity])
    present = bool(guard and guard.get("present"))
    if severity >= Severity.P1:
        if present and guard is not None and guard.get("mode") == "emergency":
            steps.insert(
                1,
                f"The guard is already in emergency mode (since {guard.get('mode_since')}); "
                "watch its shed counts with `crisisctl guard status URL` and switch to "
                "`recovering` once latency is back within target.",
            )
        elif present and severity is Severity.P0:
            steps.insert(
                1,
                f"Enable the guard's emergency mode: `crisisctl guard mode {url} "
                'emergency --reason "P0 triage"`.',
            )
        elif not present:
            steps.insert(
                1,
                "No crisisctl guard answers on this service: wrap the app in "
                "`crisisctl.guard.Guard` to get rate limits, adaptive concurrency, "
                "circuit breakers and an emergency mode.",
            )
    if not verdict.available:
        steps.insert(
            0,
            "The service does not answer: check that its process is running and "
            "listening, and look at its logs for crashes or a stuck event loop.",
        )
    if errors.get("timeout"):
        steps.append(
            "Requests timed out: look for a blocked event loop, exhausted worker or "
            "connection pools, or a slow dependency (profile the process)."
        )
    if verdict.error_rate is not None and verdict.error_rate >= 0.05:
        steps.append(
            "Investigate the error pattern (status codes and error kinds above); put "
            "circuit breakers around failing external dependencies."
        )
    if present and guard is not None and guard.get("open_breakers"):
        routes = ", ".join(str(r) for r in guard["open_breakers"])
        steps.append(
            f"Circuit breakers are open for {routes}: fix or isolate what those routes depend on."
        )
    for finding in (host or {}).get("findings") or []:
        steps.append(f"Host: {finding}.")
    return list(dict.fromkeys(steps))
