"""The validation suite's verdicts (the seeds' phase 5): pure functions of what was measured.

`crisisctl.validate.suite` sends the requests and measures; everything here only judges what was
measured, so every rule can be tested without a server. Each check yields a `CheckResult` of
`crisisctl.validate.report` with a one-line summary and its evidence.

The rules, from the seeds' validation code:

- performance_baseline: every response 2xx, p95 ≤ target and the slowest ≤ 2 × target.
- rate_limiting: a burst gets at least one 429.
- concurrency_control: a parallel burst is shed (429 or 503) and nothing times out, fails at
  the transport level or answers another 5xx.
- resource_utilization: host CPU ≤ 90 %, host memory ≤ 90 %, the target process's RSS ≤ 2048 MB.
- error_handling: malformed JSON → 4xx, an unknown route → 404, a wrong method → 405; never 5xx.
- monitoring: a health (or guard status) endpoint answers 2xx; metrics are reported when found.
- load_resilience: ≥ 95 % of the requests of a moderate open-model load answered 2xx/3xx.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crisisctl.probe.host import (
    CPU_CRITICAL_PERCENT,
    MEMORY_CRITICAL_PERCENT,
    PROCESS_RSS_LIMIT_MB,
    is_unavailable,
)
from crisisctl.validate.report import CheckResult, Tally

#: the seeds' share of successful requests a moderate load must get (percent)
LOAD_SUCCESS_PERCENT = 95.0


def _statuses_text(tally: Tally) -> str:
    parts = [f"{n}×{code}" for code, n in sorted(tally.statuses.items())]
    parts += [f"{n}×{kind}" for kind, n in sorted(tally.errors.items())]
    return ", ".join(parts) or "nothing"


def _cut_short(tally: Tally) -> str:
    return " (the check ran out of time)" if tally.timed_out else ""


# -- performance baseline --------------------------------------------------------------------
def evaluate_baseline(tally: Tally, target_ms: float, planned: int) -> CheckResult:
    """Every response 2xx, p95 ≤ `target_ms` and the slowest ≤ 2 × `target_ms` (the seeds)."""
    evidence = tally.evidence()
    evidence.update(planned_requests=planned, target_ms=target_ms, max_allowed_ms=2 * target_ms)
    problems: list[str] = []
    ok_2xx = sum(n for code, n in tally.statuses.items() if 200 <= code < 300)
    if tally.requests < planned:
        problems.append(f"only {tally.requests} of {planned} requests ended{_cut_short(tally)}")
    if ok_2xx < tally.requests:
        problems.append(f"not every response was 2xx ({_statuses_text(tally)})")
    lat = evidence["latency_ms"]
    if lat is not None:
        if lat["p95"] > target_ms:
            problems.append(f"p95 {lat['p95']:.1f} ms exceeds the {target_ms:g} ms target")
        if lat["max"] > 2 * target_ms:
            problems.append(f"the slowest took {lat['max']:.1f} ms (> 2 × target)")
    if problems:
        return CheckResult("performance_baseline", False, "; ".join(problems) + ".", evidence)
    assert lat is not None
    return CheckResult(
        "performance_baseline",
        True,
        f"{tally.requests} requests, p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms "
        f"(target {target_ms:g} ms).",
        evidence,
    )


# -- rate limiting and concurrency -----------------------------------------------------------
def evaluate_rate_limiting(tally: Tally, planned: int) -> CheckResult:
    """A burst of `planned` requests must get at least one 429 (the seeds' rule)."""
    evidence = tally.evidence()
    limited = tally.count(429)
    evidence.update(
        planned_requests=planned,
        rate_limited=limited,
        served=tally.served(),
        served_before_first_429=tally.served_before_first_429,
    )
    if limited == 0:
        return CheckResult(
            "rate_limiting",
            False,
            f"no 429 in a burst of {tally.requests} requests ({_statuses_text(tally)})"
            f"{_cut_short(tally)}: nothing limits the request rate.",
            evidence,
        )
    return CheckResult(
        "rate_limiting",
        True,
        f"{limited} of {tally.requests} requests answered 429, the first after "
        f"{tally.served_before_first_429} served.",
        evidence,
    )


def evaluate_concurrency(tally: Tally, planned: int, connections: int) -> CheckResult:
    """A parallel burst must be shed (429/503) without timeouts, transport errors or other 5xx."""
    evidence = tally.evidence()
    shed = tally.count(429) + tally.count(503)
    other_5xx = tally.server_errors(allow=(503,))
    transport = sum(tally.errors.values())
    evidence.update(
        planned_requests=planned,
        connections=connections,
        shed=shed,
        timeouts=tally.errors.get("timeout", 0),
        transport_errors=transport,
        other_5xx=other_5xx,
    )
    problems: list[str] = []
    if shed == 0:
        problems.append(f"nothing was shed with 429/503 ({_statuses_text(tally)})")
    if transport:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(tally.errors.items()))
        problems.append(f"requests failed instead of being shed ({kinds})")
    if other_5xx:
        problems.append(f"{other_5xx} responses were 5xx other than 503")
    if tally.timed_out:
        problems.append("the burst did not finish in its time")
    if problems:
        return CheckResult("concurrency_control", False, "; ".join(problems) + ".", evidence)
    return CheckResult(
        "concurrency_control",
        True,
        f"{connections} parallel connections: {shed} of {tally.requests} requests shed "
        f"({_statuses_text(tally)}), no timeouts.",
        evidence,
    )


# -- error handling --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorCase:
    """One deliberately wrong request and what came back (`status` None: no response)."""

    name: str
    method: str
    path: str
    #: "4xx" or an exact status code
    expected: str | int
    status: int | None = None
    error: str | None = None
    ms: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the answer is what a robust service gives."""
        if self.status is None:
            return False
        if self.expected == "4xx":
            return 400 <= self.status < 500
        return self.status == self.expected

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "method": self.method,
            "path": self.path,
            "expected": self.expected,
            "status": self.status,
            "error": self.error,
            "ms": None if self.ms is None else round(self.ms, 3),
            "ok": self.ok,
        }


def evaluate_error_handling(cases: Sequence[ErrorCase]) -> CheckResult:
    """Every wrong request must get its expected 4xx answer (and so never a 5xx)."""
    evidence = {case.name: case.to_dict() for case in cases}
    bad = [case for case in cases if not case.ok]
    if not cases:
        return CheckResult("error_handling", False, "no error case was tried.", evidence)
    if bad:
        parts = [
            f"{c.method} {c.path} got {c.status if c.status is not None else c.error} "
            f"(expected {c.expected})"
            for c in bad
        ]
        return CheckResult("error_handling", False, "; ".join(parts) + ".", evidence)
    return CheckResult(
        "error_handling",
        True,
        ", ".join(f"{c.name.replace('_', ' ')} → {c.status}" for c in cases) + ".",
        evidence,
    )


# -- monitoring ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EndpointProbe:
    """One GET of a candidate monitoring endpoint; `kind` is health, status or metrics."""

    kind: str
    path: str
    status: int | None
    ms: float | None = None
    body_bytes: int = 0
    #: for metrics: whether the body looks like Prometheus text (# HELP / # TYPE lines)
    prometheus: bool = False
    error: str | None = None

    @property
    def reachable(self) -> bool:
        """A 2xx with a body (metrics: Prometheus text)."""
        answered = self.status is not None and 200 <= self.status < 300
        if self.kind == "metrics":
            return answered and self.prometheus
        return answered

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "path": self.path,
            "status": self.status,
            "ms": None if self.ms is None else round(self.ms, 3),
            "body_bytes": self.body_bytes,
            "reachable": self.reachable,
            "error": self.error,
        }


def evaluate_monitoring(probes: Sequence[EndpointProbe]) -> CheckResult:
    """A health or status endpoint must answer 2xx (the seeds' rule); metrics are reported."""
    found = {
        kind: next((p.path for p in probes if p.kind == kind and p.reachable), None)
        for kind in ("health", "status", "metrics")
    }
    evidence: dict[str, Any] = {
        "health_path": found["health"],
        "status_path": found["status"],
        "metrics_path": found["metrics"],
        "probes": [p.to_dict() for p in probes],
    }
    metrics = (
        f"metrics at {found['metrics']}" if found["metrics"] else "no Prometheus metrics found"
    )
    if found["health"] is None and found["status"] is None:
        tried = ", ".join(p.path for p in probes if p.kind in ("health", "status"))
        return CheckResult(
            "monitoring",
            False,
            f"no health endpoint answered 2xx (tried {tried}); {metrics}.",
            evidence,
        )
    reachable = [found[k] for k in ("health", "status") if found[k]]
    return CheckResult(
        "monitoring", True, f"{' and '.join(map(str, reachable))} up; {metrics}.", evidence
    )


# -- load resilience -------------------------------------------------------------------------
def evaluate_load(
    result: Mapping[str, Any], required_percent: float = LOAD_SUCCESS_PERCENT
) -> CheckResult:
    """≥ `required_percent` of an open-model run answered 2xx/3xx (429/503 are not served).

    `result` is `LoadResult.to_dict()`; slots the engine dropped (no free connection within
    the timeout) count as failures.
    """
    counts = {int(code): n for code, n in result["status_counts"].items()}
    served = sum(n for code, n in counts.items() if 200 <= code < 400)
    attempted = int(result["requests"]) + int(result["dropped"])
    rate = served / attempted * 100.0 if attempted else 0.0
    lat = result["latency_ms"]
    evidence = {
        "target_rate": result["target_rate"],
        "duration_s": result["duration_s"],
        "requests": result["requests"],
        "dropped": result["dropped"],
        "served": served,
        "success_rate": round(rate, 2),
        "required_percent": required_percent,
        "status_counts": dict(result["status_counts"]),
        "errors": {k: v for k, v in result["errors"].items() if v},
        "latency_ms": {k: lat.get(k) for k in ("p50", "p95", "p99", "max")},
    }
    text = (
        f"{served} of {attempted} requests served ({rate:.1f} %) at "
        f"{float(result['target_rate']):g} req/s for {float(result['duration_s']):g} s"
    )
    if attempted == 0:
        return CheckResult("load_resilience", False, "no request was sent.", evidence)
    if rate < required_percent:
        refused = {k: v for k, v in result["status_counts"].items() if not 200 <= int(k) < 400}
        detail = ", ".join(f"{n}×{code}" for code, n in refused.items())
        detail = ", ".join(x for x in (detail, _errors_text(evidence["errors"])) if x)
        return CheckResult(
            "load_resilience",
            False,
            f"{text}, under the required {required_percent:g} % ({detail or 'dropped'}).",
            evidence,
        )
    p95 = lat.get("p95")
    p95_text = f", p95 {p95:.1f} ms" if isinstance(p95, int | float) else ""
    return CheckResult("load_resilience", True, f"{text}{p95_text}.", evidence)


def _errors_text(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{n}×{kind}" for kind, n in errors.items())


# -- resource utilization --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """The seeds' resource thresholds (percent of the host; MB of the target process)."""

    max_cpu_percent: float = CPU_CRITICAL_PERCENT
    max_memory_percent: float = MEMORY_CRITICAL_PERCENT
    max_rss_mb: float = PROCESS_RSS_LIMIT_MB


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def evaluate_resources(
    snapshot: Mapping[str, Any], limits: ResourceLimits, sampled_during: str
) -> CheckResult:
    """Host CPU, host memory and the target's RSS within `limits` (a `host_snapshot` dict).

    A figure the host would not give ("unavailable: …") is reported, not failed.
    """
    memory = snapshot.get("memory") or {}
    proc = snapshot.get("process")
    cpu = _number(snapshot.get("cpu_percent"))
    mem = _number(memory.get("percent"))
    process: dict[str, Any] | str | None
    rss: float | None = None
    if isinstance(proc, Mapping):
        rss = _number(proc.get("rss_peak_mb", proc.get("rss_mb")))
        process = {
            k: proc.get(k)
            for k in (
                "pid",
                "name",
                "cpu_percent",
                "rss_mb",
                "rss_peak_mb",
                "threads",
                "open_files",
            )
        }
    else:
        process = proc if is_unavailable(proc) else None
    evidence: dict[str, Any] = {
        "sampled_during": sampled_during,
        "window_s": snapshot.get("window_s"),
        "cpu_count": snapshot.get("cpu_count"),
        "system_cpu_percent": snapshot.get("cpu_percent"),
        "memory_percent": memory.get("percent"),
        "memory_available_mb": memory.get("available_mb"),
        "load_avg": snapshot.get("load_avg"),
        "process": process,
        "limits": {
            "max_cpu_percent": limits.max_cpu_percent,
            "max_memory_percent": limits.max_memory_percent,
            "max_rss_mb": limits.max_rss_mb,
        },
        "findings": list(snapshot.get("findings") or []),
        # who else is busy: on a shared host the target is not the only CPU user
        "top_cpu": list(snapshot.get("top_cpu") or [])[:3],
    }
    problems: list[str] = []
    if cpu is not None and cpu > limits.max_cpu_percent:
        problems.append(f"host CPU {cpu:.1f} % busy (> {limits.max_cpu_percent:g} %)")
    if mem is not None and mem > limits.max_memory_percent:
        problems.append(f"host memory {mem:.1f} % used (> {limits.max_memory_percent:g} %)")
    if rss is not None and rss > limits.max_rss_mb:
        problems.append(
            f"the target process peaked at {rss:.0f} MB RSS (> {limits.max_rss_mb:g} MB)"
        )
    if problems:
        return CheckResult("resource_utilization", False, "; ".join(problems) + ".", evidence)
    parts = [
        f"host CPU {cpu:.1f} %" if cpu is not None else "host CPU unknown",
        f"memory {mem:.1f} %" if mem is not None else "memory unknown",
    ]
    if rss is not None and isinstance(process, dict):
        parts.append(f"pid {process['pid']} RSS {rss:.1f} MB")
    else:
        parts.append("target process not found")
    return CheckResult(
        "resource_utilization", True, ", ".join(parts) + f" ({sampled_during}).", evidence
    )
