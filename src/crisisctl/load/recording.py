"""What a load run counts: `LoadResult`, per-operation figures and per-second buckets.

Every latency goes into a `LatencyHistogram` (the run's, its operation's and its second's),
so memory does not grow with the number of requests. Results of several processes merge
exactly (`LoadResult.merge`, via `to_dict(histograms=True)` / `from_dict`). The engine
records through `crisisctl.load.recorder.Recorder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crisisctl import __version__
from crisisctl.load.thresholds import ScopeStats
from crisisctl.stats import LatencyHistogram
from crisisctl.transport.client import ERROR_KINDS

__all__ = ["LoadResult", "OperationStats", "SecondStats", "is_unexpected"]


def is_unexpected(status: int, expect: frozenset[int] | None) -> bool:
    """A status outside the expected ones (default: 4xx and 5xx are unexpected)."""
    return status >= 400 if expect is None else status not in expect


def _add_counts(into: dict[Any, int], other: Mapping[Any, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


@dataclass(slots=True)
class SecondStats:
    """One second of a run: completions (responses and errors) and their latency."""

    requests: int = 0
    errors: int = 0
    unexpected: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self, second: int, width_s: float = 1.0) -> dict[str, Any]:
        """The time-series point: counts, rps and p50/p95/p99 in ms."""
        p50, p95, p99 = self.latency.percentiles((50.0, 95.0, 99.0))
        return {
            "second": second,
            "requests": self.requests,
            "rps": round(self.requests / width_s, 3) if width_s > 0 else float(self.requests),
            "errors": self.errors,
            "unexpected_status": self.unexpected,
            "p50_ms": p50 / 1000.0,
            "p95_ms": p95 / 1000.0,
            "p99_ms": p99 / 1000.0,
        }

    def merge(self, other: SecondStats) -> None:
        """Add `other` (exact)."""
        self.requests += other.requests
        self.errors += other.errors
        self.unexpected += other.unexpected
        self.latency.merge(other.latency)

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON or a pipe."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "unexpected": self.unexpected,
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SecondStats:
        """Inverse of `to_data`."""
        return cls(
            int(data["requests"]),
            int(data["errors"]),
            int(data["unexpected"]),
            LatencyHistogram.from_dict(data["latency"]),
        )


@dataclass(slots=True)
class OperationStats:
    """One operation's figures (latency: corrected for coordinated omission in the open model)."""

    name: str
    method: str = "GET"
    path: str = "/"
    weight: float = 1.0
    expect: frozenset[int] | None = None
    requests: int = 0
    completed: int = 0
    unexpected: int = 0
    bytes_received: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: since the last tick: completions, transport errors, unexpected statuses, latency
    tick: SecondStats = field(default_factory=SecondStats)

    @property
    def error_total(self) -> int:
        """Requests that ended in a transport error."""
        return sum(self.errors.values())

    def scope(self, duration_s: float) -> ScopeStats:
        """The figures thresholds read."""
        return ScopeStats(
            self.requests, self.completed, self.error_total, self.unexpected, self.latency,
            duration_s,
        )  # fmt: skip

    def take_tick(self) -> SecondStats:
        """The figures since the last tick, and start again."""
        out = self.tick
        self.tick = SecondStats()
        return out

    def to_dict(self, duration_s: float, histograms: bool = False) -> dict[str, Any]:
        """JSON form (latency in ms)."""
        failed = self.error_total + self.unexpected
        out: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "path": self.path,
            "weight": self.weight,
            "expect_status": None if self.expect is None else sorted(self.expect),
            "requests": self.requests,
            "completed": self.completed,
            "requests_per_second": round(self.requests / duration_s, 3) if duration_s else 0.0,
            "status_counts": {str(code): n for code, n in sorted(self.status_counts.items())},
            "errors": dict(self.errors),
            "error_total": self.error_total,
            "unexpected_status": self.unexpected,
            "error_rate": round(failed / self.requests, 6) if self.requests else 0.0,
            "bytes_received": self.bytes_received,
            "latency_ms": self.latency.summary().as_dict(),
        }
        if histograms:
            out["histogram"] = self.latency.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperationStats:
        """Inverse of ``to_dict(histograms=True)``."""
        expect = data.get("expect_status")
        return cls(
            name=str(data["name"]),
            method=str(data["method"]),
            path=str(data["path"]),
            weight=float(data["weight"]),
            expect=None if expect is None else frozenset(int(s) for s in expect),
            requests=int(data["requests"]),
            completed=int(data["completed"]),
            unexpected=int(data["unexpected_status"]),
            bytes_received=int(data["bytes_received"]),
            status_counts={int(k): int(v) for k, v in data["status_counts"].items()},
            errors={str(k): int(v) for k, v in data["errors"].items()},
            latency=LatencyHistogram.from_dict(data["histogram"]),
        )

    def merge(self, other: OperationStats) -> None:
        """Add `other`'s figures (exact)."""
        self.requests += other.requests
        self.completed += other.completed
        self.unexpected += other.unexpected
        self.bytes_received += other.bytes_received
        _add_counts(self.status_counts, other.status_counts)
        _add_counts(self.errors, other.errors)
        self.latency.merge(other.latency)


@dataclass(slots=True)
class LoadResult:
    """What one run measured. ``requests == completed + error_total`` (once finished)."""

    model: str
    url: str
    duration_s: float
    timeout_s: float
    #: open model: the mean target rate; closed model: 0
    target_rate: float = 0.0
    connections: int = 0
    users: int = 0
    #: requests started
    requests: int = 0
    #: requests that got a complete response
    completed: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    bytes_received: int = 0
    #: connections opened (keep-alive reuse: far fewer than requests)
    connects: int = 0
    #: seconds spent opening them: TCP connects, and TLS handshakes (https:// only)
    connect_s: float = 0.0
    tls_s: float = 0.0
    #: open model: slots that started more than 1 ms after their intended time
    late_starts: int = 0
    #: open model: slots never started (no free connection within the timeout, or run over)
    dropped: int = 0
    #: open model: from the intended send time; closed model: the only histogram
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: open model: from the actual send time; None for the closed model
    latency_uncorrected: LatencyHistogram | None = None
    elapsed_s: float = 0.0
    per_second: list[dict[str, Any]] = field(default_factory=list)
    #: responses whose status was not expected (default: 4xx and 5xx)
    unexpected: int = 0
    operations: dict[str, OperationStats] = field(default_factory=dict)
    #: why the run stopped early, if it did
    aborted: str | None = None
    processes: int = 1
    #: open-model journeys: arrivals that started a journey (each sends several requests);
    #: None for runs of single requests
    journeys: int | None = None

    @property
    def error_total(self) -> int:
        """Requests that ended in an error instead of a response."""
        return sum(self.errors.values())

    @property
    def requests_per_second(self) -> float:
        """Requests started per second of the run's duration."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """(transport errors + unexpected statuses) ÷ requests."""
        return (self.error_total + self.unexpected) / self.requests if self.requests else 0.0

    @property
    def scheduled(self) -> int:
        """Open model: arrivals the schedule asked for up to the end (or the abort) of the run,
        each either started (`requests`, or `journeys` for a journey) or dropped; closed model:
        the requests started."""
        started = self.requests if self.journeys is None else self.journeys
        return started + self.dropped

    @property
    def dropped_rate(self) -> float:
        """Open model: dropped arrivals ÷ scheduled arrivals (0 when nothing was scheduled)."""
        scheduled = self.scheduled
        return self.dropped / scheduled if scheduled else 0.0

    @property
    def unreachable(self) -> bool:
        """True when requests were made and every one was refused."""
        return self.requests > 0 and self.errors.get("refused", 0) == self.requests

    def scope(self, operation: str | None = None) -> ScopeStats | None:
        """Figures of the run (None) or of one operation (None when there is no such one)."""
        if operation is None:
            return ScopeStats(
                self.requests, self.completed, self.error_total, self.unexpected, self.latency,
                self.duration_s, self.dropped, self.journeys,
            )  # fmt: skip
        op = self.operations.get(operation)
        return None if op is None else op.scope(self.duration_s)

    def to_dict(self, histograms: bool = False) -> dict[str, Any]:
        """JSON-able, snake_case keys, latencies in ms (raw histograms too if `histograms`)."""
        out: dict[str, Any] = {
            "report": "load",
            "crisisctl_version": __version__,
            "model": self.model,
            "url": self.url,
            "duration_s": self.duration_s,
            "timeout_s": self.timeout_s,
            "target_rate": self.target_rate,
            "connections": self.connections,
            "users": self.users,
            "processes": self.processes,
            "requests": self.requests,
            "completed": self.completed,
            "requests_per_second": round(self.requests_per_second, 3),
            "status_counts": {str(code): n for code, n in sorted(self.status_counts.items())},
            "errors": dict(self.errors),
            "error_total": self.error_total,
            "unexpected_status": self.unexpected,
            "error_rate": round(self.error_rate, 6),
            "bytes_received": self.bytes_received,
            "connects": self.connects,
            # mean set-up time of a connection, split: TCP connect, then the TLS handshake
            "connect_ms_mean": _mean_ms(self.connect_s, self.connects),
            "tls_ms_mean": _mean_ms(self.tls_s, self.connects) if self.tls_s else None,
            "connect_s_total": round(self.connect_s, 6),
            "tls_s_total": round(self.tls_s, 6),
            "late_starts": self.late_starts,
            "dropped": self.dropped,
            "journeys": self.journeys,
            "scheduled": self.scheduled,
            "dropped_rate": round(self.dropped_rate, 6),
            "elapsed_s": round(self.elapsed_s, 6),
            "aborted": self.aborted,
            "latency_ms": self.latency.summary().as_dict(),
            "latency_uncorrected_ms": (
                None
                if self.latency_uncorrected is None
                else self.latency_uncorrected.summary().as_dict()
            ),
            "operations": {
                name: op.to_dict(self.duration_s, histograms)
                for name, op in self.operations.items()
            },
            "per_second": list(self.per_second),
        }
        if histograms:
            out["histograms"] = {
                "latency": self.latency.to_dict(),
                "latency_uncorrected": (
                    None if self.latency_uncorrected is None else self.latency_uncorrected.to_dict()
                ),
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadResult:
        """Inverse of ``to_dict(histograms=True)``; ValueError when the histograms are missing."""
        try:
            hists = data["histograms"]
            uncorrected = hists["latency_uncorrected"]
            result = cls(
                model=str(data["model"]),
                url=str(data["url"]),
                duration_s=float(data["duration_s"]),
                timeout_s=float(data["timeout_s"]),
                target_rate=float(data["target_rate"]),
                connections=int(data["connections"]),
                users=int(data["users"]),
                requests=int(data["requests"]),
                completed=int(data["completed"]),
                status_counts={int(k): int(v) for k, v in data["status_counts"].items()},
                errors={str(k): int(v) for k, v in data["errors"].items()},
                bytes_received=int(data["bytes_received"]),
                connects=int(data["connects"]),
                connect_s=float(data.get("connect_s_total", 0.0)),
                tls_s=float(data.get("tls_s_total", 0.0)),
                late_starts=int(data["late_starts"]),
                dropped=int(data["dropped"]),
                latency=LatencyHistogram.from_dict(hists["latency"]),
                latency_uncorrected=(
                    None if uncorrected is None else LatencyHistogram.from_dict(uncorrected)
                ),
                elapsed_s=float(data["elapsed_s"]),
                per_second=list(data["per_second"]),
                unexpected=int(data["unexpected_status"]),
                operations={
                    str(k): OperationStats.from_dict(v) for k, v in data["operations"].items()
                },
                aborted=data.get("aborted"),
                processes=int(data.get("processes", 1)),
                journeys=None if data.get("journeys") is None else int(data["journeys"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a load result with histograms ({exc!r}).") from None
        return result

    def merge(self, other: LoadResult) -> None:
        """Add another process's result of the same run (exact: counts and histograms add).

        `per_second` is left alone: percentiles per second do not add, so the caller rebuilds
        the series from the processes' ticks (`crisisctl.load.processes`).
        """
        self.target_rate += other.target_rate
        self.connections += other.connections
        self.users += other.users
        self.duration_s = max(self.duration_s, other.duration_s)
        self.requests += other.requests
        self.completed += other.completed
        _add_counts(self.status_counts, other.status_counts)
        _add_counts(self.errors, other.errors)
        self.bytes_received += other.bytes_received
        self.connects += other.connects
        self.connect_s += other.connect_s
        self.tls_s += other.tls_s
        self.late_starts += other.late_starts
        self.dropped += other.dropped
        if other.journeys is not None:
            self.journeys = (self.journeys or 0) + other.journeys
        self.latency.merge(other.latency)
        if self.latency_uncorrected is not None and other.latency_uncorrected is not None:
            self.latency_uncorrected.merge(other.latency_uncorrected)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.unexpected += other.unexpected
        for name, op in other.operations.items():
            if name in self.operations:
                self.operations[name].merge(op)
            else:
                self.operations[name] = op
        self.aborted = self.aborted or other.aborted
        self.processes += other.processes


def _mean_ms(total_s: float, count: int) -> float | None:
    """`total_s` over `count` in ms (None without any)."""
    return round(total_s * 1000.0 / count, 3) if count else None
