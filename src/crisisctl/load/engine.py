"""The load engine: open-model (`run_open`) and closed-model (`run_closed`) HTTP/1.1 runs.

Open model: requests arrive on a schedule — a constant rate, or stages that ramp the rate
linearly (`RateSchedule`) — whatever happened to earlier requests. A pool of `connections`
workers, each with one keep-alive `HttpClient`, takes the next due slot; latency is measured
from the intended send time (corrected for coordinated omission) and from the actual send
time (uncorrected). A slot that could not start within `timeout_s` of its intended time
(no free connection) is dropped and counted; one that starts more than 1 ms late is a late
start.

Closed model: `users` virtual users, each with its own keep-alive connection, send a
request, wait for the response, think (constant, uniform or exponential), and repeat;
users start spread over `ramp_up_s`.

Both runs are bounded: nothing is sent after `duration_s`; outstanding requests get at most
`timeout_s` more, then are cancelled and counted as timeouts. Every latency goes into a
`LatencyHistogram` (one per second too, for the time series); no latency list is kept.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crisisctl.load.client import (
    ERROR_KINDS,
    HttpClient,
    RequestError,
    build_request,
    parse_target,
)
from crisisctl.stats import LatencyHistogram

__all__ = ["LoadResult", "RateSchedule", "ThinkTime", "run_closed", "run_open"]

#: A request that starts more than this long after its intended time counts as a late start.
LATE_START_S = 0.001
#: Timers fire up to ~1 ms late, so a worker aims this much early (see lab/openloop.py).
EARLY_S = 0.0005


# -- schedules -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RateSchedule:
    """Arrival rate over time: linear segments (duration_s, start_rate, end_rate)."""

    segments: tuple[tuple[float, float, float], ...]

    @classmethod
    def constant(cls, rate: float, duration_s: float) -> RateSchedule:
        """`rate` requests/s for `duration_s` seconds."""
        return cls.from_stages(rate, [(duration_s, rate)])

    @classmethod
    def from_stages(cls, start_rate: float, stages: Sequence[tuple[float, float]]) -> RateSchedule:
        """From `start_rate`, each stage ramps linearly to its target rate over its duration."""
        if not stages:
            raise ValueError("a staged schedule needs at least one (duration_s, rate) stage.")
        segments = []
        previous = start_rate
        for duration_s, target in [(0.0, start_rate), *stages]:
            if not (math.isfinite(duration_s) and duration_s >= 0):
                raise ValueError(f"stage durations must be ≥ 0 seconds, not {duration_s!r}.")
            if not (math.isfinite(target) and target >= 0):
                raise ValueError(f"rates must be ≥ 0 requests per second, not {target!r}.")
            if duration_s > 0:
                segments.append((float(duration_s), float(previous), float(target)))
            previous = target
        schedule = cls(tuple(segments))
        if schedule.duration_s <= 0:
            raise ValueError("the schedule must last longer than 0 seconds.")
        return schedule

    @property
    def duration_s(self) -> float:
        """Total length of the schedule in seconds."""
        return sum(d for d, _, _ in self.segments)

    def rate_at(self, t: float) -> float:
        """The target rate (requests/s) `t` seconds into the schedule (0 outside it)."""
        start = 0.0
        for d, r0, r1 in self.segments:
            if start <= t < start + d:
                return r0 + (r1 - r0) * (t - start) / d
            start += d
        return 0.0

    def expected(self) -> float:
        """Requests the schedule asks for in total (the area under the rate)."""
        return sum(d * (r0 + r1) / 2.0 for d, r0, r1 in self.segments)

    def send_times(self) -> Iterator[float]:
        """Offsets (s) of every request: request k is due when the integral of the rate is k."""
        k = 0
        start = 0.0
        before = 0.0  # requests the earlier segments account for
        for d, r0, r1 in self.segments:
            a = (r1 - r0) / (2.0 * d)
            area = d * (r0 + r1) / 2.0
            while k - before < area - 1e-9:
                need = max(k - before, 0.0)
                # solve a t² + r0 t = need for the smallest t ≥ 0, in a cancellation-free form
                disc = r0 * r0 + 4.0 * a * need
                denom = r0 + math.sqrt(max(disc, 0.0))
                t = 2.0 * need / denom if denom > 0 else 0.0
                yield start + min(t, d)
                k += 1
            before += area
            start += d


@dataclass(frozen=True, slots=True)
class ThinkTime:
    """A closed-model user's pause between requests: constant, uniform or exponential."""

    kind: str = "constant"
    #: constant: the pause; exponential: the mean; uniform: the low bound (seconds)
    value_s: float = 0.0
    #: uniform only: the high bound (seconds)
    high_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "uniform", "exponential"):
            raise ValueError(
                f"think time must be constant, uniform or exponential, not {self.kind!r}."
            )
        if not (math.isfinite(self.value_s) and self.value_s >= 0):
            raise ValueError(f"think time must be ≥ 0 seconds, not {self.value_s!r}.")
        if self.kind == "uniform" and not (
            math.isfinite(self.high_s) and self.high_s >= self.value_s
        ):
            raise ValueError("a uniform think time needs high_s ≥ value_s.")

    def draw(self, rng: random.Random) -> float:
        """One pause in seconds."""
        if self.kind == "uniform":
            return rng.uniform(self.value_s, self.high_s)
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.value_s) if self.value_s > 0 else 0.0
        return self.value_s


# -- results ---------------------------------------------------------------------------------
@dataclass(slots=True)
class _Second:
    requests: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self, second: int) -> dict[str, Any]:
        p50, p95, p99 = self.latency.percentiles((50.0, 95.0, 99.0))
        return {
            "second": second,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": p50 / 1000.0,
            "p95_ms": p95 / 1000.0,
            "p99_ms": p99 / 1000.0,
        }


@dataclass(slots=True)
class LoadResult:
    """What one run measured. ``requests == completed + sum(errors.values())``."""

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

    @property
    def error_total(self) -> int:
        """Requests that ended in an error instead of a response."""
        return sum(self.errors.values())

    @property
    def requests_per_second(self) -> float:
        """Requests started per second of the run's duration."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def unreachable(self) -> bool:
        """True when requests were made and every one was refused."""
        return self.requests > 0 and self.errors.get("refused", 0) == self.requests

    def to_dict(self, histograms: bool = False) -> dict[str, Any]:
        """JSON-able, snake_case keys, latencies in ms (raw histograms too if `histograms`)."""
        out: dict[str, Any] = {
            "model": self.model,
            "url": self.url,
            "duration_s": self.duration_s,
            "timeout_s": self.timeout_s,
            "target_rate": self.target_rate,
            "connections": self.connections,
            "users": self.users,
            "requests": self.requests,
            "completed": self.completed,
            "requests_per_second": round(self.requests_per_second, 3),
            "status_counts": {str(code): n for code, n in sorted(self.status_counts.items())},
            "errors": dict(self.errors),
            "error_total": self.error_total,
            "bytes_received": self.bytes_received,
            "connects": self.connects,
            "late_starts": self.late_starts,
            "dropped": self.dropped,
            "elapsed_s": round(self.elapsed_s, 6),
            "latency_ms": self.latency.summary().as_dict(),
            "latency_uncorrected_ms": (
                None
                if self.latency_uncorrected is None
                else self.latency_uncorrected.summary().as_dict()
            ),
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


# -- shared run state ------------------------------------------------------------------------
class _Recorder:
    """Counts into a `LoadResult` and its per-second buckets (bounded by the run length)."""

    def __init__(self, result: LoadResult, t0: float) -> None:
        self.result = result
        self.t0 = t0
        self.seconds = [
            _Second() for _ in range(math.ceil(result.duration_s + result.timeout_s) + 2)
        ]

    def _second(self, now: float) -> _Second:
        index = min(max(int(now - self.t0), 0), len(self.seconds) - 1)
        return self.seconds[index]

    def response(self, status: int, body_bytes: int, corrected_us: int, raw_us: int | None) -> None:
        res = self.result
        res.completed += 1
        res.status_counts[status] = res.status_counts.get(status, 0) + 1
        res.bytes_received += body_bytes
        res.latency.record_us(corrected_us)
        if raw_us is not None and res.latency_uncorrected is not None:
            res.latency_uncorrected.record_us(raw_us)
        sec = self._second(time.monotonic())
        sec.requests += 1
        sec.latency.record_us(corrected_us)

    def error(self, kind: str) -> None:
        self.result.errors[kind] = self.result.errors.get(kind, 0) + 1
        sec = self._second(time.monotonic())
        sec.requests += 1
        sec.errors += 1

    def finish(self, clients: Sequence[HttpClient]) -> None:
        res = self.result
        res.elapsed_s = time.monotonic() - self.t0
        res.connects = sum(c.connects for c in clients)
        last = max(
            (i for i, s in enumerate(self.seconds) if s.requests),
            default=math.ceil(res.duration_s) - 1,
        )
        res.per_second = [self.seconds[i].as_dict(i) for i in range(last + 1)]


def _check_common(duration_s: float, timeout_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"the duration must be a positive number of seconds, not {duration_s!r}.")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"the timeout must be a positive number of seconds, not {timeout_s!r}.")


async def _run_bounded(tasks: list[asyncio.Task[None]], deadline: float) -> None:
    """Wait for `tasks` until `deadline` (monotonic), then cancel the rest; re-raise bugs."""
    try:
        if tasks:
            await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.0))
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome


# -- open model ------------------------------------------------------------------------------
async def run_open(
    url: str,
    *,
    rate: float,
    duration_s: float = 0.0,
    stages: Sequence[tuple[float, float]] | None = None,
    connections: int = 64,
    timeout_s: float = 10.0,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Send to `url` at `rate` requests/s for `duration_s` s, or follow `stages`, open model.

    With `stages` [(duration_s, target_rate), …] the rate starts at `rate` and ramps linearly
    to each stage's target over its duration; the run lasts the sum of the stage durations.
    Raises ValueError for a non-loopback URL or invalid numbers.
    """
    target = parse_target(url)
    if stages:
        schedule = RateSchedule.from_stages(rate, stages)
    else:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"the rate must be a positive number of requests/s, not {rate!r}.")
        _check_common(duration_s, timeout_s)
        schedule = RateSchedule.constant(rate, duration_s)
    duration_s = schedule.duration_s
    _check_common(duration_s, timeout_s)
    if connections < 1:
        raise ValueError(f"--connections must be at least 1, not {connections!r}.")
    request = build_request(target, method, body, headers)
    result = LoadResult(
        model="open",
        url=url,
        duration_s=duration_s,
        timeout_s=timeout_s,
        target_rate=schedule.expected() / duration_s,
        connections=connections,
        latency_uncorrected=LatencyHistogram(),
    )
    head_only = method.upper() == "HEAD"
    clients = [
        HttpClient(target, request, timeout_s=timeout_s, head_only=head_only)
        for _ in range(connections)
    ]
    t0 = time.monotonic()
    stop_at = t0 + duration_s
    rec = _Recorder(result, t0)
    slots = schedule.send_times()

    async def worker(client: HttpClient) -> None:
        in_flight = False
        try:
            for offset in slots:
                intended = t0 + offset
                if intended >= stop_at:
                    return
                now = time.monotonic()
                if now >= stop_at:
                    result.dropped += 1
                    return
                delay = intended - now
                if delay > EARLY_S:
                    await asyncio.sleep(delay - EARLY_S)
                    now = time.monotonic()
                    if intended - now > EARLY_S:
                        await asyncio.sleep(intended - now)
                        now = time.monotonic()
                elif now - intended > timeout_s:
                    result.dropped += 1  # no connection was free within the timeout
                    continue
                if now - intended > LATE_START_S:
                    result.late_starts += 1
                result.requests += 1
                in_flight = True
                try:
                    response = await client.send()
                except RequestError as exc:
                    in_flight = False
                    rec.error(exc.kind)
                    continue
                in_flight = False
                done = time.monotonic()
                rec.response(
                    response.status,
                    response.body_bytes,
                    int((done - min(intended, now)) * 1_000_000),
                    int((done - now) * 1_000_000),
                )
        except asyncio.CancelledError:
            if in_flight:
                rec.error("timeout")
            raise
        finally:
            client.close()

    tasks = [asyncio.create_task(worker(c)) for c in clients]
    await _run_bounded(tasks, stop_at + timeout_s)
    # slots due before the end that no worker took (every connection was busy)
    result.dropped += sum(1 for offset in slots if t0 + offset < stop_at)
    rec.finish(clients)
    return result


# -- closed model ----------------------------------------------------------------------------
async def run_closed(
    url: str,
    *,
    users: int,
    duration_s: float,
    ramp_up_s: float = 0.0,
    think: ThinkTime | None = None,
    timeout_s: float = 10.0,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> LoadResult:
    """`users` virtual users, each on its own keep-alive connection, for `duration_s` seconds.

    Each user sends, waits for the response, thinks (`think`), and repeats. User *i* starts
    ``i * ramp_up_s / users`` seconds in. Raises ValueError for a non-loopback URL or invalid
    numbers.
    """
    target = parse_target(url)
    _check_common(duration_s, timeout_s)
    if users < 1:
        raise ValueError(f"--users must be at least 1, not {users!r}.")
    if not (math.isfinite(ramp_up_s) and 0 <= ramp_up_s <= duration_s):
        raise ValueError(f"the ramp-up must be between 0 and the duration, not {ramp_up_s!r}.")
    think = think or ThinkTime()
    request = build_request(target, method, body, headers)
    result = LoadResult(
        model="closed", url=url, duration_s=duration_s, timeout_s=timeout_s, users=users
    )
    head_only = method.upper() == "HEAD"
    clients = [
        HttpClient(target, request, timeout_s=timeout_s, head_only=head_only) for _ in range(users)
    ]
    rng = random.Random(seed)
    t0 = time.monotonic()
    stop_at = t0 + duration_s
    rec = _Recorder(result, t0)

    async def user(index: int, client: HttpClient) -> None:
        in_flight = False
        try:
            start = t0 + index * ramp_up_s / users
            if start > time.monotonic():
                await asyncio.sleep(start - time.monotonic())
            while (sent_at := time.monotonic()) < stop_at:
                result.requests += 1
                in_flight = True
                try:
                    response = await client.send()
                except RequestError as exc:
                    in_flight = False
                    rec.error(exc.kind)
                    if exc.kind == "refused":
                        await asyncio.sleep(min(0.01, max(stop_at - time.monotonic(), 0.0)))
                else:
                    in_flight = False
                    us = int((time.monotonic() - sent_at) * 1_000_000)
                    rec.response(response.status, response.body_bytes, us, None)
                pause = min(think.draw(rng), stop_at - time.monotonic())
                if pause > 0:
                    await asyncio.sleep(pause)
                elif think.value_s == 0 and think.kind == "constant":
                    await asyncio.sleep(0)  # let the other users run
        except asyncio.CancelledError:
            if in_flight:
                rec.error("timeout")
            raise
        finally:
            client.close()

    tasks = [asyncio.create_task(user(i, c)) for i, c in enumerate(clients)]
    await _run_bounded(tasks, stop_at + timeout_s)
    rec.finish(clients)
    return result
