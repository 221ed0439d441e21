"""The demo's measurements, through crisisctl's own engines: triage, load, validate, compare.

Each function returns the same JSON report the matching command writes (`crisisctl triage
--json`, `load --out`, `validate --json`, `compare --json`), so the artefacts in
``crisis-demo/`` can be fed back to those commands and to `crisisctl incident attach`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crisisctl import __version__
from crisisctl.lab.profile import Profile
from crisisctl.load.compare import compare_reports
from crisisctl.load.engine import run_open
from crisisctl.load.report import utc_iso
from crisisctl.probe.plan import plan_triage
from crisisctl.probe.triage import run_triage
from crisisctl.validate import ValidateOptions, run_validation

#: triage's requests in flight: two, so that triage itself never looks like a burst to the
#: guard's adaptive concurrency limit (triage allows up to 16)
TRIAGE_CONCURRENCY = 2
#: connections of the before/after load runs: enough for the sick service's seconds of wait
LOAD_CONNECTIONS = 96


async def triage(base_url: str, scan_id: str, profile: Profile) -> dict[str, Any]:
    """`crisisctl triage` of the scan status read against the profile's target."""
    plan = plan_triage(
        f"{base_url}/api/scans/{scan_id}",
        target_ms=profile.target_ms,
        samples=profile.triage_samples,
        concurrency=TRIAGE_CONCURRENCY,
        budget_s=profile.triage_budget_s,
    )
    return await run_triage(plan)


async def load_report(base_url: str, scan_id: str, profile: Profile, name: str) -> dict[str, Any]:
    """An open-model load report on the scan status read (the `crisisctl load --out` form)."""
    started = datetime.now(UTC)
    url = f"{base_url}/api/scans/{scan_id}"
    result = await run_open(
        url,
        rate=profile.load_rate,
        duration_s=profile.load_s,
        connections=LOAD_CONNECTIONS,
        timeout_s=profile.load_timeout_s,
    )
    report = result.to_dict()
    report.update(
        name=name,
        started_at=utc_iso(started),
        finished_at=utc_iso(datetime.now(UTC)),
    )
    return report


def validate_options(scan_id: str, profile: Profile) -> ValidateOptions:
    """The validation suite aimed at the scanning service's routes."""
    return ValidateOptions(
        path=f"/api/scans/{scan_id}",
        burst_path="POST /api/scans",
        concurrency_path=f"/api/scans/{scan_id}/report",
        target_ms=profile.target_ms,
        burst=profile.validate_burst,
        # more parallel requests than the fixed guard's report route can hold (its adaptive
        # limit starts at 12, queue 4): shedding is then certain, not a matter of timing (20
        # shed nothing on a busy host, 60 requests in the quick profile). The service's
        # workers run at a lower CPU priority than its event loop (lab/scanstore.py): at equal
        # priority, on a 2-core host at half speed, the burst reached the guard at the rate it
        # was served and nothing was shed (2026-12-06)
        concurrency=40,
        load_rate=profile.validate_rate,
        load_duration_s=profile.validate_load_s,
        budget_s=profile.validate_budget_s,
    )


async def validate(base_url: str, scan_id: str, profile: Profile) -> dict[str, Any]:
    """`crisisctl validate` of the service (raises `validate.Unreachable` if it is down)."""
    options = validate_options(scan_id, profile)
    return await run_validation(f"{base_url}/api/scans/{scan_id}", options)


def compare(
    before: dict[str, Any], after: dict[str, Any], paths: tuple[Path, Path]
) -> dict[str, Any]:
    """`crisisctl compare --json` of the before and after load reports."""
    rows = compare_reports(before, after)
    return {
        "report": "compare",
        "crisisctl_version": __version__,
        "before": {"path": str(paths[0]), "started_at": before.get("started_at")},
        "after": {"path": str(paths[1]), "started_at": after.get("started_at")},
        "rows": [row.as_dict() for row in rows],
    }


def improvement(comparison: dict[str, Any], figure: str) -> float | None:
    """The whole run's improvement in percent for `figure` (p95, p99, error_rate, rps…)."""
    for row in comparison["rows"]:
        if row["operation"] is None and row["figure"] == figure:
            value = row["improvement_pct"]
            return float(value) if value is not None else None
    return None


async def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON (in a thread: the event loop keeps running)."""

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")

    await asyncio.to_thread(write)
