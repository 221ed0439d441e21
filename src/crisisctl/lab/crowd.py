"""The scanning service's bundled web client, played by a crowd of browser tabs on loopback.

Each user is one browser: its own loopback source address (127.0.0.10, .11, …, so the guard's
per-client limits see one client per user; 127.0.0.1 for all when the host cannot bind them),
at most `connections` requests in flight to the service (a browser's per-host limit; a poll
due while they are all busy is skipped), and `tabs` tabs open on the scan dashboard. Every tab
starts a scan every `scan_every_s` while it has fewer than `max_unfinished` unfinished scans,
and polls every unfinished scan of its user.

The polling policy is the seeds' before and after:

- `EVERY_2S`: each tab polls each scan every 2 s, no backoff, no coordination between tabs
  (N tabs → N polls per scan every 2 s), and retries 429s at the next tick;
- `BACKOFF`: one schedule per scan shared by the user's tabs (cross-tab coordination): first
  poll after 5 s, then the interval grows ×1.2 after each unfinished answer up to 30 s, at
  most 100 polls; the tabs also share scan starts (one unfinished scan per user), and a
  429/503 answer postpones the next poll or scan start by its Retry-After.

Everything the crowd does is counted into `Tally`s: one for the current phase, one for the
narration window. Bounded: requests go only to the (loopback) service URL, each with a
timeout, and `stop()` ends every tab and cancels what is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from crisisctl.load.target import check_loopback_url
from crisisctl.stats import LatencyHistogram

FIRST_USER_ADDRESS: Final = 10


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How a tab polls a scan until it completes."""

    name: str
    first_s: float
    max_s: float
    factor: float
    #: one schedule per scan for all the user's tabs (cross-tab coordination)
    shared: bool
    max_polls: int
    honour_retry_after: bool
    #: None: each tab starts its own scans; else the user's tabs share one start schedule and
    #: keep at most this many unfinished scans together
    scans_per_user: int | None = None


EVERY_2S: Final = PollPolicy(
    "every 2 s from every tab, no backoff", 2.0, 2.0, 1.0, False, 150, False
)
BACKOFF: Final = PollPolicy(
    "exponential backoff 5 s → 30 s ×1.2, shared across tabs",
    5.0,
    30.0,
    1.2,
    True,
    100,
    True,
    scans_per_user=1,
)


def next_interval(policy: PollPolicy, interval: float) -> float:
    """The wait after a poll that found the scan unfinished: ×factor, capped at max_s."""
    return min(interval * policy.factor, policy.max_s)


def schedule(policy: PollPolicy, polls: int | None = None) -> list[float]:
    """Seconds from a scan's start to each of its first `polls` polls (default: all allowed)."""
    times, t, interval = [], 0.0, policy.first_s
    for _ in range(policy.max_polls if polls is None else polls):
        t += interval
        times.append(t)
        interval = next_interval(policy, interval)
    return times


@dataclass(frozen=True, slots=True)
class CrowdConfig:
    """The size and habits of the crowd."""

    users: int = 4
    tabs: int = 4
    scan_every_s: float = 1.0
    max_unfinished: int = 3
    connections: int = 6
    timeout_s: float = 10.0
    tick_s: float = 0.25
    seed: int = 7

    def __post_init__(self) -> None:
        if min(self.users, self.tabs, self.max_unfinished, self.connections) < 1:
            raise ValueError("the crowd needs at least one user, tab, scan and connection.")
        if self.users > 200:
            raise ValueError("the crowd is limited to 200 users.")
        if min(self.scan_every_s, self.timeout_s, self.tick_s) <= 0:
            raise ValueError("the crowd's intervals must be positive.")


@dataclass(slots=True)
class Tally:
    """What the crowd did over a stretch of time."""

    started: float
    polls: int = 0
    polls_skipped: int = 0
    poll_status: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    poll_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    scans_requested: int = 0
    scans_started: int = 0
    scans_refused: int = 0
    scans_completed: int = 0
    scans_lost: int = 0
    scans_abandoned: int = 0
    scan_time: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self, now: float, slow_ms: float | None = None) -> dict[str, Any]:
        """JSON form with rates per second and latency summaries in ms; with `slow_ms`, also
        how many polls took longer than that (``polls_slower``)."""
        seconds = max(now - self.started, 1e-6)
        slower = None
        if slow_ms is not None:
            hist = self.poll_latency
            slower = hist.count - hist.count_at_or_below(int(slow_ms * 1000))
        return {
            "seconds": round(seconds, 3),
            "polls": self.polls,
            "polls_per_s": round(self.polls / seconds, 2),
            "polls_skipped_busy": self.polls_skipped,
            "poll_status": {str(k): v for k, v in sorted(self.poll_status.items())},
            "errors": dict(sorted(self.errors.items())),
            "poll_latency_ms": self.poll_latency.summary().as_dict()
            if self.poll_latency.count
            else None,
            "scans_requested": self.scans_requested,
            "scans_started": self.scans_started,
            "scans_refused": self.scans_refused,
            "scans_completed": self.scans_completed,
            "scans_lost": self.scans_lost,
            "scans_abandoned": self.scans_abandoned,
            "scan_time_ms": self.scan_time.summary().as_dict() if self.scan_time.count else None,
            "polls_slower": slower,
        }


@dataclass(slots=True)
class _Watch:
    """One scan a user is waiting for."""

    scan_id: str
    tab: int
    interval: float
    next_due: float
    tab_due: dict[int, float] = field(default_factory=dict)
    polls: int = 0
    done: bool = False


@dataclass(slots=True)
class _User:
    index: int
    client: httpx.AsyncClient
    watches: list[_Watch] = field(default_factory=list)
    unfinished: list[int] = field(default_factory=list)
    next_start: list[float] = field(default_factory=list)
    #: the start schedule the tabs share when the policy coordinates scan starts
    shared_start: float = 0.0
    in_flight: int = 0


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


def loopback_addresses(count: int) -> list[str]:
    """`count` source addresses 127.0.0.10… if this host can bind them, else 127.0.0.1."""
    wanted = [f"127.0.0.{FIRST_USER_ADDRESS + i}" for i in range(count)]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((wanted[-1], 0))
        except OSError:
            return ["127.0.0.1"] * count
    return wanted


class Crowd:
    """The crowd of tabs against one service URL; `run()` until `stop()`."""

    def __init__(self, url: str, config: CrowdConfig, policy: PollPolicy = EVERY_2S) -> None:
        check_loopback_url(url, "crisisctl demo")
        self.url = url.rstrip("/")
        self.config = config
        self.policy = policy
        self.addresses = loopback_addresses(config.users)
        self.phase = Tally(time.monotonic())
        self.window = Tally(time.monotonic())
        self._rng = random.Random(config.seed)
        self._users: list[_User] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._paused = False
        self._stopping = False
        self._closed = False

    @property
    def distinct_clients(self) -> bool:
        """Whether each user has its own source address."""
        return len(set(self.addresses)) == len(self.addresses)

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Open one HTTP client per user and start every tab."""
        cfg = self.config
        now = time.monotonic()
        for index, address in enumerate(self.addresses):
            transport = httpx.AsyncHTTPTransport(
                local_address=address,
                limits=httpx.Limits(max_connections=cfg.connections),
            )
            client = httpx.AsyncClient(
                base_url=self.url,
                transport=transport,
                timeout=cfg.timeout_s,
                trust_env=False,
                headers={"user-agent": "crisisctl-lab-dashboard/1"},
            )
            user = _User(index, client, unfinished=[0] * cfg.tabs)
            user.next_start = [
                now + self._rng.uniform(0, cfg.scan_every_s) for _ in range(cfg.tabs)
            ]
            self._users.append(user)
            for tab in range(cfg.tabs):
                self._tasks.append(asyncio.create_task(self._tab(user, tab)))

    async def stop(self) -> None:
        """Stop every tab, cancel what is in flight and close the clients (idempotent)."""
        if self._closed:
            return
        self._closed = self._stopping = True
        pending = [*self._tasks, *self._requests]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for user in self._users:
            await user.client.aclose()
        self._tasks.clear()
        self._requests.clear()

    def pause(self) -> None:
        """Stop starting requests (those in flight go on: see `drain`)."""
        self._paused = True

    async def drain(self) -> None:
        """Wait (at most the request timeout) for the requests in flight to end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout_s + 1.0):
                while self._requests:
                    await asyncio.wait(set(self._requests))

    def resume(self, policy: PollPolicy, forget_scans: bool = True) -> None:
        """Go on with `policy`; the scans watched so far are forgotten when `forget_scans`."""
        now = time.monotonic()
        self.policy = policy
        for user in self._users:
            if forget_scans:
                user.watches.clear()
                user.unfinished = [0] * self.config.tabs
            user.next_start = [now + self._rng.uniform(0, self.config.scan_every_s)
                               for _ in range(self.config.tabs)]  # fmt: skip
            user.shared_start = min(user.next_start)
        self.window = Tally(now)
        self.phase = Tally(now)
        self._paused = False

    def take_window(self) -> dict[str, Any]:
        """The narration window's figures; a new window starts."""
        now = time.monotonic()
        out = self.window.as_dict(now)
        self.window = Tally(now)
        return out

    def end_phase(self, slow_ms: float | None = None) -> dict[str, Any]:
        """The current phase's figures (polls slower than `slow_ms` counted); a new phase
        starts."""
        now = time.monotonic()
        out = self.phase.as_dict(now, slow_ms)
        self.phase = Tally(now)
        return out

    def unfinished_scans(self) -> int:
        """Scans the crowd is still waiting for."""
        return sum(1 for user in self._users for w in user.watches if not w.done)

    # -- the tabs --------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _due(self, watch: _Watch, tab: int, now: float) -> bool:
        if self.policy.shared:
            return now >= watch.next_due
        due = watch.tab_due.setdefault(tab, watch.next_due + 0.1 * tab)
        if now < due:
            return False
        # a timer that fires every interval, whatever happened to the previous poll
        step = watch.interval
        watch.tab_due[tab] = due + step if due + step > now else now + step
        return True

    async def _tab(self, user: _User, tab: int) -> None:
        cfg = self.config
        await asyncio.sleep(self._rng.uniform(0, cfg.tick_s))
        while not self._stopping:
            if not self._paused:
                now = time.monotonic()
                if self._may_start(user, tab, now):
                    user.unfinished[tab] += 1  # reserved until the answer
                    self._send(user, self._post(user, tab))
                for watch in user.watches:
                    if watch.done or not self._due(watch, tab, now):
                        continue
                    if user.in_flight >= cfg.connections:
                        self._count_skip()
                        continue
                    if self.policy.shared:
                        watch.next_due = math.inf  # claimed: the other tabs wait for its answer
                    self._send(user, self._poll(user, watch))
                if len(user.watches) > 4 * cfg.tabs * cfg.max_unfinished:
                    user.watches = [w for w in user.watches if not w.done]
            await asyncio.sleep(cfg.tick_s)

    def _may_start(self, user: _User, tab: int, now: float) -> bool:
        """Whether `tab` starts a scan now (and moves its start schedule on if so)."""
        cfg, per_user = self.config, self.policy.scans_per_user
        if user.in_flight >= cfg.connections:
            return False
        if per_user is not None:
            if sum(user.unfinished) >= per_user or now < user.shared_start:
                return False
            user.shared_start = now + cfg.scan_every_s
            return True
        if user.unfinished[tab] >= cfg.max_unfinished or now < user.next_start[tab]:
            return False
        user.next_start[tab] = now + cfg.scan_every_s
        return True

    def _send(self, user: _User, coro: Any) -> None:
        user.in_flight += 1

        async def run() -> None:
            try:
                await coro
            finally:
                user.in_flight -= 1

        self._spawn(run())

    def _count_skip(self) -> None:
        self.phase.polls_skipped += 1
        self.window.polls_skipped += 1

    def _count(self, attr: str, n: int = 1) -> None:
        for tally in (self.phase, self.window):
            setattr(tally, attr, getattr(tally, attr) + n)

    def _error(self, kind: str) -> None:
        for tally in (self.phase, self.window):
            tally.errors[kind] = tally.errors.get(kind, 0) + 1

    async def _request(
        self, user: _User, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[httpx.Response | None, float]:
        t0 = time.monotonic()
        try:
            response = await user.client.request(method, path, json=body)
        except httpx.TimeoutException:
            self._error("timeout")
            return None, time.monotonic() - t0
        except httpx.ConnectError:
            self._error("refused")
            return None, time.monotonic() - t0
        except httpx.HTTPError:
            self._error("other")
            return None, time.monotonic() - t0
        return response, time.monotonic() - t0

    async def _post(self, user: _User, tab: int) -> None:
        self._count("scans_requested")
        response, _ = await self._request(
            user, "POST", "/api/scans", {"name": f"user {user.index + 1} tab {tab + 1}"}
        )
        now = time.monotonic()
        if response is not None and response.status_code == 202:
            self._count("scans_started")
            policy = self.policy
            scan_id = str(response.json().get("id", ""))
            user.watches.append(_Watch(scan_id, tab, policy.first_s, now + policy.first_s))
            return
        user.unfinished[tab] -= 1
        if response is not None and response.status_code in (429, 503):
            self._count("scans_refused")
            if self.policy.honour_retry_after:
                wait = _retry_after(response, self.config.scan_every_s)
                user.next_start[tab] = max(user.next_start[tab], now + wait)
                user.shared_start = max(user.shared_start, now + wait)

    def _finish(self, user: _User, watch: _Watch, attr: str) -> None:
        if not watch.done:
            watch.done = True
            user.unfinished[watch.tab] = max(0, user.unfinished[watch.tab] - 1)
            self._count(attr)

    async def _poll(self, user: _User, watch: _Watch) -> None:
        policy = self.policy
        self._count("polls")
        watch.polls += 1
        response, seconds = await self._request(user, "GET", f"/api/scans/{watch.scan_id}")
        now = time.monotonic()
        if response is None:
            watch.next_due = now + watch.interval
            return
        for tally in (self.phase, self.window):
            tally.poll_status[response.status_code] = (
                tally.poll_status.get(response.status_code, 0) + 1
            )
            tally.poll_latency.record_us(int(seconds * 1_000_000))
        status = response.status_code
        if status == 200:
            doc = response.json()
            if doc.get("status") == "completed":
                duration = doc.get("duration_ms")
                # several tabs may see the same scan completed: count it once
                if isinstance(duration, int | float) and not watch.done:
                    for tally in (self.phase, self.window):
                        tally.scan_time.record_us(int(duration * 1000))
                self._finish(user, watch, "scans_completed")
                return
        elif status == 404:
            self._finish(user, watch, "scans_lost")
            return
        if watch.polls >= policy.max_polls:
            self._finish(user, watch, "scans_abandoned")
            return
        if status in (429, 503) and policy.honour_retry_after:
            watch.next_due = now + max(_retry_after(response, watch.interval), watch.interval)
            return
        watch.interval = next_interval(policy, watch.interval)
        watch.next_due = now + watch.interval
