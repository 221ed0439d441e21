"""The validation suite's verdicts (the seeds' phase 5): pure functions of what was measured.

`crisisctl.validate.suite` sends the requests and measures; everything here only judges what was
measured, so every rule can be tested without a server. Each check yields a `CheckResult` of
`crisisctl.validate.report` with a one-line summary and its evidence.

The rules, from the seeds' validation code:

- performance_baseline: every response 2xx, p95 ≤ target and the slowest ≤ 2 × target.
- rate_limiting: a burst gets at least one 429.
- concurrency_control: in `shedding` (it must tell concurrency shedding from a rate limit).
- resource_utilization: the service's own process (the one listening on the target's port)
  ≤ 90 % CPU of one core and ≤ 2048 MB RSS, the host's memory ≤ 90 %; skipped with the reason
  when that process cannot be found or read (the host's CPU is not the service's).
- error_handling: malformed JSON to a route that takes a body → a 4xx from reading it (not
  401/403/404/405/429; not applicable when no route takes a body), an unknown route → 404, a
  wrong method → 405; never 5xx.
- monitoring: a health (or guard status) endpoint answers 2xx; metrics are reported when found.
- load_resilience: ≥ 95 % of the requests of a moderate open-model load answered 2xx/3xx.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crisisctl.probe.guard import GUARD_SOURCE, local_source
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


# -- rate limiting -------------------------------------------------------------------------
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


# -- error handling --------------------------------------------------------------------------
#: answers that show the handler never judged the body (no route, no method, no entry)
NOT_JUDGED = frozenset({401, 403, 404, 405, 429})


@dataclass(frozen=True, slots=True)
class ErrorCase:
    """One deliberately wrong request and what came back (`status` None: no response).

    A case that could not be tried (no route accepts a body) is not `applicable` and says why
    in `note`; it is listed but not judged.
    """

    name: str
    method: str
    path: str
    #: "4xx" or an exact status code
    expected: str | int
    status: int | None = None
    error: str | None = None
    ms: float | None = None
    #: 4xx statuses that do not count (for malformed JSON: the body was never read)
    excluded: frozenset[int] = frozenset()
    applicable: bool = True
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the answer is what a robust service gives."""
        if self.status is None:
            return False
        if self.expected == "4xx":
            return 400 <= self.status < 500 and self.status not in self.excluded
        return self.status == self.expected

    @property
    def expected_text(self) -> str:
        """The expectation as people read it, e.g. "4xx, not 404/405"."""
        if self.excluded:
            return f"{self.expected}, not {'/'.join(map(str, sorted(self.excluded)))}"
        return str(self.expected)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "method": self.method,
            "path": self.path,
            "expected": self.expected_text,
            "status": self.status,
            "error": self.error,
            "ms": None if self.ms is None else round(self.ms, 3),
            "ok": self.ok if self.applicable else None,
            "applicable": self.applicable,
            "note": self.note or None,
        }


def evaluate_error_handling(cases: Sequence[ErrorCase]) -> CheckResult:
    """Every applicable wrong request must get its expected 4xx answer (and so never a 5xx).

    Cases that are not applicable are reported with their reason and not judged.
    """
    evidence = {case.name: case.to_dict() for case in cases}
    tried = [case for case in cases if case.applicable]
    left_out = [case for case in cases if not case.applicable]
    bad = [case for case in tried if not case.ok]
    if not tried:
        return CheckResult("error_handling", False, "no error case was tried.", evidence)
    not_applicable = "".join(
        f"; {c.name.replace('_', ' ')}: not applicable ({c.note})" for c in left_out
    )
    if bad:
        parts = [
            f"{c.method} {c.path} got {c.status if c.status is not None else c.error} "
            f"(expected {c.expected_text})"
            for c in bad
        ]
        return CheckResult(
            "error_handling", False, "; ".join(parts) + not_applicable + ".", evidence
        )
    return CheckResult(
        "error_handling",
        True,
        ", ".join(f"{c.name.replace('_', ' ')} → {c.status}" for c in tried) + not_applicable + ".",
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
    """The seeds' resource thresholds, applied to the service's own process.

    `max_cpu_percent` is the process's CPU in percent of one core (as `top` shows it: a
    process busy on two cores is at 200 %); `max_memory_percent` is the host's memory in use
    (a host out of memory takes the service down whoever fills it); `max_rss_mb` the process's
    peak resident memory.
    """

    max_cpu_percent: float = CPU_CRITICAL_PERCENT
    max_memory_percent: float = MEMORY_CRITICAL_PERCENT
    max_rss_mb: float = PROCESS_RSS_LIMIT_MB


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


PROCESS_FIELDS = ("pid", "name", "cpu_percent", "rss_mb", "rss_peak_mb", "threads", "open_files")


def evaluate_resources(
    snapshot: Mapping[str, Any],
    limits: ResourceLimits,
    sampled_during: str,
    missing: str = "the service's process was not measured",
    from_guard: Mapping[str, Any] | None = None,
) -> CheckResult:
    """The service process's CPU and peak RSS, and the host's memory, within `limits`.

    `snapshot` is a `probe.host` snapshot taken with the pid listening on the target's port.
    Without that process's figures (no pid: `missing` says why) the guard's own process
    figures are used when the target runs the guard (`from_guard`: `probe.guard.
    process_evidence`); with neither, the check is skipped with the reason: the host's CPU
    would measure whatever else runs there (the load generator first), not the service. The
    evidence's ``source`` says where the process figures came from.
    """
    memory = snapshot.get("memory") or {}
    proc = snapshot.get("process")
    source: str | None = None
    if isinstance(proc, Mapping) and isinstance(proc.get("pid"), int):
        source = local_source(proc["pid"])
    elif from_guard is not None and (proc is None or is_unavailable(proc)):
        proc, source = from_guard, GUARD_SOURCE
    mem = _number(memory.get("percent"))
    evidence: dict[str, Any] = {
        "sampled_during": sampled_during,
        "window_s": snapshot.get("window_s"),
        "cpu_count": snapshot.get("cpu_count"),
        "process": None,
        "memory_percent": memory.get("percent"),
        "memory_available_mb": memory.get("available_mb"),
        # the host's figures are context, not the verdict: on a shared host (and with the
        # load generator beside the service) they measure more than the service
        "system_cpu_percent": snapshot.get("cpu_percent"),
        "load_avg": snapshot.get("load_avg"),
        "limits": {
            "max_cpu_percent": limits.max_cpu_percent,
            "max_memory_percent": limits.max_memory_percent,
            "max_rss_mb": limits.max_rss_mb,
        },
        "findings": list(snapshot.get("findings") or []),
        "top_cpu": list(snapshot.get("top_cpu") or [])[:3],
        "source": source,
    }
    if is_unavailable(proc):
        evidence["process"] = proc
        return CheckResult.skip(
            "resource_utilization", f"the service's process could not be read ({proc}).", evidence
        )
    if not isinstance(proc, Mapping):
        return CheckResult.skip("resource_utilization", f"{missing}.", evidence)
    process = {k: proc.get(k) for k in PROCESS_FIELDS}
    if source == GUARD_SOURCE:
        process["cpu_basis"] = proc.get("cpu_basis")
        process["loop_lag_ms"] = proc.get("loop_lag_ms")
    evidence["process"] = process
    cpu = _number(proc.get("cpu_percent"))
    rss = _number(proc.get("rss_peak_mb", proc.get("rss_mb")))
    if cpu is None and rss is None:
        return CheckResult.skip(
            "resource_utilization",
            f"pid {process['pid']} gave neither its CPU nor its memory "
            f"({proc.get('cpu_percent')}).",
            evidence,
        )
    problems: list[str] = []
    who = f"pid {process['pid']} ({process['name']})"
    if cpu is not None and cpu > limits.max_cpu_percent:
        problems.append(f"{who} used {cpu:.1f} % CPU (> {limits.max_cpu_percent:g} % of one core)")
    if rss is not None and rss > limits.max_rss_mb:
        problems.append(f"{who} peaked at {rss:.0f} MB RSS (> {limits.max_rss_mb:g} MB)")
    if mem is not None and mem > limits.max_memory_percent:
        problems.append(f"host memory {mem:.1f} % used (> {limits.max_memory_percent:g} %)")
    if problems:
        text = "; ".join(problems) + f" (process figures from {source})."
        return CheckResult("resource_utilization", False, text, evidence)
    parts = [
        f"{who}: CPU {cpu:.1f} % of one core" if cpu is not None else f"{who}: CPU unknown",
        f"RSS {rss:.1f} MB" if rss is not None else "RSS unknown",
        f"host memory {mem:.1f} %" if mem is not None else "host memory unknown",
    ]
    return CheckResult(
        "resource_utilization",
        True,
        ", ".join(parts) + f" ({sampled_during}; process figures from {source}).",
        evidence,
    )
