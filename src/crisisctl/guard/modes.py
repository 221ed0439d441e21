"""Guard modes — normal, emergency, recovering — and the record of every switch.

`emergency` tightens every limit by the configured factors and sheds low-priority routes;
`recovering` ramps the factors linearly back to 1 over `ramp_s` (the seeds' cooldown) and then
returns to `normal` by itself. Each switch is kept (who, when, why, from where) and logged.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from crisisctl.guard.config import EmergencyConfig

NORMAL = "normal"
EMERGENCY = "emergency"
RECOVERING = "recovering"
MODES: tuple[str, ...] = (NORMAL, EMERGENCY, RECOVERING)

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

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class ModeState:
    """Current mode, its factors and the history of switches."""

    def __init__(self, config: EmergencyConfig) -> None:
        self.config = config
        self.mode = NORMAL
        self.since_wall = _utc_now()
        self._since = time.monotonic()
        self.history: deque[ModeChange] = deque(maxlen=100)

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
        return {
            "mode": self.mode,
            "since": self.since_wall,
            "concurrency_factor": round(conc, 3),
            "rate_factor": round(rate, 3),
            "ramp_progress": round(self.ramp_progress(), 3),
            "ramp_s": self.config.ramp_s,
            "history": [c.as_dict() for c in self.history],
        }


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
