"""``abort_on``: stop a run that is hurting its target, e.g. ``error_rate > 50% for 10s``.

A rule is ``CONDITION [for DURATION]``: CONDITION is written like a threshold (``METRIC OP
VALUE``, optionally scoped to a step or operation with ``{step:NAME}``) but says when to
STOP — the opposite of a threshold, which says what passes. It is judged once a second on
the figures of the last DURATION (whole seconds, a sliding window; default 1s), once that
much of the run has passed: the run stops when the condition holds on the window (k6's
``abortOnFail`` with ``delayAbortEval``, judged on recent figures rather than on the whole
run so far). Metrics: latency (``p95``, ``avg``, ``max``…), ``error_rate``, ``checks`` and
``rps``; not ``requests`` or ``dropped_rate``. A window with no completed request says
nothing and never stops a run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from crisisctl.load.recorder import Tick
from crisisctl.load.recording import SecondStats
from crisisctl.load.thresholds import ScopeStats, Threshold, ThresholdError, parse_threshold
from crisisctl.units import parse_duration

__all__ = ["AbortRule", "AbortWindow", "parse_abort_on"]

_FOR = re.compile(r"^(?P<cond>.*?)\s+for\s+(?P<window>\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AbortRule:
    """A parsed rule: the stopping `condition` and its window in whole seconds."""

    condition: Threshold
    window_s: int
    text: str


def parse_abort_on(text: str) -> AbortRule:
    """Parse ``error_rate > 50% for 10s``; ThresholdError says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ThresholdError("an abort_on rule must read like 'error_rate > 50% for 10s'.")
    match = _FOR.match(text)
    condition_text, window = (match["cond"], match["window"]) if match else (text, "1s")
    try:
        seconds = parse_duration(window)
    except ValueError:
        raise ThresholdError(
            f"in {text!r} the window after 'for' must be a duration such as 10s."
        ) from None
    if not (math.isfinite(seconds) and 1 <= seconds <= 3600):
        raise ThresholdError(f"in {text!r} the window must be between 1s and 1h.")
    condition = parse_threshold(condition_text)
    if condition.metric in ("requests", "dropped_rate"):
        raise ThresholdError(
            f"{text!r} cannot stop a run: {condition.metric} is only known at the end; use "
            "error_rate, checks, rps or a latency."
        )
    return AbortRule(condition, math.ceil(seconds - 1e-9), " ".join(text.split()))


@dataclass(slots=True)
class AbortWindow:
    """The ticks of the last seconds (all processes merged) and the rules judged on them."""

    rules: list[AbortRule]
    seconds: dict[int, tuple[SecondStats, dict[str, SecondStats]]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Iterable[AbortRule]) -> AbortWindow:
        return cls(list(rules))

    def add(self, tick: Tick) -> AbortRule | None:
        """Count a tick; the first rule whose condition now holds, else None."""
        if not self.rules:
            return None
        total, ops = self.seconds.setdefault(tick.second, (SecondStats(), {}))
        total.merge(tick.stats)
        for name, stats in tick.ops.items():
            ops.setdefault(name, SecondStats()).merge(stats)
        longest = max(rule.window_s for rule in self.rules)
        for old in [s for s in self.seconds if s <= tick.second - longest]:
            del self.seconds[old]
        for rule in self.rules:
            if tick.second + 1 < rule.window_s:
                continue  # not a whole window of the run yet
            scope = self._scope(rule, tick.second)
            value = scope.value(rule.condition.metric) if scope.requests else None
            if value is not None and rule.condition.passes(value):
                return rule
        return None

    def _scope(self, rule: AbortRule, last: int) -> ScopeStats:
        merged = SecondStats()
        name = rule.condition.operation
        for second, (total, ops) in self.seconds.items():
            if second > last - rule.window_s:
                merged.merge(total if name is None or not ops else ops.get(name, SecondStats()))
        return ScopeStats(
            merged.requests, merged.requests - merged.errors, merged.errors, merged.unexpected,
            merged.latency, float(rule.window_s),
        )  # fmt: skip
