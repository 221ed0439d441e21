"""The watch loop: every interval scrape → store → evaluate → transitions → the responder.

`Watch` owns one store, one engine and one scraper built from a watch file. `cycle` runs one
interval's work; `run` repeats it until `stop` is set (SIGINT/SIGTERM in the CLI), saving the
state (series and alerts) under ``state_dir`` every `save_every` seconds (5 minutes) and on the
way out. The alerts are small and saved apart (``watch-alerts.json``) after every cycle that
changed one, so a restart never fires again (nor opens a second incident for) what fired.
The event loop is never blocked for long: psutil and file writes run in threads, and the
evaluation yields to the loop between rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from crisisctl.watch.config import Directory, WatchConfig
from crisisctl.watch.engine import Engine
from crisisctl.watch.model import Responder, Transition
from crisisctl.watch.rules_eval import retention_for
from crisisctl.watch.scrape import Scraper
from crisisctl.watch.store import SeriesStore, encode, save_atomic

__all__ = ["STATE_FILE", "Watch"]

STATE_FILE: Final = "watch-state.json"
ALERTS_FILE: Final = "watch-alerts.json"
log = logging.getLogger("crisisctl.watch")


class Watch:
    """One watch process's state and its cycle."""

    def __init__(
        self,
        config: WatchConfig,
        *,
        state_dir: Path | None = None,
        scraper: Scraper | None = None,
        clock: Callable[[], float] = time.time,
        save_every: float = 300.0,
    ) -> None:
        self.config = config
        self.rules = config.effective_rules()
        self.store = SeriesStore(retention_for(self.rules), config.interval, config.max_series)
        self.engine = Engine(self.rules, self.store)
        self.scraper = scraper or Scraper(config)
        self.directory = Directory(config)
        self.state_path = (state_dir or Path(config.state_dir)) / STATE_FILE
        self.alerts_path = self.state_path.with_name(ALERTS_FILE)
        self.clock = clock
        self.save_every = save_every
        self.cycles = 0
        self.last_cycle_s = 0.0

    # -- state ---------------------------------------------------------------------------------
    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state %s: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    async def load_state(self, *, alerts: bool = True) -> tuple[int, int]:
        """Restore the saved series (and alerts); (series, alerts) restored."""
        data = await asyncio.to_thread(self._read, self.state_path)
        series = self.store.restore(data.get("store") or {})
        restored = 0
        if alerts:
            saved = await asyncio.to_thread(self._read, self.alerts_path)
            restored = self.engine.restore(saved.get("engine") or {})
        return series, restored

    async def save_alerts(self) -> None:
        """Write the alerts atomically (small: after every cycle that changed one)."""
        document = {"saved_at": self.clock(), "engine": self.engine.state()}
        await asyncio.to_thread(lambda: save_atomic(self.alerts_path, encode(document)))

    async def save_state(self) -> None:
        """Write the series and the alerts atomically (encoded and written off the loop)."""
        document = {"saved_at": self.clock(), "store": self.store.snapshot()}
        await asyncio.to_thread(lambda: save_atomic(self.state_path, encode(document)))
        await self.save_alerts()

    # -- one cycle -----------------------------------------------------------------------------
    async def observe(self) -> float:
        """Scrape every target into the store; the sample time (epoch seconds)."""
        now = self.clock()
        samples = await self.scraper.scrape()
        self.store.add_many(now, samples)
        self.directory.discovered = self.scraper.discovered
        return now

    async def evaluate(self, now: float, *, ignore_for: bool = False) -> list[Transition]:
        """Every rule at `now`, yielding to the loop between rules."""
        transitions: list[Transition] = []
        for index in range(len(self.rules)):
            transitions += self.engine.evaluate_one(index, now, ignore_for=ignore_for)
            await asyncio.sleep(0)
        return transitions

    async def cycle(self, responder: Responder | None = None) -> list[Transition]:
        """Scrape, store, evaluate and hand the transitions to `responder`."""
        start = time.perf_counter()
        now = await self.observe()
        transitions = await self.evaluate(now)
        self.cycles += 1
        self.last_cycle_s = time.perf_counter() - start
        if responder is not None:
            at = datetime.fromtimestamp(now, UTC)
            await responder.handle(transitions, self.engine.firing(), at)
        return transitions

    async def run(self, stop: asyncio.Event, responder: Responder | None = None) -> None:
        """Cycle every interval until `stop` is set; the state is saved on the way out."""
        loop = asyncio.get_running_loop()
        last_save = loop.time()
        try:
            while not stop.is_set():
                started = loop.time()
                try:
                    if await self.cycle(responder):
                        await self.save_alerts()
                except Exception:  # one bad cycle (a responder bug) must not end the watch
                    log.exception("watch cycle failed")
                if loop.time() - last_save >= self.save_every:
                    self.store.expire(self.clock())
                    await self.save_state()
                    last_save = loop.time()
                pause = max(0.0, self.config.interval - (loop.time() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
        finally:
            await self.save_state()
