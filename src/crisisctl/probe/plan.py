"""Check a triage request and turn it into a plan: what to probe, how hard, against what.

`plan_triage()` validates the user's input (ValueError with one sentence saying what to do),
picks the operations (``--path``, the baseline's operations, or the URL's own path), the
reference (``--target-ms``, a saved baseline, or the 2000 ms default) and the per-request timeout
(long enough to measure a > 10× degradation when the budget allows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from crisisctl.probe.guard import DEFAULT_PREFIX
from crisisctl.probe.profile import baseline_p95, baseline_rounds, profile_operations
from crisisctl.probe.sampling import Operation
from crisisctl.transport.target import Target, is_loopback_host, parse_url

HEALTH_PATHS: Final = ("/_crisis/health", "/health", "/api/health")
DEFAULT_TARGET_MS: Final = 2000.0
MAX_SAMPLES: Final = 200
MAX_CONCURRENCY: Final = 16
MAX_OPERATIONS: Final = 10
MIN_BUDGET_S: Final = 1.0
MAX_BUDGET_S: Final = 300.0
#: default per-request timeout: long enough to measure a > 10× degradation when possible
TIMEOUT_FLOOR_S: Final = 5.0
TIMEOUT_FACTOR: Final = 11.0


@dataclass(frozen=True, slots=True)
class BaselineRef:
    """A saved baseline the latency is judged against."""

    name: str
    profile: dict[str, Any]
    created_at: datetime
    expires_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the baseline's validity period is over."""
        return (now or datetime.now(UTC)) >= self.expires_at


@dataclass(frozen=True)
class TriagePlan:
    """A checked triage request: what to probe, how hard and against what."""

    url: str
    target: Target
    operations: tuple[Operation, ...]
    samples: int
    concurrency: int
    budget_s: float
    timeout_s: float
    target_ms: float | None
    baseline: BaselineRef | None = None
    pid: int | None = None
    health_paths: tuple[str, ...] = HEALTH_PATHS
    guard_prefix: str = DEFAULT_PREFIX
    collect_host: bool = True
    #: look for the service's process on this machine (the process listening on the target's
    #: port, or the guard's pid); off, the process figures come from the guard's status only,
    #: as for a service on another machine
    local_process: bool = True
    warnings: tuple[str, ...] = field(default=())

    @property
    def max_requests(self) -> int:
        """Every request triage may send: operations plus health and guard status probes."""
        return self.samples * len(self.operations) + len(self.health_paths) + 1


def plan_triage(
    url: str,
    *,
    paths: list[str] | None = None,
    method: str = "GET",
    body: str | None = None,
    target_ms: float | None = None,
    baseline: BaselineRef | None = None,
    samples: int = 20,
    concurrency: int = 4,
    budget_s: float = 15.0,
    timeout_s: float | None = None,
    pid: int | None = None,
    health_path: str | None = None,
    guard_prefix: str = DEFAULT_PREFIX,
    collect_host: bool = True,
    target: Target | None = None,
) -> TriagePlan:
    """Check the input and build the plan; ValueError (one sentence) on anything wrong.

    `target` is `url` already parsed with the command's transport options (TLS, pins, auth
    headers); without one `url` is parsed plainly. The host's resources are read with psutil
    only when the target is on this machine (its address is loopback) or `pid` is given.
    """
    if target is None:
        target = parse_url(url, "crisisctl triage")
    if target_ms is not None and baseline is not None:
        raise ValueError("give either --target-ms or --baseline, not both.")
    if target_ms is not None and not (0 < target_ms < float("inf")):
        raise ValueError(f"--target-ms must be a positive number of milliseconds, not {target_ms}.")
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"--samples must be between 1 and {MAX_SAMPLES}, not {samples}.")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(
            f"--concurrency must be between 1 and {MAX_CONCURRENCY} (triage must not add to the "
            f"crisis), not {concurrency}."
        )
    if not MIN_BUDGET_S <= budget_s <= MAX_BUDGET_S:
        raise ValueError(
            f"--budget must be between {MIN_BUDGET_S:g} s and {MAX_BUDGET_S:g} s, "
            f"not {budget_s:g} s."
        )
    if pid is not None and pid <= 0:
        raise ValueError(f"--pid must be a positive process id, not {pid}.")
    payload = _body(body)
    method = _method(method)
    operations = _operations(target, paths, method, payload, baseline)
    warnings: list[str] = []
    if collect_host and pid is None and not is_loopback_host(target.connect_host):
        collect_host = False
        warnings.append(
            f"{target.host} is not on this machine: no local host evidence (give --pid for a "
            "local process)."
        )
    if baseline is None and target_ms is None:
        target_ms = DEFAULT_TARGET_MS
        warnings.append(
            f"no --target-ms or --baseline given: latency is judged against "
            f"{DEFAULT_TARGET_MS:g} ms."
        )
    if baseline is not None:
        if baseline.expired():
            warnings.append(
                f"baseline {baseline.name!r} expired at {baseline.expires_at.isoformat()}: "
                "its figures may no longer describe the healthy service; save a fresh one."
            )
        missing = [op.name for op in operations if baseline_p95(baseline.profile, op.name) is None]
        if missing:
            warnings.append(
                f"baseline {baseline.name!r} has no p95 for {', '.join(missing)}: their latency "
                "is not graded."
            )
        unsampled = [
            op.name
            for op in operations
            if baseline_p95(baseline.profile, op.name) is not None
            and baseline_rounds(baseline.profile, op.name) is None
        ]
        if unsampled:
            warnings.append(
                f"baseline {baseline.name!r} kept no latency samples for {', '.join(unsampled)} "
                "(saved by an older crisisctl): only this run's own spread is allowed for; save "
                "it again with `crisisctl baseline save` to judge against the baseline's spread."
            )
    if timeout_s is None:
        reference = target_ms or _max_baseline_p95(baseline, operations) or DEFAULT_TARGET_MS
        timeout_s = min(budget_s / 2, max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * reference / 1000))
    elif not 0 < timeout_s <= budget_s:
        raise ValueError(f"--timeout must be above 0 and at most the budget ({budget_s:g} s).")
    health = (_path(health_path, "--health"),) if health_path else HEALTH_PATHS
    prefix = _path(guard_prefix, "--guard-prefix").rstrip("/") or DEFAULT_PREFIX
    return TriagePlan(
        url=url, target=target, operations=tuple(operations), samples=samples,
        concurrency=concurrency, budget_s=budget_s, timeout_s=timeout_s, target_ms=target_ms,
        baseline=baseline, pid=pid, health_paths=health, guard_prefix=prefix,
        collect_host=collect_host, warnings=tuple(warnings),
    )  # fmt: skip


def _method(method: str) -> str:
    cleaned = method.strip().upper()
    if not cleaned.isalpha():
        raise ValueError(f"--method {method!r} is not an HTTP method such as GET or POST.")
    return cleaned


def _body(body: str | None) -> bytes | None:
    if body is None:
        return None
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--body is not valid JSON ({exc.msg} at position {exc.pos}).") from None
    return body.encode()


def _path(path: str, option: str) -> str:
    if not path.startswith("/") or any(c in path for c in " \r\n\t"):
        raise ValueError(f"{option} {path!r} must be a path starting with '/' without spaces.")
    return path


def _operations(
    target: Target,
    paths: list[str] | None,
    method: str,
    body: bytes | None,
    baseline: BaselineRef | None,
) -> list[Operation]:
    if paths:
        ops = [Operation(method, _path(p, "--path"), body) for p in paths]
    elif baseline is not None and target.path == "/":
        ops = [
            Operation(m, p, b.encode() if b else None)
            for m, p, b in profile_operations(baseline.profile)
        ]
    else:
        ops = [Operation(method, target.path, body)]
    unique = list(dict.fromkeys(ops))
    if len(unique) > MAX_OPERATIONS:
        raise ValueError(f"at most {MAX_OPERATIONS} operations per triage, not {len(unique)}.")
    return unique


def _max_baseline_p95(baseline: BaselineRef | None, ops: list[Operation]) -> float | None:
    if baseline is None:
        return None
    values = [baseline_p95(baseline.profile, op.name) for op in ops]
    known = [v for v in values if v is not None]
    return max(known) if known else None
