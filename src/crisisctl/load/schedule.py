"""Schedules of a load run: the open model's arrival rate and the closed model's users over
time (`RateSchedule`, linear segments), and a closed-model user's think time (`ThinkTime`).

Arrivals (`RateSchedule.arrivals`) are the instants where the integral of the rate,
Λ(t) = ∫₀ᵗ rate, reaches a sequence of levels: 0, 1, 2, … for ``constant`` arrivals (evenly
spaced at a constant rate), E₁, E₁+E₂, … with Eₖ ~ Exp(1) for ``poisson`` arrivals (the
time-rescaling theorem: a Poisson process of intensity rate(t), exponential gaps of mean
1 ÷ rate at a constant rate; seeded, so a seed gives the same instants on every run).

Several engine processes share one schedule (`part_of`): process *i* of *N* sends arrivals
i, i+N, i+2N, … of the one sequence, so the union of the parts is the schedule exactly —
the total rate is exact and the processes' arrivals interleave instead of coming in N-way
bursts (which N copies of a rate ÷ N schedule do: they all start at 0).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["ARRIVALS", "RateSchedule", "ThinkTime", "part_of"]

#: How arrivals are spread over time: evenly, or as a Poisson process.
ARRIVALS = ("constant", "poisson")


def part_of(times: Iterator[float], index: int, count: int) -> Iterator[float]:
    """Process `index` of `count`'s share of `times`: items index, index+count, …"""
    if not 0 <= index < count:
        raise ValueError(f"process {index} of {count} does not exist.")
    if count == 1:
        return times  # the one process sends everything: no slicing on the hot path
    return itertools.islice(times, index, None, count)


# -- schedules -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RateSchedule:
    """Arrival rate over time: linear segments (duration_s, start_rate, end_rate)."""

    segments: tuple[tuple[float, float, float], ...]

    @classmethod
    def constant(cls, rate: float, duration_s: float) -> RateSchedule:
        """`rate` requests/s for `duration_s` seconds."""
        return cls.from_stages(rate, [(duration_s, rate)])

    @classmethod
    def from_stages(cls, start_rate: float, stages: Sequence[tuple[float, float]]) -> RateSchedule:
        """From `start_rate`, each stage ramps linearly to its target rate over its duration."""
        if not stages:
            raise ValueError("a staged schedule needs at least one (duration_s, rate) stage.")
        segments = []
        previous = start_rate
        for duration_s, target in [(0.0, start_rate), *stages]:
            if not (math.isfinite(duration_s) and duration_s >= 0):
                raise ValueError(f"stage durations must be ≥ 0 seconds, not {duration_s!r}.")
            if not (math.isfinite(target) and target >= 0):
                raise ValueError(f"rates must be ≥ 0 requests per second, not {target!r}.")
            if duration_s > 0:
                segments.append((float(duration_s), float(previous), float(target)))
            previous = target
        schedule = cls(tuple(segments))
        if schedule.duration_s <= 0:
            raise ValueError("the schedule must last longer than 0 seconds.")
        return schedule

    @property
    def duration_s(self) -> float:
        """Total length of the schedule in seconds."""
        return sum(d for d, _, _ in self.segments)

    def rate_at(self, t: float) -> float:
        """The target rate (requests/s) `t` seconds into the schedule (0 outside it)."""
        start = 0.0
        for d, r0, r1 in self.segments:
            if start <= t < start + d:
                return r0 + (r1 - r0) * (t - start) / d
            start += d
        return 0.0

    def next_time_above(self, level: float, after: float) -> float | None:
        """The first time ≥ `after` at which the rate is above `level` (None: never again)."""
        start = 0.0
        for d, r0, r1 in self.segments:
            end = start + d
            if end > after:
                t = max(after, start)
                if r0 + (r1 - r0) * (t - start) / d > level:
                    return t
                if r1 > level:  # crosses `level` inside this segment
                    return start + (level - r0) / (r1 - r0) * d + 1e-6
            start = end
        return None

    def expected(self) -> float:
        """Requests the schedule asks for in total (the area under the rate)."""
        return sum(d * (r0 + r1) / 2.0 for d, r0, r1 in self.segments)

    def arrivals(self, arrival: str = "constant", seed: int | None = None) -> Iterator[float]:
        """Offsets (s) of every arrival, ``constant`` (`send_times`) or ``poisson``
        (`poisson_times`, seeded with `seed`)."""
        if arrival == "constant":
            return self.send_times()
        if arrival == "poisson":
            return self.poisson_times(random.Random(seed))
        raise ValueError(f"arrivals must be constant or poisson, not {arrival!r}.")

    def poisson_times(self, rng: random.Random) -> Iterator[float]:
        """Offsets (s) of a Poisson process of intensity `rate_at`: arrival k is due when the
        integral of the rate reaches E₁ + … + Eₖ, each Eᵢ drawn from Exp(1)."""
        level = rng.expovariate(1.0)
        start = 0.0
        before = 0.0  # the area of the earlier segments
        for d, r0, r1 in self.segments:
            a = (r1 - r0) / (2.0 * d)
            area = d * (r0 + r1) / 2.0
            while level - before < area:
                need = level - before
                disc = r0 * r0 + 4.0 * a * need
                denom = r0 + math.sqrt(max(disc, 0.0))
                t = 2.0 * need / denom if denom > 0 else 0.0
                yield start + min(t, d)
                level += rng.expovariate(1.0)
            before += area
            start += d

    def send_times(self) -> Iterator[float]:
        """Offsets (s) of every request: request k is due when the integral of the rate is k."""
        k = 0
        start = 0.0
        before = 0.0  # requests the earlier segments account for
        for d, r0, r1 in self.segments:
            a = (r1 - r0) / (2.0 * d)
            area = d * (r0 + r1) / 2.0
            while k - before < area - 1e-9:
                need = max(k - before, 0.0)
                # solve a t² + r0 t = need for the smallest t ≥ 0, in a cancellation-free form
                disc = r0 * r0 + 4.0 * a * need
                denom = r0 + math.sqrt(max(disc, 0.0))
                t = 2.0 * need / denom if denom > 0 else 0.0
                yield start + min(t, d)
                k += 1
            before += area
            start += d


@dataclass(frozen=True, slots=True)
class ThinkTime:
    """A closed-model user's pause between requests: constant, uniform or exponential."""

    kind: str = "constant"
    #: constant: the pause; exponential: the mean; uniform: the low bound (seconds)
    value_s: float = 0.0
    #: uniform only: the high bound (seconds)
    high_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "uniform", "exponential"):
            raise ValueError(
                f"think time must be constant, uniform or exponential, not {self.kind!r}."
            )
        if not (math.isfinite(self.value_s) and self.value_s >= 0):
            raise ValueError(f"think time must be ≥ 0 seconds, not {self.value_s!r}.")
        if self.kind == "uniform" and not (
            math.isfinite(self.high_s) and self.high_s >= self.value_s
        ):
            raise ValueError("a uniform think time needs high_s ≥ value_s.")

    def draw(self, rng: random.Random) -> float:
        """One pause in seconds."""
        if self.kind == "uniform":
            return rng.uniform(self.value_s, self.high_s)
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.value_s) if self.value_s > 0 else 0.0
        return self.value_s

    def first(self, rng: random.Random) -> float:
        """The pause before a user's first request: what is left of a pause caught at a random
        instant, so users that start together are spread as in the steady state — the whole
        draw for an exponential pause (memoryless), uniform over [0, pause] for a constant one,
        a uniform share of a draw for a uniform one."""
        if self.kind == "exponential":
            return self.draw(rng)
        return rng.random() * self.draw(rng)
