"""The validation suite's report: check results, request tallies and the success rate.

Every check of `crisisctl validate` ends as a `CheckResult` (passed or failed, or skipped with
the reason: not run, or unable to measure what it names; with a one-line summary and its
evidence); requests are counted into a `Tally`; `build_report` turns
the list into the JSON report. The suite passes when passed ÷ (passed + failed) reaches the
required rate (the seeds' 90 % by default); skipped checks are listed but not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the checks in the order the suite runs them: what only reads first, bursts that use up
#: rate-limit allowances last
CHECK_NAMES: tuple[str, ...] = (
    "monitoring",
    "error_handling",
    "performance_baseline",
    "load_resilience",
    "resource_utilization",
    "rate_limiting",
    "concurrency_control",
)
#: the seeds' suite-wide success rate (percent)
DEFAULT_REQUIRED_RATE = 90.0


@dataclass(slots=True)
class CheckResult:
    """One check's verdict; `passed` is False for a skipped check (it is not counted)."""

    name: str
    passed: bool
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    duration_ms: float = 0.0

    @classmethod
    def skip(cls, name: str, reason: str, evidence: dict[str, Any] | None = None) -> CheckResult:
        """A check that was not run or could not measure, and why (neither a pass nor a failure)."""
        return cls(name, False, reason, evidence or {}, skipped=True)

    @property
    def status(self) -> str:
        """ "passed", "failed" or "skipped"."""
        if self.skipped:
            return "skipped"
        return "passed" if self.passed else "failed"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: name, status, passed, skipped, summary, evidence, duration_ms."""
        return {
            "name": self.name,
            "status": self.status,
            "passed": self.passed,
            "skipped": self.skipped,
            "summary": self.summary,
            "evidence": self.evidence,
            "duration_ms": round(self.duration_ms, 3),
        }


# -- shared helpers --------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p ≤ 100) of a non-empty sequence."""
    if not values:
        raise ValueError("a percentile needs at least one value.")
    if not 0.0 < p <= 100.0:
        raise ValueError(f"the percentile must be in (0, 100], not {p!r}.")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_ms: Sequence[float]) -> dict[str, float] | None:
    """min / mean / p50 / p95 / max in ms (rounded to µs), None without values."""
    if not values_ms:
        return None
    return {
        "min": round(min(values_ms), 3),
        "mean": round(sum(values_ms) / len(values_ms), 3),
        "p50": round(percentile(values_ms, 50.0), 3),
        "p95": round(percentile(values_ms, 95.0), 3),
        "max": round(max(values_ms), 3),
    }


@dataclass(slots=True)
class Tally:
    """What a series of requests got: status codes, transport errors by kind, latencies (ms).

    `served_before_first_429` counts 2xx/3xx responses that arrived before the first 429.
    """

    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    served_before_first_429: int | None = None
    #: the check ran out of time before every request was made
    timed_out: bool = False

    def response(self, status: int, ms: float) -> None:
        """Count one complete response."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies_ms.append(ms)
        if status == 429 and self.served_before_first_429 is None:
            self.served_before_first_429 = self.served()

    def error(self, kind: str) -> None:
        """Count one request that ended without a response (`kind` from the load client)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def requests(self) -> int:
        """Requests that ended, with a response or an error."""
        return sum(self.statuses.values()) + sum(self.errors.values())

    def count(self, status: int) -> int:
        """Responses with exactly this status."""
        return self.statuses.get(status, 0)

    def served(self) -> int:
        """Responses with a 2xx or 3xx status."""
        return sum(n for code, n in self.statuses.items() if 200 <= code < 400)

    def server_errors(self, *, allow: tuple[int, ...] = ()) -> int:
        """5xx responses, leaving out the statuses in `allow`."""
        return sum(n for code, n in self.statuses.items() if code >= 500 and code not in allow)

    def evidence(self) -> dict[str, Any]:
        """The counts as JSON: requests, status_counts, errors, latency_ms."""
        return {
            "requests": self.requests,
            "status_counts": {str(code): n for code, n in sorted(self.statuses.items())},
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": latency_summary(self.latencies_ms),
        }


# -- the report ------------------------------------------------------------------------------
def success_rate(checks: Sequence[CheckResult]) -> float | None:
    """passed ÷ (passed + failed) in percent; None when every check was skipped."""
    counted = [c for c in checks if not c.skipped]
    if not counted:
        return None
    return sum(c.passed for c in counted) / len(counted) * 100.0


def build_report(
    *,
    url: str,
    version: str,
    started_at: str,
    duration_ms: float,
    checks: Sequence[CheckResult],
    required_rate: float,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON report; `passed` is whether the success rate reaches `required_rate` (percent)."""
    rate = success_rate(checks)
    return {
        "report": "validate",
        "crisisctl_version": version,
        "url": url,
        "started_at": started_at,
        "duration_ms": round(duration_ms, 3),
        "settings": dict(settings),
        "checks": [c.to_dict() for c in checks],
        "checks_passed": sum(c.passed for c in checks if not c.skipped),
        "checks_failed": sum(not c.passed for c in checks if not c.skipped),
        "checks_skipped": sum(c.skipped for c in checks),
        "success_rate": None if rate is None else round(rate, 2),
        "required_rate": required_rate,
        "passed": rate is not None and rate >= required_rate,
    }
