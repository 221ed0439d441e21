"""Sample operations with light, capped concurrency before a deadline, and aggregate per operation.

`sample_operations()` sends `samples` requests per operation, interleaved, with at most
`concurrency` in flight, each bounded by its own timeout and by the shared deadline: requests
that would start after the deadline are not sent (counted as ``not_sent``), requests still in
flight at the deadline end as timeouts. `OperationStats` keeps latency in `LatencyHistogram`s
(latency of the requests that did not fail, i.e. answered < 500), status codes and classes,
error kinds with one example each, and the per-request timing rows. The raw latencies are kept
too (`latency_samples_ms`, at most the plan's ≤ 200 samples per operation): a baseline stores
them, and triage bootstraps them to tell noise from a slowdown (see spread.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final

from crisisctl.probe.http import ProbeResult, probe, with_path
from crisisctl.stats import LatencyHistogram
from crisisctl.transport.target import Target

#: Do not start a request with less than this much time left before the deadline.
MIN_REQUEST_TIME_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class Operation:
    """One request to sample: method, path and optional JSON body."""

    method: str
    path: str
    body: bytes | None = None

    @property
    def name(self) -> str:
        """ "GET /api/x"."""
        return f"{self.method} {self.path}"


def summarize(hist: LatencyHistogram) -> dict[str, float | int] | None:
    """Compact percentiles in ms ({count, min, p50, p95, p99, max}), None when empty."""
    if hist.count == 0:
        return None
    s = hist.summary()
    return {
        "count": s.count,
        "min": s.min_ms,
        "p50": s.p50_ms,
        "p95": s.p95_ms,
        "p99": s.p99_ms,
        "max": s.max_ms,
    }


@dataclass
class OperationStats:
    """Everything measured for one operation."""

    operation: Operation
    planned: int
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    dns: LatencyHistogram = field(default_factory=LatencyHistogram)
    connect: LatencyHistogram = field(default_factory=LatencyHistogram)
    tls: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_byte: LatencyHistogram = field(default_factory=LatencyHistogram)
    sent: int = 0
    answered: int = 0
    failed: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    latency_samples_ms: list[float] = field(default_factory=list)

    def add(self, result: ProbeResult) -> None:
        """Count one finished request."""
        self.sent += 1
        self.requests.append(result.as_dict())
        if result.failed:
            self.failed += 1
        if result.dns_ms is not None:
            self.dns.record_us(round(result.dns_ms * 1000))
        if result.connect_ms is not None:
            self.connect.record_us(round(result.connect_ms * 1000))
        if result.tls_ms is not None:
            self.tls.record_us(round(result.tls_ms * 1000))
        if result.first_byte_ms is not None and result.answered:
            self.first_byte.record_us(round(result.first_byte_ms * 1000))
        if result.status is not None:
            self.answered += 1
            self.status_counts[result.status] = self.status_counts.get(result.status, 0) + 1
            if result.total_ms is not None and not result.failed:
                # fast 5xx answers must not make a slow service look fast: errors are graded
                # by the error rate, latency over the requests that did not fail
                self.latency.record_us(round(result.total_ms * 1000))
                self.latency_samples_ms.append(result.total_ms)
        elif result.error is not None:
            self.errors[result.error] = self.errors.get(result.error, 0) + 1
            self.error_examples.setdefault(result.error, result.detail)

    @property
    def not_sent(self) -> int:
        """Requests planned but not started because the budget ran out."""
        return self.planned - self.sent

    @property
    def error_rate(self) -> float | None:
        """Failed ÷ sent (5xx and requests without a response), None when nothing was sent."""
        return self.failed / self.sent if self.sent else None

    @property
    def p95_ms(self) -> float | None:
        """p95 total time of the requests that did not fail, None without any."""
        return self.latency.summary().p95_ms if self.latency.count else None

    def status_classes(self) -> dict[str, int]:
        """{"2xx": n, …} over the answered requests."""
        out: dict[str, int] = {}
        for status, n in sorted(self.status_counts.items()):
            key = f"{status // 100}xx"
            out[key] = out.get(key, 0) + n
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON form; timings in ms."""
        return {
            "operation": self.operation.name,
            "method": self.operation.method,
            "path": self.operation.path,
            "body": self.operation.body.decode("utf-8", "replace") if self.operation.body else None,
            "planned": self.planned,
            "sent": self.sent,
            "not_sent": self.not_sent,
            "answered": self.answered,
            "failed": self.failed,
            "error_rate": self.error_rate,
            "status_codes": {str(k): v for k, v in sorted(self.status_counts.items())},
            "status_classes": self.status_classes(),
            "errors": dict(self.errors),
            "error_examples": dict(self.error_examples),
            "latency_ms": summarize(self.latency),
            "latency_samples_ms": list(self.latency_samples_ms),
            "dns_ms": summarize(self.dns),
            "connect_ms": summarize(self.connect),
            "tls_ms": summarize(self.tls),
            "first_byte_ms": summarize(self.first_byte),
        }


async def sample_operations(
    target: Target,
    operations: list[Operation],
    *,
    samples: int,
    concurrency: int,
    timeout_s: float,
    deadline: float,
) -> list[OperationStats]:
    """Probe every operation `samples` times (interleaved), ≤ `concurrency` in flight.

    `deadline` is a `time.monotonic()` value; nothing starts after it and nothing runs past it.
    """
    stats = [OperationStats(op, samples) for op in operations]
    jobs = [i for _ in range(samples) for i in range(len(operations))]
    jobs.reverse()  # pop() from the end keeps the interleaved order

    async def worker() -> None:
        while jobs:
            remaining = deadline - time.monotonic()
            if remaining < MIN_REQUEST_TIME_S:
                return
            index = jobs.pop()
            op = operations[index]
            result = await probe(
                with_path(target, op.path),
                operation=op.name,
                method=op.method,
                body=op.body,
                timeout_s=min(timeout_s, remaining),
                body_cap=0,
            )
            stats[index].add(result)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)))))
    return stats
