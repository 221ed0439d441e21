"""A small open-loop (constant arrival rate, wrk2-style) HTTP/1.1 load generator for the lab.

`run_open_loop` schedules request *i* at the intended time ``t0 + i / rate`` whatever happened
to earlier requests, so a slow server cannot slow the generator down (no coordinated omission).
Every latency is measured twice into `LatencyHistogram`s: from the intended send time (the
corrected latency a user arriving at that moment would have seen, including any wait for a
free connection) and from the actual send time (what a closed-loop tool would report).

Design, chosen to keep the per-request cost small so one core easily drives several hundred
requests per second:

* a fixed pool of `connections` worker coroutines, each owning one keep-alive connection made
  with `asyncio.open_connection`; a free worker takes the next slot of the schedule, sleeps
  until its intended time and sends it — slots are served first-come-first-served by whichever
  connection frees up first, and no task is created per request. Event-loop timers tick in
  milliseconds, so a request may leave up to 0.5 ms early; its latency then counts from the
  actual send, so the corrected latency is never below the uncorrected one;
* responses are parsed with `httptools` (status line, headers, Content-Length and chunked
  bodies; bodies are read and discarded); the connection is re-opened after
  ``Connection: close`` or an error;
* the run is bounded: nothing is sent after `duration_s` (or `max_requests`), outstanding
  requests get at most `timeout_s` more, then they are cancelled and counted as timeouts.

For the lab and benchmarks only: URLs whose host is not loopback are refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools

from crisisctl.load.target import Target
from crisisctl.load.target import check_loopback_url as _check_loopback_url
from crisisctl.stats import LatencyHistogram

__all__ = ["ERROR_KINDS", "OpenLoopResult", "check_loopback_url", "run_open_loop"]

#: Error kinds always present in `OpenLoopResult.errors`.
ERROR_KINDS: tuple[str, ...] = ("refused", "reset", "timeout", "bad_response")

#: A request that starts more than this long after its intended time counts as a late start.
LATE_START_S = 0.001
#: Event-loop timers wake up to ~1 ms late (epoll and libuv count in milliseconds), so a
#: worker aims this much before the intended time and sends as soon as it is this close:
#: sends land within about ±0.5 ms of schedule instead of 0-1 ms late.
EARLY_S = 0.0005
_READ_SIZE = 65536
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def check_loopback_url(url: str) -> Target:
    """Parse an ``http://`` URL and raise ValueError unless its host is loopback."""
    return _check_loopback_url(url, tool="run_open_loop")


def _build_request(
    target: Target, method: str, body: bytes | None, headers: Mapping[str, str] | None
) -> bytes:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (
        ("Host", target.host_header),
        ("User-Agent", "crisisctl-openloop/1"),
        ("Accept", "*/*"),
    ):
        merged[name.lower()] = (name, value)
    for name, value in (headers or {}).items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} contains a line break.")
        merged[name.lower()] = (name, value)
    if body is not None:
        merged["content-length"] = ("Content-Length", str(len(body)))
    head = f"{method.upper()} {target.path} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in merged.values())
    return (head + "\r\n").encode("latin-1") + (body or b"")


# -- results ---------------------------------------------------------------------------------
def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


@dataclass(slots=True)
class _Second:
    sent: int = 0
    ok: int = 0
    completed: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self, second: int) -> dict[str, Any]:
        p50, p99 = self.latency.percentiles((50.0, 99.0))
        return {
            "second": second,
            "sent": self.sent,
            "ok": self.ok,
            "completed": self.completed,
            "errors": self.errors,
            "status": {str(code): n for code, n in sorted(self.statuses.items())},
            "p50_ms": p50 / 1000.0,
            "p99_ms": p99 / 1000.0,
        }


@dataclass(slots=True)
class OpenLoopResult:
    """What one open-loop run measured. Counts add up:

    ``intended == sent + unsent`` and ``sent == completed + sum(errors.values())``, and
    ``completed == sum(status_counts.values())``.
    """

    url: str
    rate: float
    duration_s: float
    connections: int
    #: slots in the schedule (ceil(duration_s * rate), capped by max_requests)
    intended: int = 0
    #: requests started (connection attempted or request written)
    sent: int = 0
    #: requests that got a complete response
    completed: int = 0
    #: scheduled requests never started because the run ended first (backlog)
    unsent: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    #: corrected: from the intended send time (or the actual one if ≤ 0.5 ms earlier) to the
    #: end of the response
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: uncorrected: from the actual send time to the end of the response
    latency_uncorrected: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: corrected latency per status class ("2xx", "5xx", …) of completed responses
    latency_by_class: dict[str, LatencyHistogram] = field(default_factory=dict)
    #: requests that started more than 1 ms after their intended time
    late_starts: int = 0
    #: seconds from the first intended send to the end of the run (drain included)
    elapsed_s: float = 0.0
    #: one entry per second of the run (by send time for `sent`, completion time otherwise)
    per_second: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Completed responses with a 2xx status."""
        return sum(n for code, n in self.status_counts.items() if 200 <= code <= 299)

    @property
    def error_total(self) -> int:
        """Requests that ended in an error instead of a response."""
        return sum(self.errors.values())

    @property
    def achieved_rate(self) -> float:
        """Requests started per second of schedule."""
        span = min(self.duration_s, self.intended / self.rate) if self.rate else 0.0
        return self.sent / span if span > 0 else 0.0

    def as_dict(self, histograms: bool = False) -> dict[str, Any]:
        """A JSON-able form (summaries in ms; the raw histograms too if `histograms`)."""
        out: dict[str, Any] = {
            "url": self.url,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "connections": self.connections,
            "intended": self.intended,
            "sent": self.sent,
            "completed": self.completed,
            "unsent": self.unsent,
            "ok": self.ok,
            "achieved_rate": round(self.achieved_rate, 3),
            "status_counts": {str(code): n for code, n in sorted(self.status_counts.items())},
            "errors": dict(self.errors),
            "late_starts": self.late_starts,
            "elapsed_s": round(self.elapsed_s, 6),
            "latency": self.latency.summary().as_dict(),
            "latency_uncorrected": self.latency_uncorrected.summary().as_dict(),
            "latency_by_class": {
                cls: hist.summary().as_dict() for cls, hist in sorted(self.latency_by_class.items())
            },
            "per_second": list(self.per_second),
        }
        if histograms:
            out["histograms"] = {
                "latency": self.latency.to_dict(),
                "latency_uncorrected": self.latency_uncorrected.to_dict(),
                "latency_by_class": {
                    cls: hist.to_dict() for cls, hist in sorted(self.latency_by_class.items())
                },
            }
        return out


# -- HTTP/1.1 response parsing ---------------------------------------------------------------
class _BadResponse(Exception):
    """The server sent something that is not a valid HTTP/1.1 response."""


class _ClosedEarly(Exception):
    """The connection ended before a complete response; `got_bytes` if any response byte came."""

    def __init__(self, got_bytes: bool) -> None:
        super().__init__("connection closed before a complete response")
        self.got_bytes = got_bytes


class _ConnectFailed(Exception):
    """A connection attempt failed for a reason other than a refusal (counted as refused)."""


class _Connection:
    """One keep-alive connection and its response parser (httptools callbacks)."""

    __slots__ = (
        "head_only",
        "headers_done",
        "keep_alive",
        "message_done",
        "parser",
        "reader",
        "status",
        "used",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser: Any = httptools.HttpResponseParser(self)
        self.used = False
        self.head_only = False
        self.headers_done = False
        self.message_done = False
        self.keep_alive = True
        self.status = 0

    # httptools callbacks (the body is skipped because there is no on_body)
    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = int(self.parser.get_status_code())
        self.keep_alive = bool(self.parser.should_keep_alive())
        if self.head_only:
            self.message_done = True

    def on_message_complete(self) -> None:
        self.message_done = True

    async def exchange(self, request: bytes) -> int:
        """Send one request, read the whole response, return its status code."""
        self.headers_done = False
        self.message_done = False
        self.used = True
        self.writer.write(request)
        await self.writer.drain()
        got_bytes = False
        reader = self.reader
        parser = self.parser
        while not self.message_done:
            data = await reader.read(_READ_SIZE)
            if not data:
                if self.headers_done and not self.keep_alive:
                    # a body delimited by the end of the connection
                    return self.status
                raise _ClosedEarly(got_bytes)
            got_bytes = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise _BadResponse(str(exc)) from None
        if self.status < 100:
            raise _BadResponse(f"status {self.status}")
        if self.head_only:
            # the parser would wait for a body a HEAD response never has: start afresh
            self.parser = httptools.HttpResponseParser(self)
        return self.status

    def close(self) -> None:
        self.writer.close()


# -- the run ---------------------------------------------------------------------------------
class _Run:
    """State shared by the worker coroutines of one run."""

    def __init__(
        self,
        target: Target,
        request: bytes,
        head_only: bool,
        result: OpenLoopResult,
        rate: float,
        total: int,
        timeout_s: float,
        on_response: Callable[[int, float], None] | None,
    ) -> None:
        self.target = target
        self.request = request
        self.head_only = head_only
        self.result = result
        self.interval = 1.0 / rate
        self.total = total
        self.timeout_s = timeout_s
        self.on_response = on_response
        self.next_slot = 0
        self.t0 = 0.0
        self.stop_at = 0.0
        # one bucket per second: the schedule, the drain, and a spare
        self.seconds = [_Second() for _ in range(math.ceil(result.duration_s + timeout_s) + 2)]
        self.by_class = {cls: LatencyHistogram() for cls in (*_STATUS_CLASSES, "other")}

    def second(self, now: float) -> _Second:
        index = int(now - self.t0)
        if index < 0:
            index = 0
        elif index >= len(self.seconds):
            index = len(self.seconds) - 1
        return self.seconds[index]

    async def connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.target.connect_host, self.target.port, limit=_READ_SIZE * 4
            )
        except ConnectionRefusedError:
            raise
        except OSError as exc:
            raise _ConnectFailed(str(exc)) from exc
        conn = _Connection(reader, writer)
        conn.head_only = self.head_only
        return conn

    def record_error(self, kind: str) -> None:
        self.result.errors[kind] += 1
        self.second(time.monotonic()).errors += 1

    def record_response(self, status: int, intended: float, sent_at: float) -> None:
        now = time.monotonic()
        res = self.result
        # from the intended time, or from the actual send if that was (slightly) earlier
        corrected_us = int((now - min(intended, sent_at)) * 1_000_000)
        res.completed += 1
        res.status_counts[status] = res.status_counts.get(status, 0) + 1
        res.latency.record_us(corrected_us)
        res.latency_uncorrected.record_us(int((now - sent_at) * 1_000_000))
        self.by_class[_status_class(status)].record_us(corrected_us)
        sec = self.second(now)
        sec.completed += 1
        sec.statuses[status] = sec.statuses.get(status, 0) + 1
        sec.latency.record_us(corrected_us)
        if 200 <= status <= 299:
            sec.ok += 1
        if self.on_response is not None:
            self.on_response(status, corrected_us / 1_000_000)

    async def worker(self) -> None:
        conn: _Connection | None = None
        res = self.result
        request = self.request
        in_flight = False
        try:
            while True:
                slot = self.next_slot
                if slot >= self.total:
                    return
                now = time.monotonic()
                if now >= self.stop_at:
                    return
                self.next_slot = slot + 1
                intended = self.t0 + slot * self.interval
                delay = intended - now
                if delay > EARLY_S:
                    await asyncio.sleep(delay - EARLY_S)
                    now = time.monotonic()
                    if intended - now > EARLY_S:
                        # woke early (uvloop rounds timers to the nearest ms): once more
                        await asyncio.sleep(intended - now)
                        now = time.monotonic()
                if now - intended > LATE_START_S:
                    res.late_starts += 1
                res.sent += 1
                self.second(now).sent += 1
                sent_at = now
                in_flight = True
                kind: str | None = None
                try:
                    async with asyncio.timeout(self.timeout_s):
                        if conn is None:
                            conn = await self.connect()
                        reused = conn.used
                        try:
                            status = await conn.exchange(request)
                        except (_ClosedEarly, ConnectionResetError, BrokenPipeError) as exc:
                            got = isinstance(exc, _ClosedEarly) and exc.got_bytes
                            if not reused or got:
                                raise
                            # a reused keep-alive connection the server had already closed:
                            # retry once on a fresh one, like any HTTP client would
                            conn.close()
                            conn = None
                            conn = await self.connect()
                            status = await conn.exchange(request)
                except TimeoutError:
                    kind = "timeout"
                except ConnectionRefusedError:
                    kind = "refused"
                except _ConnectFailed:
                    kind = "refused"
                except (_ClosedEarly, OSError, asyncio.IncompleteReadError):
                    kind = "reset"
                except (_BadResponse, ValueError, asyncio.LimitOverrunError):
                    kind = "bad_response"
                in_flight = False
                if kind is not None:
                    self.record_error(kind)
                    if conn is not None:
                        conn.close()
                        conn = None
                    continue
                self.record_response(status, intended, sent_at)
                if conn is not None and not conn.keep_alive:
                    conn.close()
                    conn = None
        except asyncio.CancelledError:
            if in_flight:
                self.record_error("timeout")
            raise
        finally:
            if conn is not None:
                conn.close()


async def run_open_loop(
    url: str,
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    max_requests: int | None = None,
    on_response: Callable[[int, float], None] | None = None,
) -> OpenLoopResult:
    """Drive `url` at a constant `rate` (requests/s) for `duration_s` seconds, open loop.

    Request *i* is due at ``t0 + i / rate``; it is sent on the first free connection of a pool
    of `connections` keep-alive connections, and its latency is counted from the due time.
    `timeout_s` bounds every request (connect + send + response) and the drain after the
    schedule ends. `max_requests` caps the schedule. `on_response(status, latency_s)` is
    called for every complete response with its corrected latency in seconds; keep it cheap.

    Raises ValueError for a non-loopback or non-http URL and for invalid numbers.
    """
    target = check_loopback_url(url)
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of requests per second, not {rate!r}.")
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number of seconds, not {duration_s!r}.")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections!r}.")
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}.")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"max_requests must be at least 1, not {max_requests!r}.")

    request = _build_request(target, method, body, headers)
    total = math.ceil(duration_s * rate - 1e-9)
    if max_requests is not None:
        total = min(total, max_requests)
    result = OpenLoopResult(url=url, rate=rate, duration_s=duration_s, connections=connections)
    result.intended = total
    run = _Run(
        target,
        request,
        method.upper() == "HEAD",
        result,
        rate,
        total,
        timeout_s,
        on_response,
    )

    run.t0 = time.monotonic()
    run.stop_at = run.t0 + duration_s
    workers = [asyncio.create_task(run.worker()) for _ in range(min(connections, total))]
    try:
        remaining = run.stop_at + timeout_s - time.monotonic()
        _done, pending = await asyncio.wait(workers, timeout=max(remaining, 0.0))
    finally:
        for task in workers:
            task.cancel()
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    del pending
    result.elapsed_s = time.monotonic() - run.t0
    result.unsent = result.intended - result.sent
    result.latency_by_class = {cls: h for cls, h in run.by_class.items() if h.count}
    last = max(
        (i for i, s in enumerate(run.seconds) if s.sent or s.completed or s.errors), default=-1
    )
    result.per_second = [run.seconds[i].as_dict(i) for i in range(last + 1)]
    return result
