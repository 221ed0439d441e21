"""Guard modes — normal, emergency, recovering — and the record of every switch.

`emergency` tightens every limit by the configured factors and sheds low-priority routes;
`recovering` ramps the factors linearly back to 1 over `ramp_s` (the seeds' cooldown) and then
returns to `normal` by itself. Each switch is kept (who, when, why, from where) and logged.

The mode's scope is this process unless a `FleetSync` (guard/fleet.py) shares it: then every
switch gets a fleet-wide `switch_id` (ordered by Redis), switches made elsewhere are adopted
with `adopt`, and the history is the fleet's. Ids only grow: a switch older than the one in
force is ignored, so a late or repeated message can never undo a newer switch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from crisisctl.guard.config import EmergencyConfig

NORMAL = "normal"
EMERGENCY = "emergency"
RECOVERING = "recovering"
MODES: tuple[str, ...] = (NORMAL, EMERGENCY, RECOVERING)
#: switches kept in the history (here and in the fleet's record)
HISTORY_LEN = 100

log = logging.getLogger("crisisctl.guard")


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One switch of mode."""

    at: str
    previous: str
    mode: str
    actor: str
    reason: str
    source: str
    #: the fleet-wide id of this switch (0: made in this process, not stored in the fleet)
    switch_id: int = 0

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)


class ModeState:
    """Current mode, its factors and the history of switches."""

    def __init__(self, config: EmergencyConfig) -> None:
        self.config = config
        self.mode = NORMAL
        self.since_wall = _utc_now()
        self._since = time.monotonic()
        self.history: deque[ModeChange] = deque(maxlen=HISTORY_LEN)
        #: the fleet switch in force (0: none, or the mode is this process's own)
        self.switch_id = 0
        #: "process" (the mode applies to this process only) or "fleet" (shared through Redis)
        self.scope = "process"
        #: the fleet sync's state for describe(), when the mode is fleet-wide
        self.fleet_view: Callable[[], dict[str, object]] | None = None

    def switch(
        self, mode: str, *, actor: str, reason: str = "", source: str = "python"
    ) -> ModeChange:
        """Change mode; raises ValueError for an unknown mode."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        change = ModeChange(
            at=_utc_now(),
            previous=self.mode,
            mode=mode,
            actor=actor or "unknown",
            reason=reason,
            source=source,
        )
        self.mode = mode
        self.since_wall = change.at
        self._since = time.monotonic()
        self.history.append(change)
        log.warning(
            "guard mode %s -> %s by %s via %s%s",
            change.previous,
            mode,
            change.actor,
            source,
            f" ({reason})" if reason else "",
        )
        return change

    def adopt(self, change: ModeChange, age_s: float = 0.0, *, force: bool = False) -> bool:
        """Apply a fleet switch made elsewhere; False (nothing done) if it is not newer.

        `age_s` is how long ago the switch happened (the recovering ramp counts from then).
        `force` re-applies the switch in force even at the same id (over a local switch the
        fleet refused).
        """
        if change.switch_id < self.switch_id or (change.switch_id == self.switch_id and not force):
            return False
        previous = self.mode
        self.switch_id = change.switch_id
        self.mode = change.mode
        self.since_wall = change.at
        self._since = time.monotonic() - max(0.0, age_s)
        if not any(c.switch_id == change.switch_id for c in self.history):
            self.history.append(change)
        if previous != change.mode:
            log.warning(
                "guard mode %s -> %s by %s via fleet switch #%d%s",
                previous,
                change.mode,
                change.actor,
                change.switch_id,
                f" ({change.reason})" if change.reason else "",
            )
        return True

    def stored(self, local: ModeChange, fleet: ModeChange) -> ModeChange:
        """Note that the fleet stored `local` (a switch made here) as `fleet`.

        If no newer fleet switch came in meanwhile, it is the switch in force from now on;
        else it was overtaken and only its history entry changes.
        """
        change = replace(local, switch_id=fleet.switch_id, previous=fleet.previous)
        self._replace_entry(local, change)
        if fleet.switch_id > self.switch_id:
            self.switch_id = fleet.switch_id
            if self.mode != local.mode:
                self.mode = local.mode
                self.since_wall = local.at
                self._since = time.monotonic()
        return change

    def discard(self, local: ModeChange) -> None:
        """Forget `local` (a switch made here that the fleet refused: it had moved on)."""
        self.history = deque((c for c in self.history if c is not local), maxlen=HISTORY_LEN)

    def load_history(self, changes: Iterable[ModeChange]) -> None:
        """Replace the history with the fleet's (oldest first)."""
        self.history = deque(changes, maxlen=HISTORY_LEN)

    def _replace_entry(self, old: ModeChange, new: ModeChange) -> None:
        for i, c in enumerate(self.history):
            if c is old:
                self.history[i] = new
                return
        self.history.append(new)

    def ramp_progress(self, now: float | None = None) -> float:
        """0 at the start of `recovering`, 1 when the ramp is done (1 outside recovering)."""
        if self.mode != RECOVERING:
            return 1.0
        if self.config.ramp_s <= 0:
            return 1.0
        elapsed = (time.monotonic() if now is None else now) - self._since
        return min(1.0, max(0.0, elapsed / self.config.ramp_s))

    def factors(self, now: float | None = None) -> tuple[float, float]:
        """(concurrency factor, rate factor) in force now."""
        cfg = self.config
        if self.mode == EMERGENCY:
            return cfg.concurrency_factor, cfg.rate_factor
        if self.mode == RECOVERING:
            p = self.ramp_progress(now)
            return (
                cfg.concurrency_factor + p * (1.0 - cfg.concurrency_factor),
                cfg.rate_factor + p * (1.0 - cfg.rate_factor),
            )
        return 1.0, 1.0

    def describe(self) -> dict[str, object]:
        """JSON-able state."""
        conc, rate = self.factors()
        described: dict[str, object] = {
            "mode": self.mode,
            "scope": self.scope,
            "switch_id": self.switch_id,
            "since": self.since_wall,
            "concurrency_factor": round(conc, 3),
            "rate_factor": round(rate, 3),
            "ramp_progress": round(self.ramp_progress(), 3),
            "ramp_s": self.config.ramp_s,
            "history": [c.as_dict() for c in self.history],
        }
        if self.fleet_view is not None:
            described["fleet"] = self.fleet_view()
        return described


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_iso(epoch_s: float) -> str:
    """`epoch_s` (seconds since the epoch) as the history's ISO 8601 UTC text."""
    text = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
