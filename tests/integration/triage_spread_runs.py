"""Run a fresh baseline and N triages of one URL in this process; print the reports as JSON.

`test_triage_baseline_spread` runs this as a child process, the way a user runs ``crisisctl
triage``: a small, fresh process. Inside the test process, after a thousand tests, the client's
own pauses (a large heap's full garbage collection, a lingering fixture's thread) land in the
latencies it measures, and a pause spanning the 4 requests in flight moves a 20-request p95.
That is the test's machine, not the service, and not what the statistics under test are about.

Usage: ``python triage_spread_runs.py URL PATH RUNS SAMPLES CONCURRENCY ROUNDS EVERY_S``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from crisisctl.probe.plan import BaselineRef, plan_triage
from crisisctl.probe.profile import profile_from_reports
from crisisctl.probe.triage import measure_baseline, run_triage


async def _runs(
    url: str, runs: int, samples: int, concurrency: int, rounds: int, every_s: float
) -> list[dict[str, Any]]:
    plan = plan_triage(
        url, samples=samples, concurrency=concurrency, budget_s=10, collect_host=False
    )
    now = datetime.now(UTC)
    profile = profile_from_reports(await measure_baseline(plan, rounds, every_s))
    baseline = BaselineRef("fresh", profile, now, now + timedelta(hours=1))
    reports = []
    for _ in range(runs):
        triage = plan_triage(
            url, baseline=baseline, samples=samples, concurrency=concurrency,
            budget_s=5, collect_host=False,
        )  # fmt: skip
        reports.append(await run_triage(triage))
    return reports


def main(argv: list[str]) -> None:
    url, path, runs, samples, concurrency, rounds, every_s = argv
    reports = asyncio.run(
        _runs(
            f"{url}{path}", int(runs), int(samples), int(concurrency), int(rounds), float(every_s)
        )
    )
    json.dump(reports, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
