"""Switching the guard's mode, and applying the mode in force to its policies.

The guard (guard/middleware.py) keeps only the request path; what a switch of mode does lives
here: `ModeSwitch.switch` records the switch (guard/modes.py) and applies it, and with Redis
storage hands it to the fleet's sync (guard/fleet.py), in the background (`set_mode`) or waiting
for the instances to confirm (`switch_mode`). `ModeSwitch.apply` sets the factors of the mode in
force on the concurrency limit and on every rate-limit policy (emergency overrides included)
and tells the request path the priority it sheds at (emergency, and the memory budget's
shedding: `set_memory_shedding`); it also runs when a
policy is built, when the fleet adopts a switch made elsewhere and on every housekeeping tick
while recovering (the ramp).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from crisisctl.guard.modes import EMERGENCY, NORMAL, RECOVERING, ModeState
from crisisctl.guard.routebuild import RouteBuilder


class ModeSwitch:
    """Switches a guard's mode and applies the mode in force (see the module docstring)."""

    def __init__(
        self,
        modes: ModeState,
        routes: RouteBuilder,
        set_shed_priority: Callable[[int, str], None],
    ) -> None:
        self.modes = modes
        self._emergency = routes.config.emergency
        self._concurrency = routes.concurrency
        #: the route builder's dicts (shared): every policy built so far
        self._policies = routes.policies
        self._overrides = routes.overrides
        self._set_shed_priority = set_shed_priority
        #: the memory budget's shedding (guard/memory_budget.py): priority shed at, -1 none
        self.memory_shed_priority = -1
        #: the fleet's mode sync (guard/fleet.py); None: the mode is this process's own
        self.fleet: Any = None

    def apply(self) -> None:
        """Apply the mode in force (and, recovering, the ramp's factors now) to every policy."""
        mode = self.modes.mode
        conc_factor, rate_factor = self.modes.factors()
        self._shed()
        if self._concurrency is not None:
            self._concurrency.set_factor(conc_factor)
        for rule_id, policy in self._policies.items():
            override = self._overrides.get(rule_id) if mode == EMERGENCY else None
            policy.set_factor(rate_factor, override)

    def set_memory_shedding(self, priority: int) -> None:
        """Shed the routes of priority ≤ `priority` for memory (-1: stop), on top of the mode's."""
        self.memory_shed_priority = priority
        self._shed()

    def _shed(self) -> None:
        """Tell the request path the priority it sheds at, and why: the mode's (emergency) or
        the memory budget's, whichever sheds more."""
        mode = int(self._emergency.shed_priority) if self.modes.mode == EMERGENCY else -1
        memory = self.memory_shed_priority
        if memory > mode:
            self._set_shed_priority(memory, "memory")
        else:
            self._set_shed_priority(mode, "emergency")

    def set_mode(
        self, mode: str, *, actor: str = "python", reason: str = "", source: str = "python"
    ) -> None:
        """Switch here at once; with a fleet, store the switch for it in the background."""
        base_id = self.modes.switch_id
        change = self.modes.switch(mode, actor=actor, reason=reason, source=source)
        self.apply()
        if self.fleet is not None:
            # the ramp's end is reached by every instance: only the first one stores it
            self.fleet.switch_soon(change, base_id, only_if_current=source == "ramp")

    async def switch_mode(
        self, mode: str, *, actor: str = "python", reason: str = "", source: str = "python"
    ) -> dict[str, object]:
        """Switch here at once; with a fleet, also store the switch and wait (about a second
        at most) for the instances to confirm. Returns what happened."""
        base_id = self.modes.switch_id
        change = self.modes.switch(mode, actor=actor, reason=reason, source=source)
        self.apply()
        if self.fleet is None:
            return {"scope": "process", "pid": os.getpid()}
        outcome: dict[str, object] = await self.fleet.switch(change, base_id)
        outcome["pid"] = os.getpid()
        return outcome

    def follow_ramp(self) -> None:
        """Recovering: apply the ramp's factors now, or switch to normal once it is complete
        (housekeeping calls this about once a second)."""
        if self.modes.mode != RECOVERING:
            return
        if self.modes.ramp_progress() >= 1.0:
            self.set_mode(
                NORMAL, actor="crisisctl guard", reason="recovery ramp complete", source="ramp"
            )
        else:
            self.apply()
