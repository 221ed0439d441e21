"""When the control surface's documents are refreshed: mostly in the background, so a read only
assembles.

A read of status or metrics (`Refresher.read`) no longer pays for every route that changed
since the previous read. While a document is being read (a read within the last `IDLE_S`), a
background refresh brings it up to date every `refresh_s` seconds (`Digest.refresh`: in slices
of about 1 ms of the loop's CPU, a yield between them). A read then:

  * takes in, inline, what changed since that refresh for at most `READ_BUDGET_S` (0.5 ms) of CPU
    (after at least `digest.MIN_INLINE` routes): a quiet or lightly used service reads its
    own latest figures;
  * serves the other routes' figures as the last complete refresh left them: never older than
    `stale_s` (2 × `refresh_s`) — if the last complete refresh of the document started longer
    ago than that (the first read, a loop too busy for the background refresh, a clock jump),
    the read completes the refresh itself, in slices, as every read did before.

So a read costs the pass that finds the changed routes, its budget and the assembly; what
changed on a busy service is folded once per `refresh_s` by the background refresh, whose CPU
is counted in `background_s` (the benchmark reports it per second). No reads for `IDLE_S`:
no background work at all. `refresh_s` 0 turns the background refresh off (every read
completes the refresh itself).

The background refresh is a timer on the loop of the last read (`call_later`), not a task
that lives for the guard's lifetime: nothing is left pending when a loop ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from crisisctl.guard.digest import Digest
    from crisisctl.guard.limits_json import LimitsJSON

log = logging.getLogger("crisisctl.guard")

#: how often a document being read is refreshed in the background (seconds)
REFRESH_S: Final = 1.0
#: the most loop-thread CPU a read spends taking in changes itself (seconds)
READ_BUDGET_S: Final = 0.0005
#: a document not read for this long is no longer refreshed in the background (seconds)
IDLE_S: Final = 120.0
DOCUMENTS: Final = ("status", "metrics")


class Refresher:
    """Keeps one digest's documents current in the background while they are read."""

    def __init__(
        self, digest: Digest, refresh_s: float = REFRESH_S, limits: LimitsJSON | None = None
    ) -> None:
        self.digest = digest
        #: the status document's concurrency member, refreshed with the status
        self.limits = limits
        self.refresh_s = refresh_s
        #: the oldest figures a read may serve (seconds since the state they show)
        self.stale_s = 2.0 * refresh_s
        #: the most loop-thread CPU a read spends taking in changes itself (seconds)
        self.read_budget_s = READ_BUDGET_S
        #: per document: when it was last read, and when its last complete refresh started
        self._read_at: dict[str, float] = {}
        self._fresh_at: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        #: CPU time of the loop's thread spent in background refreshes, and how many ran
        self.background_s = 0.0
        self.background_runs = 0
        #: False: no timer; the owner calls `refresh_now` itself (the benchmark does, to
        #: measure the background work apart from the reads)
        self.timer = True

    async def read(self, document: str) -> None:
        """Make `document` ready to be served: figures at most `stale_s` old (see above)."""
        digest = self.digest
        now = digest.state.clock()
        self._read_at[document] = now
        if self.refresh_s <= 0.0:
            await digest.refresh(document)
            return
        fresh = self._fresh_at.get(document)
        if fresh is None or not 0.0 <= now - fresh <= self.stale_s:
            await self._refresh(document)
            self._fresh_at[document] = now
        elif await self._refresh(document, self.read_budget_s):
            self._fresh_at[document] = now
        self._arm(asyncio.get_running_loop())

    async def _refresh(self, document: str, budget_s: float = 0.0) -> bool:
        """Refresh `document` (with the status, its concurrency member); True when complete.
        A budget is shared: the concurrency member gets what the routes left of it."""
        digest = self.digest
        started = time.thread_time()
        complete = await digest.refresh(document, budget_s)
        limits = self.limits
        if limits is not None and document == "status":
            if budget_s > 0.0:
                budget_s = max(1e-9, budget_s - (time.thread_time() - started))
            complete = await limits.refresh(digest.state.concurrency, budget_s) and complete
        return complete

    def work_s(self) -> float:
        """The loop thread's CPU time spent refreshing so far (reads and background)."""
        limits = self.limits
        return self.digest.work_s + (limits.work_s if limits is not None else 0.0)

    def age_s(self, document: str) -> float | None:
        """Seconds since the state the last complete refresh of `document` took in."""
        fresh = self._fresh_at.get(document)
        return None if fresh is None else self.digest.state.clock() - fresh

    async def refresh_now(self) -> None:
        """One background refresh: every document read within `IDLE_S`, completely."""
        clock = self.digest.state.clock
        now = clock()
        for document in DOCUMENTS:
            read_at = self._read_at.get(document)
            if read_at is None or now - read_at > IDLE_S:
                continue
            started = clock()
            before = self.work_s()
            await self._refresh(document)
            self._fresh_at[document] = started
            self.background_s += self.work_s() - before
        self.background_runs += 1

    def watched(self) -> bool:
        """Whether a document was read within `IDLE_S` (so the background refresh goes on)."""
        now = self.digest.state.clock()
        return any(now - at <= IDLE_S for at in self._read_at.values())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have the background refresh run `refresh_s` from now, unless it is already due."""
        if not self.timer or (
            loop is self._loop and (self._timer is not None or self._task is not None)
        ):
            return
        self._loop = loop
        self._task = None
        self._timer = loop.call_later(self.refresh_s, self._due)

    def _due(self) -> None:
        loop = self._loop
        self._timer = None
        if loop is None or not self.watched():
            return
        self._task = loop.create_task(self._run(loop), name="crisisctl-guard-refresh")

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self.refresh_now()
        except Exception:
            log.exception("crisisctl guard: the control surface's background refresh failed")
        finally:
            self._task = None
            if self._loop is loop and self.watched() and not loop.is_closed():
                self._timer = loop.call_later(self.refresh_s, self._due)
