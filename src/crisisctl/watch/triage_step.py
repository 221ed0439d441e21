"""A light triage of a service for a new incident's timeline (`crisisctl.probe.triage`, reused).

Fewer samples and a small budget than the CLI's default (triage must not add to the crisis and
the verdict is wanted within seconds); the report is summarised exactly as
``crisisctl incident attach`` summarises a triage report.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crisisctl.incidents.reports import summarise_report
from crisisctl.probe.plan import plan_triage
from crisisctl.probe.triage import run_triage

SAMPLES = 10
CONCURRENCY = 2
#: time allowed beyond the triage's own budget before it is cancelled
GRACE_S = 2.0


async def triage_event(url: str, *, budget_s: float) -> tuple[str, str, dict[str, Any]]:
    """(event kind, text, details) of a bounded triage of `url`; ValueError for a bad URL,
    TimeoutError when it overran its budget."""
    plan = plan_triage(url, samples=SAMPLES, concurrency=CONCURRENCY, budget_s=budget_s)
    report = await asyncio.wait_for(run_triage(plan), budget_s + GRACE_S)
    kind, text, details = summarise_report(report)
    return kind, f"watch triage: {text}", details


__all__ = ["triage_event"]
