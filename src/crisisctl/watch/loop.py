"""The watch loop: every interval scrape → store → evaluate → transitions → the responder.

The samples come from the targets (`scrape.Scraper`) or, when the watch file has
``source: {prometheus: URL}``, from that server's HTTP API (`promsource.PrometheusScraper`).

`Watch` owns one store, one engine and one scraper built from a watch file. `cycle` runs one
interval's work; `run` repeats it until `stop` is set (SIGINT/SIGTERM in the CLI), saving the
state (series and alerts) under ``state_dir`` every `save_every` seconds (5 minutes) and on the
way out. The series go to ``watch-state.bin`` (binary: ``store_file``; a ``watch-state.json``
of earlier versions is read once and removed after the first save). The alerts are small and
saved apart (``watch-alerts.json``) after every cycle that changed one, so a restart never
fires again (nor opens a second incident for) what fired. The event loop is never blocked for
long: psutil, packing and file writes run in threads, the series are copied a few hundred at
a time with a yield between, and the evaluation yields to the loop between rules.
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
from crisisctl.watch.promsource import PrometheusScraper
from crisisctl.watch.rules_eval import retention_for
from crisisctl.watch.scrape import Scraper
from crisisctl.watch.store import SavedSeries, SeriesStore, save_atomic
from crisisctl.watch.store_file import StateFileError, encode_json, pack, unpack

__all__ = ["LEGACY_STATE_FILE", "STATE_FILE", "Watch"]

STATE_FILE: Final = "watch-state.bin"
#: where versions before the binary state file kept the series (read once, then removed)
LEGACY_STATE_FILE: Final = "watch-state.json"
ALERTS_FILE: Final = "watch-alerts.json"
#: series copied per turn of the event loop when the state is saved (~10 ms)
SNAPSHOT_CHUNK: Final = 300
log = logging.getLogger("crisisctl.watch")


class Watch:
    """One watch process's state and its cycle."""

    def __init__(
        self,
        config: WatchConfig,
        *,
        state_dir: Path | None = None,
        scraper: Scraper | PrometheusScraper | None = None,
        clock: Callable[[], float] = time.time,
        save_every: float = 300.0,
    ) -> None:
        self.config = config
        self.rules = config.effective_rules()
        self.store = SeriesStore(retention_for(self.rules), config.interval, config.max_series)
        self.engine = Engine(self.rules, self.store)
        if scraper is None:
            scraper = PrometheusScraper(config) if config.source else Scraper(config)
        self.scraper = scraper
        self.directory = Directory(config)
        self.state_path = (state_dir or Path(config.state_dir)) / STATE_FILE
        self.alerts_path = self.state_path.with_name(ALERTS_FILE)
        self.legacy_path = self.state_path.with_name(LEGACY_STATE_FILE)
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

    def _read_series(self) -> list[SavedSeries]:
        for path in (self.state_path, self.legacy_path):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("ignoring the saved series in %s: %s", path, exc)
                return []
            try:
                return unpack(data)[0]
            except StateFileError as exc:
                log.warning("ignoring the saved series in %s: %s; starting without them", path, exc)
                return []
        return []

    async def load_state(self, *, alerts: bool = True) -> tuple[int, int]:
        """Restore the saved series (and alerts); (series, alerts) restored."""
        saved = await asyncio.to_thread(self._read_series)
        series = self.store.restore(saved)
        restored = 0
        if alerts:
            document = await asyncio.to_thread(self._read, self.alerts_path)
            restored = self.engine.restore(document.get("engine") or {})
        return series, restored

    async def backfill(self) -> int:
        """With a Prometheus source: fill each series' window from the server's history (at
        most the source's ``backfill`` span, the rules' retention of the name, one point per
        interval); the number of points added (0 without a Prometheus source)."""
        source = self.scraper
        if not isinstance(source, PrometheusScraper) or source.source.backfill <= 0:
            return 0
        retention = self.store.retention
        spans = {}
        for name in source.queries:
            longest = max(
                [retention.of(name)] + [s for (n, _le), s in retention.by_le.items() if n == name]
            )
            spans[name] = min(source.source.backfill, longest)
        series = await source.history(spans, self.clock(), self.config.interval)
        added = 0
        for key, points in series:
            for t, value in points:
                self.store.add(key, t, value)
            added += len(points)
            await asyncio.sleep(0)  # a long history must not hold the loop
        return added

    async def save_alerts(self) -> None:
        """Write the alerts atomically (small: after every cycle that changed one)."""
        document = {"saved_at": self.clock(), "engine": self.engine.state()}
        await asyncio.to_thread(lambda: save_atomic(self.alerts_path, encode_json(document)))

    async def save_state(self) -> None:
        """Write the series and the alerts atomically (encoded and written off the loop)."""
        keys, saved, at = list(self.store.series), [], self.clock()
        for first in range(0, len(keys), SNAPSHOT_CHUNK):  # yield to the loop between chunks
            saved += self.store.snapshot(keys[first : first + SNAPSHOT_CHUNK])
            await asyncio.sleep(0)

        def write() -> None:
            save_atomic(self.state_path, pack(saved, at))
            self.legacy_path.unlink(missing_ok=True)  # the binary file replaces it

        await asyncio.to_thread(write)
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
