"""One mode for the whole fleet: the guard's mode, its reason and its history kept in Redis.

Keys, scripts and the record format are in guard/fleet_store.py (all under one hash tag
``{P:fleet}``, P the guard's `storage_prefix`: one Redis Cluster slot).

Protocol:
  * A switch made on any instance applies there at once, then SWITCH stores it (new id,
    record, history, the instance's own ack) and it is published. An HTTP switch then waits
    up to `confirm_s` for every live instance to apply it and reports "K of N".
  * Every instance applies a published switch newer than the one it has (ids only grow, so a
    late or repeated message never undoes a newer switch) and acks it at once. Every
    `interval_s` (1 s) it heartbeats and re-reads the record in one round trip (BEAT): a
    missed message heals within a second. Instances silent for `ttl_s` are not counted.
  * On start the record and the history are loaded before anything else (the guard's
    lifespan start-up waits up to `start_timeout_s` for it), so a restart keeps both.
  * Redis unreachable: the mode stays as it is locally and `describe()` says the sync is
    degraded. A switch made meanwhile is stored once Redis answers, unless the fleet switched
    in between (compare-and-set on the id it was made over): then the fleet's switch wins.
    A fleet record older than this instance's (Redis lost its data) is re-seeded the same way.

Every Redis call is async and bounded by `timeout_s`; nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crisisctl.guard.fleet_store import (
    BEAT_SCRIPT,
    CONFIRM_SCRIPT,
    SWITCH_SCRIPT,
    as_text,
    fleet_keys,
    instance_id,
    parse_record,
)
from crisisctl.guard.modes import HISTORY_LEN, ModeChange, ModeState, utc_iso

if TYPE_CHECKING:
    from crisisctl.guard.redis_store import RedisClient

__all__ = ["FleetSync"]

log = logging.getLogger("crisisctl.guard")


@dataclass(slots=True)
class _Pending:
    """A switch made here that the fleet has not stored yet."""

    change: ModeChange
    #: the fleet switch in force when it was made
    base_id: int
    #: store only if the fleet's switch is still this one (None: whatever is in force)
    expect: int | None


def _error_text(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class FleetSync:
    """Shares a guard's `ModeState` with every instance on the same Redis (see module doc)."""

    def __init__(
        self,
        client: RedisClient,
        modes: ModeState,
        on_change: Callable[[], None],
        *,
        prefix: str = "crisisctl",
        timeout_s: float = 1.0,
        url: str = "",
        interval_s: float = 1.0,
        ttl_s: float = 3.0,
        confirm_s: float = 1.5,
        start_timeout_s: float = 2.0,
        instance: str | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if timeout_s <= 0 or interval_s <= 0 or ttl_s <= interval_s:
            raise ValueError("timeout_s and interval_s must be > 0 and ttl_s > interval_s")
        self.client = client
        self.modes = modes
        self.on_change = on_change
        self.prefix = prefix
        self.keys = fleet_keys(prefix)
        self.timeout_s = timeout_s
        self.url = url
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.confirm_s = confirm_s
        self.start_timeout_s = start_timeout_s
        self.instance_id = instance or instance_id()
        self.healthy = True
        self.started = False
        self.errors_total = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.down_since: float | None = None
        self.last_sync_at: float | None = None
        #: live instances at the last heartbeat (this one included)
        self.instances: int | None = None
        self._switch_script = client.register_script(SWITCH_SCRIPT)
        self._beat_script = client.register_script(BEAT_SCRIPT)
        self._confirm_script = client.register_script(CONFIRM_SCRIPT)
        self._pending: _Pending | None = None
        #: bumped whenever the switch in force changes here: a re-read sent before that
        #: answers about an older state and must not be acted on
        self._generation = 0
        self._want_history = True
        self._lock = asyncio.Lock()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: run once before the first load (the storage warms its limiters' client up)
        self._on_start = on_start
        modes.scope = "fleet"
        modes.fleet_view = self.describe

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Run the sync in the running event loop (idempotent; no-op outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._closing or (
            self._task is not None and not self._task.done() and self._loop is loop
        ):
            return
        if self._loop is not loop:
            # a new loop (tests, a restarted server): fresh loop-bound primitives
            self._lock = asyncio.Lock()
            self._loaded = asyncio.Event()
        self._loop = loop
        self._task = loop.create_task(self._run(), name="crisisctl-guard-fleet")

    async def ready(self) -> None:
        """Start, then wait (at most `start_timeout_s`) until the fleet's mode is loaded."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.start_timeout_s):
                await self._loaded.wait()

    async def aclose(self) -> None:
        """Stop the sync and leave the fleet (so it no longer counts this instance)."""
        self._closing = True
        task, self._task = self._task, None
        for pending in [task, *self._side_tasks]:
            # cancel until done: on 3.11 a cancellation that meets an expiring
            # asyncio.timeout can turn into a TimeoutError and be absorbed
            while pending is not None and not pending.done():
                pending.cancel()
                await asyncio.wait({pending}, timeout=0.5)
        if self.started:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await self.client.zrem(self.keys.instances, self.instance_id)
                    await self.client.hdel(self.keys.applied, self.instance_id)

    # -- switches made here ----------------------------------------------------------------
    async def switch(self, change: ModeChange, base_id: int) -> dict[str, object]:
        """Store and publish `change` (just applied here over fleet switch `base_id`), then
        wait up to `confirm_s` for the live instances to apply it; the outcome as JSON."""
        self.start()
        self._pending = _Pending(change, base_id, None)
        stored = await self._flush()
        outcome: dict[str, object] = {
            "scope": "fleet",
            "instance": self.instance_id,
            "stored": stored is not None,
        }
        if stored is None:
            outcome.update(degraded=True, error=self.last_error, confirmed=None, instances=None)
            return outcome
        started = time.monotonic()
        confirmed, live = 1, 1
        pause = 0.005  # the others usually apply it within milliseconds: look soon, then less
        while True:
            try:
                confirmed, live = await self._confirmations(stored.switch_id)
            except Exception as exc:
                self._failed(exc)
                break
            if confirmed >= live or time.monotonic() - started >= self.confirm_s:
                break
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 2)
        outcome.update(
            switch_id=stored.switch_id,
            mode=stored.mode,
            confirmed=confirmed,
            instances=live,
            waited_ms=round((time.monotonic() - started) * 1000.0, 1),
        )
        return outcome

    def switch_soon(self, change: ModeChange, base_id: int, *, only_if_current: bool) -> None:
        """Store `change` in the background (from synchronous code such as `set_mode`).

        With `only_if_current` it is stored only if the fleet is still on switch `base_id`
        (the recovering ramp's end, which every instance reaches about the same time).
        """
        self._pending = _Pending(change, base_id, base_id if only_if_current else None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the sync task stores it once it runs
        self.start()
        task = loop.create_task(self._flush())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _flush(self) -> ModeChange | None:
        """Store the pending switch, if any; the stored switch, or None."""
        async with self._lock:
            pending = self._pending
            if pending is None:
                return None
            keys = self.keys
            try:
                ok, raw = await self._bounded(
                    self._switch_script(
                        keys=[keys.mode, keys.seq, keys.history, keys.instances, keys.applied],
                        args=[
                            pending.change.mode, pending.change.actor, pending.change.reason,
                            pending.change.source,
                            -1 if pending.expect is None else pending.expect,
                            HISTORY_LEN, self.instance_id,
                        ],
                    )
                )  # fmt: skip
            except Exception as exc:
                self._failed(exc)
                # from now on store it only if the fleet has not switched meanwhile
                pending.expect = pending.base_id
                return None
            self._ok()
            if self._pending is pending:
                self._pending = None
            parsed = parse_record(raw)
            if int(ok) != 1 or parsed is None:
                # the fleet moved on while this switch waited: the fleet's switch wins
                self.modes.discard(pending.change)
                if parsed is not None:
                    self._adopt(*parsed, now_us=None, force=True)
                return None
            fleet_change, _ = parsed
            stored = self.modes.stored(pending.change, fleet_change)
            self._generation += 1
            self.on_change()
            try:
                await self._bounded(self.client.publish(keys.channel, as_text(raw)))
            except Exception as exc:  # stored: the others catch up on their next re-read
                self._failed(exc)
            return stored

    async def _confirmations(self, switch_id: int) -> tuple[int, int]:
        reply = await self._bounded(
            self._confirm_script(
                keys=[self.keys.instances, self.keys.applied],
                args=[switch_id, int(self.ttl_s * 1000)],
            )
        )
        return int(reply[0]), int(reply[1])

    # -- the sync task ---------------------------------------------------------------------
    async def _run(self) -> None:
        if self._on_start is not None:
            with contextlib.suppress(Exception):
                await self._on_start()
        while not self._closing:
            pubsub: Any = None
            try:
                self._want_history = True
                await self._beat()
                self.started = True
                self._loaded.set()
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                await self._bounded(pubsub.subscribe(self.keys.channel))
                # a switch published before the subscription began is read here
                await self._beat()
                next_beat = time.monotonic() + self.interval_s
                while True:
                    wait = next_beat - time.monotonic()
                    if wait <= 0:
                        await self._beat()
                        next_beat = time.monotonic() + self.interval_s
                        continue
                    async with asyncio.timeout(wait + self.timeout_s):
                        message = await pubsub.get_message(timeout=wait)
                    is_switch = message is not None and message.get("type") == "message"
                    if is_switch and self._on_message(message.get("data")):
                        await self._ack()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(self.timeout_s):
                            await pubsub.aclose()
            self._loaded.set()  # Redis down: start anyway, in the mode this process has
            await asyncio.sleep(self.interval_s)

    def _on_message(self, data: Any) -> bool:
        parsed = parse_record(data)
        if parsed is None:
            return False
        change, _ = parsed
        if change.switch_id > self.modes.switch_id + 1:
            self._want_history = True  # switches were missed: fetch the history next beat
        return self._adopt(change, 0, now_us=None)

    async def _ack(self) -> None:
        await self._bounded(
            self.client.hset(self.keys.applied, self.instance_id, str(self.modes.switch_id))
        )

    async def _beat(self) -> None:
        """Heartbeat, re-read the fleet's switch and adopt it if it is newer (one round trip)."""
        keys = self.keys
        want_history = self._want_history
        generation = self._generation
        reply = await self._bounded(
            self._beat_script(
                keys=[keys.mode, keys.history, keys.instances, keys.applied],
                args=[self.instance_id, self.modes.switch_id, int(self.ttl_s * 1000),
                      1 if want_history else 0, HISTORY_LEN],
            )
        )  # fmt: skip
        raw, now_us, live, history = reply[0], int(as_text(reply[1])), int(reply[2]), reply[3]
        self._ok()
        self.instances = live
        self.last_sync_at = time.time()
        if self._pending is not None:
            await self._flush()
            return
        if generation != self._generation:
            return  # the switch in force changed while this re-read was on its way
        if want_history:
            self._want_history = False
        parsed = parse_record(raw)
        fleet_id = parsed[0].switch_id if parsed is not None else 0
        if fleet_id < self.modes.switch_id:
            # Redis lost the fleet's state (restarted empty): store ours again, unless
            # another instance does it first
            self._reseed(fleet_id)
            await self._flush()
            return
        if parsed is not None and (fleet_id > self.modes.switch_id or history):
            changes = [p[0] for p in map(parse_record, reversed(history)) if p is not None]
            if changes:
                self.modes.load_history(changes)
            if self._adopt(*parsed, now_us=now_us):
                await self._ack()

    def _reseed(self, fleet_id: int) -> None:
        modes = self.modes
        log.warning(
            "the fleet's mode record in Redis is older than this instance's (switch #%d < "
            "#%d): storing %s again",
            fleet_id,
            modes.switch_id,
            modes.mode,
        )
        change = ModeChange(
            at=utc_iso(time.time()),
            previous=modes.mode,
            mode=modes.mode,
            actor=f"crisisctl guard {self.instance_id}",
            reason="the fleet's mode record was lost in Redis; stored again",
            source="fleet-restore",
        )
        modes.switch_id = fleet_id
        modes.history.append(change)
        self._pending = _Pending(change, fleet_id, fleet_id)

    def _adopt(
        self, change: ModeChange, at_us: int, *, now_us: int | None, force: bool = False
    ) -> bool:
        age_s = (now_us - at_us) / 1_000_000 if now_us is not None else 0.0
        if not self.modes.adopt(change, age_s, force=force):
            return False
        self._generation += 1
        self.on_change()
        return True

    # -- health ----------------------------------------------------------------------------
    async def _bounded(self, call: Coroutine[Any, Any, Any] | Any) -> Any:
        async with asyncio.timeout(self.timeout_s):
            return await call

    def _failed(self, exc: BaseException) -> None:
        self.errors_total += 1
        self.last_error = (
            f"no answer within {self.timeout_s:g} s"
            if isinstance(exc, TimeoutError)
            else _error_text(exc)
        )
        self.last_error_at = time.time()
        if self.healthy:
            self.healthy = False
            self.down_since = self.last_error_at
            log.warning(
                "fleet mode sync with %s failed (%s); the mode now applies to this process "
                "only until Redis answers again",
                self.url or "Redis",
                self.last_error,
            )

    def _ok(self) -> None:
        if self.healthy:
            return
        self.healthy = True
        self.down_since = None
        log.info("fleet mode sync with %s restored", self.url or "Redis")

    def describe(self) -> dict[str, object]:
        """JSON-able state of the sync, for the status endpoint."""
        return {
            "instance": self.instance_id,
            "state": "ok" if self.healthy else "degraded",
            "url": self.url,
            "prefix": self.prefix,
            "instances": self.instances,
            "last_sync_at": utc_iso(self.last_sync_at) if self.last_sync_at else None,
            "unstored_switch": self._pending is not None,
            "errors_total": self.errors_total,
            "last_error": self.last_error,
            "last_error_at": utc_iso(self.last_error_at) if self.last_error_at else None,
            "down_since": utc_iso(self.down_since) if self.down_since else None,
        }
