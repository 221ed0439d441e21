"""Concurrency limit (static or adaptive) with a short, priority-aware shedding queue.

Adaptive limit — a gradient controller in the family of Netflix's Gradient/Gradient2, with a
no-load latency reference and probe back-off. Service latency (admission to response start,
queueing excluded) is averaged over windows of ≥ 50 ms and ≥ max(10, 25 * cv²) samples (or
1 s), cv² being the latency's squared coefficient of variation (variance / mean², from EWMAs
of the windows' own variance and mean). Per window:

    rtt_noload = min(mean * (1 + cv / sqrt(n)) over the last `noload_window_s`'s runs of
                 consecutive windows, n ≥ max(10, 25 * cv²) samples each)  # the unqueued latency
    gradient   = clamp(tolerance * rtt_noload / rtt, 0.25, 1.0)

    gradient < 1 (latency beyond tolerance: requests are queueing inside the service)
        L <- L * gradient + allowance                      # fast, proportional decrease
             allowance = 0 in standing overload (unless the latency is dispersed: cv² ≥ 1),
             else QUEUE_ALLOWANCE
        if floor(L) went down in two windows in a row, or once in standing overload:
            ceiling <- floor(L_before) ; hold <- min(2 * hold, hold_max)
        if it did not and L is at the ceiling: forget the ceiling, hold <- hold_base
    gradient = 1 and the limit was reached in the window (not app-limited)
        L <- (1 - smoothing) * L + smoothing * (L + sqrt(L))          # smoothed growth
        but below `ceiling` until `hold` seconds have passed since it was set
    otherwise, when the limit was less than half used (app-limited), and after a quiet second
    with no sample at all
        regain <- max(regain, L)
        L <- max(L_used, (L + L_used) / 2),  L_used = max(min_limit, APP_LIMITED_FLOOR, 2 * peak)
    otherwise L is unchanged
    growth below `regain` doubles instead: L <- min(2 * L, regain); any cut forgets `regain`

    L is clamped to [min_limit, max_limit]; admission uses floor(L * mode factor).

A dispersed latency (e.g. 90 % of requests at 1 ms, 10 % at 50 ms: cv ≈ 2.5) needs the
dispersion terms (cv² and the reference live in guard/latency_reference.py). The minimum of
small windows' means is then the luckiest window's — one that held only fast requests — far
below the latency the service really has unqueued, so every window looked congested and the
limit stayed pinned at one. So windows grow with cv² (their means within about a fifth of the
truth), the reference is taken over runs of windows that hold as many samples together (at low
traffic a 1 s window holds too few), a run summed while the dispersion was still underestimated
(fewer than half the samples it asks now) is left out, and each mean counts with one standard
error added (the minimum of many noisy means is biased low). At a limit of one such a service
also idles after each slow request (the arrivals during it were shed; the fast ones after it
come one by one): the queue allowance is kept in standing overload, and waiters wait for the
next slot longer (below).

The app-limited decay is TCP's congestion window validation (RFC 7661): a limit far above the
concurrency the traffic actually uses was never tested, and when overload arrives at a quiet
service every one of those untested slots is filled at once — a single-worker service with a
limit of 32 would queue 32 requests inside itself before the first latency sample could cut
the limit. So while the traffic uses less than half the limit, the limit decays halfway
towards twice the used concurrency per window; the level it decayed from is remembered as
`regain` and, like TCP's slow start after validation, growth doubles back up to it, so a
legitimate burst gets the old level back within a few windows.

QUEUE_ALLOWANCE (one request, like the queue-size term of Netflix's Gradient2) keeps a
service with one worker at two in flight: at one, the worker idles while the event loop hands
it the next request, and the throughput lost that way is worth far more than one request's
wait. In a standing overload the guard's own queue holds that next request, so the allowance
is dropped there: at two in flight a one-worker service doubles every admitted request's
latency, beyond any tolerance. A cut in a standing overload is not a hiccup of the host, so
one is enough to set the ceiling. The ceiling/hold pair is the probe back-off: after a level
proved to add queueing, the limit re-probes it only after `hold` seconds (doubling on each
failed probe, reset when a probe succeeds), so a saturated service spends almost all its time
at the level that serves best.
If no window has come near `rtt_noload` for `probe_interval_s`, one window runs at half the
limit to re-measure the no-load latency (like BBR's ProbeRTT), so a service that has only
ever been seen overloaded still converges.

Queue — requests over the limit wait in a bounded queue (`queue_size`). CoDel-style: when a
congestion episode (requests having to queue) has lasted longer than `queue_timeout_s` (the
interval), the service is in standing overload. The episode ends only after the queue has
stayed empty for a whole interval — not when the last waiter times out or is admitted, nor at
the instant one slot comes free between two arrivals. In standing overload waiters are served
newest first (LIFO: the oldest are the ones whose clients have most likely given up) and a new
waiter is shed after the target delay (`queue_target_s`, at most half the no-load latency under
the adaptive limit); otherwise waiters are served in arrival order and wait at most the
interval. Under the adaptive limit in standing overload, the queue keeps only as many waiters
as slots are expected to come free within the target delay (target * limit / recent latency,
at least one): a newcomer evicts the oldest waiter of its priority or lower (reason
`overloaded`), or is refused at once if there is none. LIFO serves the newest first, so the
evicted waiter would most likely have timed out anyway: its answer is the same, sooner, and the
saturated service does not pay for a timer and a second wake-up per refused request. The waiters
kept there wait at least until the next slot is expected (recent latency / limit, at most the
interval; for a dispersed latency (1 + 2.33 cv) times that, a slow request holding its slot for
several mean latencies): with arrivals in random bursts and gaps, a waiter that gave up just
before its slot came free would leave that slot idle until the next arrival.
Higher priorities are served first, and a full queue evicts its lowest-priority waiter for a
more important arrival.

Scope (`ConcurrencyConfig.scope`) — with ``"service"`` one limiter admits every non-critical
request. With ``"route"`` each route label gets its own limiter (`ConcurrencyLimiter.child`,
built by guard/routebuild.py, so there are at most as many as route labels), each with its own
latency reference, limit and queue: a route whose dependency turns slow sees its own latency
rise and its own limit fall, while a healthy route keeps its limit (one service-wide limit
reads the slow route's latency as congestion of the whole service and starves the healthy
one). The guard's limiter is then the guard-wide ceiling: a static cap of `max_limit`
non-critical requests in flight over all routes, which counts every child's slots; a request
over it is refused at once (``overloaded``), never queued: it protects the process, the
per-route limits regulate. Emergency factors reach every child.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Final

from crisisctl.guard.config import ConcurrencyConfig, Priority
from crisisctl.guard.latency_reference import WINDOW_MIN_SAMPLES, LatencyReference

WINDOW_MIN_S: Final = 0.05
WINDOW_MAX_S: Final = 1.0
HOLD_BASE_S: Final = 10.0
#: the deepest single cut (Netflix uses 0.5; 0.25 converges from a far-too-high limit in
#: half as many windows, which matters when overload hits a service that was idle)
MIN_GRADIENT: Final = 0.25
#: requests of queueing the decrease leaves room for (see the module docstring)
QUEUE_ALLOWANCE: Final = 1.0
HOLD_MAX_S: Final = 120.0
#: while app-limited the limit decays towards twice the used concurrency, never below this
APP_LIMITED_FLOOR: Final = 4.0
#: cv² from which the latency counts as dispersed (a standard deviation at least the mean)
DISPERSED_CV2: Final = 1.0
#: a dispersed latency's next free slot is expected within mean + this many standard deviations
#: (about the p99 of a normal latency)
WAIT_SPREAD: Final = 2.33

#: reasons a request can be refused by this module (metric label values)
SHED_QUEUE_FULL: Final = "queue_full"
SHED_QUEUE_TIMEOUT: Final = "queue_timeout"
SHED_OVERLOADED: Final = "overloaded"


class _Waiter:
    __slots__ = ("enqueued", "future", "handle", "priority", "shed_reason")

    def __init__(self, future: asyncio.Future[bool], priority: int, enqueued: float) -> None:
        self.future = future
        self.priority = priority
        self.enqueued = enqueued
        self.handle: asyncio.TimerHandle | None = None
        #: why the waiter is refused if its future resolves to False
        self.shed_reason = SHED_QUEUE_TIMEOUT


class ConcurrencyLimiter:
    """Admission control for non-critical requests: the guard's (scope ``"service"``), or one
    per route label under the guard-wide ceiling (scope ``"route"``, see `child`)."""

    def __init__(
        self,
        config: ConcurrencyConfig,
        clock: Callable[[], float],
        parent: ConcurrencyLimiter | None = None,
        label: str = "",
        *,
        ceiling: bool = False,
    ) -> None:
        self.config = config
        self._clock = clock
        #: the guard-wide ceiling this route's limiter admits under (None: no ceiling above)
        self.parent = parent
        self.label = label
        #: the route limiters under this ceiling (scope "route"), by label
        self.children: dict[str, ConcurrencyLimiter] = {}
        #: scope "route": this is the ceiling, a static cap of max_limit over every route
        self.ceiling_only = ceiling
        self.adaptive = config.mode == "adaptive" and not self.ceiling_only
        self.limit = float(config.max_limit if self.ceiling_only else config.limit)
        self.factor: float = 1.0 if parent is None else parent.factor
        self.effective = config.limit
        self._apply()
        self.in_flight = 0
        self.peak_in_flight = 0
        # queue: one deque per priority below CRITICAL
        self._queues: list[deque[_Waiter]] = [deque() for _ in range(Priority.CRITICAL)]
        self.queued = 0
        #: start of the current congestion episode (requests had to queue), None when calm
        self.episode_start: float | None = None
        #: since when the queue has been empty, during an episode (None while someone waits)
        self.calm_since: float | None = None
        self.shed_queue_full = 0
        self.shed_queue_timeout = 0
        self.shed_overloaded = 0
        #: refusals of this route's requests by the guard-wide ceiling (in shed_overloaded too)
        self.ceiling_refusals = 0
        #: (the ceiling) a route's waiter found the ceiling full: wake it when a slot frees
        self.blocked = False
        # adaptive state
        self.rtt_noload: float | None = None
        self.last_rtt: float | None = None
        #: the latency's dispersion and no-load reference (guard/latency_reference.py)
        self.reference = LatencyReference()
        self._last_fresh: float = clock()
        self.window_start: float = clock()
        self.window_sum = 0.0
        #: the sum of the window's squared latencies (its dispersion)
        self.window_sq = 0.0
        self.window_n = 0
        #: the latency's squared coefficient of variation (None before the first window)
        self.rtt_cv2: float | None = None
        #: the samples a window needs before it may close (more for a dispersed latency)
        self.window_min = WINDOW_MIN_SAMPLES
        #: window_n at which the request path next calls maybe_close_window
        self.window_next = WINDOW_MIN_SAMPLES
        self.window_peak = 0
        self._ceiling: int | None = None
        self._ceiling_until = 0.0
        self._hold = HOLD_BASE_S
        self._cuts_in_row = 0
        self._probing_from: float | None = None
        #: the level an app-limited decay started from; growth doubles back up to it
        self._regain: float | None = None
        self.noload_window_s = 30.0
        self.probe_interval_s = 30.0
        self.updates = 0

    def child(self, label: str) -> ConcurrencyLimiter:
        """The limiter of route `label` under this guard-wide ceiling (built once per label)."""
        limiter = self.children.get(label)
        if limiter is None:
            limiter = self.children[label] = ConcurrencyLimiter(
                self.config, self._clock, parent=self, label=label
            )
        return limiter

    def housekeeping(self, now: float) -> None:
        """Close the windows of a quiet or idle service (the request path checks windows by
        sample count only): this limiter's, or every route limiter's under a ceiling."""
        if self.adaptive and now - self.window_start >= WINDOW_MAX_S:
            self.maybe_close_window(now)
        for limiter in list(self.children.values()):
            limiter.housekeeping(now)

    # -- admission -------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is waiting (the fast path)."""
        if self.in_flight < self.effective and not self.queued:
            parent = self.parent
            if parent is not None:
                if parent.in_flight >= parent.effective:
                    return False
                parent.in_flight += 1
                if parent.in_flight > parent.window_peak:
                    parent.window_peak = parent.in_flight
            self.in_flight += 1
            if self.in_flight > self.window_peak:
                self.window_peak = self.in_flight
            return True
        return False

    async def acquire(self, priority: int) -> str | None:
        """Wait for a slot; None once admitted, else the shed reason."""
        if self.try_acquire():
            return None
        parent = self.parent
        if parent is not None and parent.in_flight >= parent.effective:
            # the guard-wide ceiling protects the process: refused at once, never queued
            parent.shed_overloaded += 1
            self.shed_overloaded += 1
            self.ceiling_refusals += 1
            return SHED_OVERLOADED
        cfg = self.config
        now = self._clock()
        if self.queued >= cfg.queue_size and not self._evict(priority, SHED_QUEUE_FULL):
            self.shed_queue_full += 1
            return SHED_QUEUE_FULL
        if self.queued >= self._keep(now) and not self._evict(priority + 1, SHED_OVERLOADED):
            self.calm_since = None  # a refusal at the door is congestion too: no calm yet
            self.shed_overloaded += 1
            return SHED_OVERLOADED
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), priority, now)
        calm = self.calm_since
        if calm is not None:
            self.calm_since = None
            if now - calm >= cfg.queue_timeout_s:
                self.episode_start = None  # calm for a whole interval: that overload is over
        if self.episode_start is None:
            self.episode_start = now
        self._queues[priority].append(waiter)
        self.queued += 1
        waiter.handle = loop.call_later(self._queue_timeout(now), self._expire, waiter)
        try:
            admitted = await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self.release(self._clock(), -1.0)
            else:
                self._remove(waiter)
            raise
        if admitted:
            return None
        return waiter.shed_reason

    def _keep(self, now: float) -> int:
        """How many waiters the queue keeps: its size, or in standing overload under the adaptive
        limit only the slots expected to come free within the target delay (at least one)."""
        rtt = self.last_rtt
        if rtt is None or not self.adaptive or not self._overloaded(now):
            return self.config.queue_size
        expected = int(self._queue_timeout(now) * self.effective / rtt) if rtt > 0 else 1
        return min(self.config.queue_size, max(1, expected))

    def _queue_timeout(self, now: float) -> float:
        cfg = self.config
        noload = self.rtt_noload if self.adaptive else None
        if self._overloaded(now):
            target = cfg.queue_target_s
            if noload is not None:
                target = min(target, max(0.0005, 0.5 * noload))
                rtt = self.last_rtt
                if rtt is not None:
                    # the waiter kept for the next free slot waits until one is expected
                    # (a dispersed latency frees its slots unevenly: a slow request holds
                    # one for several mean latencies, so the next slot comes that much later)
                    cv2 = self.rtt_cv2 or 0.0
                    spread = 1.0 + WAIT_SPREAD * math.sqrt(cv2) if cv2 >= DISPERSED_CV2 else 1.0
                    target = max(target, min(cfg.queue_timeout_s, spread * rtt / self.effective))
            return target
        if noload is not None:
            # a wait longer than a few no-load latencies already breaks the latency tolerance
            return min(cfg.queue_timeout_s, max(cfg.queue_target_s, 2.0 * cfg.tolerance * noload))
        return cfg.queue_timeout_s

    def _overloaded(self, now: float) -> bool:
        since = self.episode_start
        if since is None:
            return False
        interval = self.config.queue_timeout_s
        calm = self.calm_since
        if calm is not None and now - calm >= interval:
            return False
        return now - since >= interval

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        self._remove(waiter)
        self.shed_queue_timeout += 1
        waiter.future.set_result(False)

    def _remove(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.priority]
        try:
            queue.remove(waiter)
        except ValueError:
            return
        self.queued -= 1
        if waiter.handle is not None:
            waiter.handle.cancel()
        if not self.queued:
            self.calm_since = self._clock()  # the queue is empty: calm starts

    def _evict(self, below: int, reason: str) -> bool:
        """Shed the oldest waiter of the lowest priority under `below` to make room."""
        for lower in range(below):
            queue = self._queues[lower]
            if queue:
                victim = queue.popleft()
                self.queued -= 1
                if victim.handle is not None:
                    victim.handle.cancel()
                if reason == SHED_OVERLOADED:
                    self.shed_overloaded += 1
                else:
                    self.shed_queue_full += 1
                if not victim.future.done():
                    victim.shed_reason = reason
                    victim.future.set_result(False)
                return True
        return False

    def release(self, now: float, rtt: float) -> None:
        """Give back a slot at time `now`; `rtt` ≥ 0 (seconds) feeds the adaptive limit."""
        self.in_flight -= 1
        parent = self.parent
        if parent is not None:
            parent.in_flight -= 1
        if rtt >= 0.0 and self.adaptive:
            self.window_sum += rtt
            self.window_sq += rtt * rtt
            self.window_n += 1
            if self.window_n >= self.window_next or now - self.window_start >= WINDOW_MAX_S:
                self.maybe_close_window(now)
        if self.queued:
            self.hand_over()
        elif self.episode_start is not None and self.calm_since is None:
            self.calm_since = now  # nobody waits (a safety net: draining the queue sets it)
        if parent is not None and parent.blocked:
            parent.wake_routes()  # another route's waiters found the ceiling full

    def maybe_close_window(self, now: float) -> None:
        """Close the sample window if it is long enough: ≥ 10 samples and 50 ms, or 1 s — or
        ≥ 10 samples already far beyond tolerance (react to sudden overload without waiting).

        The request path calls this once `window_n` reaches `window_next`; when the window
        stays open, the next check comes after another eighth of its samples, so a busy
        service checks a few dozen times per window instead of on every request."""
        elapsed = now - self.window_start
        n = self.window_n
        if n >= WINDOW_MIN_SAMPLES:
            if elapsed >= WINDOW_MIN_S and n >= self.window_min:
                self._close_window(now)
                return
            noload = self.rtt_noload
            if noload is not None and self.window_sum > 2.0 * self.config.tolerance * noload * n:
                self._close_window(now)
                return
        if elapsed >= WINDOW_MAX_S:
            self._close_window(now)
            return
        self.window_next = max(WINDOW_MIN_SAMPLES, n + max(1, n >> 3))

    def hand_over(self) -> None:
        """Give free slots to waiters (highest priority first; LIFO under standing overload)."""
        now = self._clock()
        lifo = self._overloaded(now)
        parent = self.parent
        while self.queued and self.in_flight < self.effective:
            if parent is not None and parent.in_flight >= parent.effective:
                parent.blocked = True  # the guard-wide ceiling: the waiters wait (or time out)
                break
            waiter = None
            for queue in reversed(self._queues):
                if queue:
                    waiter = queue.pop() if lifo else queue.popleft()
                    break
            if waiter is None:
                break
            self.queued -= 1
            if waiter.handle is not None:
                waiter.handle.cancel()
            if waiter.future.done():
                continue
            if parent is not None:
                parent.in_flight += 1
            self.in_flight += 1
            if self.in_flight > self.window_peak:
                self.window_peak = self.in_flight
            waiter.future.set_result(True)
        if not self.queued and self.episode_start is not None and self.calm_since is None:
            self.calm_since = now  # the queue is empty: calm starts

    def wake_routes(self) -> None:
        """(The ceiling) a slot came free: hand it to the routes whose waiters found the ceiling
        full — whichever route released it — until the ceiling is full again."""
        self.blocked = False
        for limiter in list(self.children.values()):
            if limiter.queued and limiter.in_flight < limiter.effective:
                if self.in_flight >= self.effective:
                    self.blocked = True  # full again: the next release goes on
                    return
                limiter.hand_over()

    # -- adaptive limit --------------------------------------------------------------------
    def set_factor(self, factor: float) -> None:
        """Scale the admitted limit (emergency / recovering modes); a ceiling scales its route
        limiters too."""
        self.factor = factor
        self._apply()
        if self.queued:
            self.hand_over()
        for limiter in list(self.children.values()):
            limiter.set_factor(factor)

    def _apply(self) -> None:
        self.effective = max(1, math.floor(self.limit * self.factor + 1e-9))

    def overload(self, now: float, factor: float) -> None:
        """An overload signal from outside the latency samples (the event loop's lag, see
        guard/loop_health.py): cut the adaptive limit to `factor` (≥ MIN_GRADIENT) of itself,
        the level it came from becoming the ceiling for the hold, as a cut in standing
        overload would. A ceiling passes the signal to its route limiters; a static limit
        ignores it."""
        for limiter in list(self.children.values()):
            limiter.overload(now, factor)
        if not self.adaptive:
            return
        self._regain = None
        self._ceiling = max(1, math.floor(self.limit))
        self._ceiling_until = now + self._hold
        self._hold = min(self._hold * 2.0, HOLD_MAX_S)
        cut = self.limit * max(MIN_GRADIENT, factor)
        self.limit = min(float(self.config.max_limit), max(float(self.config.min_limit), cut))
        self._apply()

    def _close_window(self, now: float) -> None:
        n = self.window_n
        rtt = self.window_sum / n if n else 0.0
        square = self.window_sq / n if n else 0.0
        peak = self.window_peak
        self.window_start = now
        self.window_sum = 0.0
        self.window_sq = 0.0
        self.window_n = 0
        self.window_next = WINDOW_MIN_SAMPLES
        self.window_peak = self.in_flight
        if n == 0:
            if self.adaptive and 2 * peak < self.effective and self._probing_from is None:
                self.limit = self._validated(self.limit, peak)  # a quiet second: app-limited
                self._apply()
            return
        self.updates += 1
        self.last_rtt = rtt
        cfg = self.config
        reference = self.reference
        noload, fresh = reference.add_window(now, rtt, square, n, self.noload_window_s)
        cv2 = self.rtt_cv2 = reference.cv2 or 0.0
        self.window_min = reference.window_min
        if fresh:
            self._last_fresh = now
        self.rtt_noload = noload

        if self._probing_from is not None:
            # the half-limit probe window is over: restore and judge against the new reference
            self.limit = self._probing_from
            self._probing_from = None
        elif now - self._last_fresh > self.probe_interval_s and self.limit > cfg.min_limit:
            self._probing_from = self.limit
            self.limit = max(float(cfg.min_limit), self.limit / 2.0)
            self._last_fresh = now
            self._apply()
            return

        limit = self.limit
        gradient = cfg.tolerance * noload / rtt if rtt > 0 else 1.0
        if gradient < 1.0 and 2 * peak >= self.effective:
            # latency beyond tolerance while the limit was at least half used: shrink it
            gradient = max(MIN_GRADIENT, gradient)
            self._regain = None
            # in standing overload the queue holds the next request: no allowance needed
            standing = self._overloaded(now)
            allowance = 0.0 if standing and cv2 < DISPERSED_CV2 else QUEUE_ALLOWANCE
            cut = limit * gradient + allowance
            if math.floor(cut) < math.floor(limit):
                self._cuts_in_row += 1
                if peak >= self.effective and (self._cuts_in_row >= 2 or standing):
                    # that level kept adding queueing (one bad window can be a hiccup of the
                    # host, not in a standing overload): do not probe it again before the hold
                    self._ceiling = max(1, math.floor(limit))
                    self._ceiling_until = now + self._hold
                    self._hold = min(self._hold * 2.0, HOLD_MAX_S)
                limit = cut
            else:
                self._cuts_in_row = 0
                if cut < limit:
                    limit = cut
                if self._ceiling is not None and self.effective >= self._ceiling:
                    # a probe at the old ceiling held within the queue allowance: forget it
                    self._ceiling = None
                    self._hold = HOLD_BASE_S
        elif gradient >= 1.0 and peak >= self.effective:
            self._cuts_in_row = 0
            if self._ceiling is not None and self.effective >= self._ceiling:
                # a probe at the old ceiling went through without queueing: forget it
                self._ceiling = None
                self._hold = HOLD_BASE_S
            regain = self._regain
            if regain is not None and limit < regain:
                limit = min(2.0 * limit, regain)  # slow start back to the validated level
            else:
                self._regain = None
                grown = limit + math.sqrt(limit)
                limit = (1.0 - cfg.smoothing) * limit + cfg.smoothing * grown
            if self._ceiling is not None and now < self._ceiling_until:
                limit = min(limit, self._ceiling - 0.01)
        elif 2 * peak < self.effective:
            limit = self._validated(limit, peak)
        self.limit = min(float(cfg.max_limit), max(float(cfg.min_limit), limit))
        self._apply()

    def _validated(self, limit: float, peak: int) -> float:
        """The app-limited decay (congestion window validation, see the module docstring)."""
        used = max(float(self.config.min_limit), APP_LIMITED_FLOOR, 2.0 * peak)
        if limit <= used:
            return limit
        if self._regain is None or limit > self._regain:
            self._regain = limit
        return max(used, 0.5 * (limit + used))

    def describe(self, routes: bool = True) -> dict[str, object]:
        """JSON-able state for the status endpoint (a ceiling adds its route limiters, unless
        `routes` is False: guard/limits_json.py encodes those one by one)."""
        out = self._describe()
        if self.ceiling_only:
            # the guard-wide shed counts: the ceiling's own and every route's
            for name in ("shed_queue_full", "shed_queue_timeout"):
                out[name] = sum(getattr(lim, name) for lim in list(self.children.values()))
            out["shed_overloaded"] = self.shed_overloaded + sum(
                lim.shed_overloaded - lim.ceiling_refusals for lim in list(self.children.values())
            )
            out["queued"] = sum(lim.queued for lim in list(self.children.values()))
            if routes:
                out["routes"] = {
                    label: limiter._describe() for label, limiter in list(self.children.items())
                }
        return out

    def _describe(self) -> dict[str, object]:
        return {
            "mode": self.config.mode,
            "scope": "route" if self.ceiling_only or self.parent is not None else "service",
            "limit": self.effective,
            "limit_estimate": round(self.limit, 3),
            "factor": round(self.factor, 3),
            "min_limit": self.config.min_limit,
            "max_limit": self.config.max_limit,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "standing_overload": self._overloaded(self._clock()),
            "queue_size": self.config.queue_size,
            "rtt_noload_ms": None if self.rtt_noload is None else round(self.rtt_noload * 1e3, 3),
            "rtt_recent_ms": None if self.last_rtt is None else round(self.last_rtt * 1e3, 3),
            "ceiling": self._ceiling,
            "updates": self.updates,
            "shed_queue_full": self.shed_queue_full,
            "shed_queue_timeout": self.shed_queue_timeout,
            "shed_overloaded": self.shed_overloaded,
            "regain": None if self._regain is None else round(self._regain, 3),
        }
