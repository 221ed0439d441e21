"""The series store: a bounded in-memory history per series, downsampled for long windows.

Each series keeps up to three tiers:

* raw samples for ``min(retention, 1 h)``;
* 1-minute buckets (last value; for a gauge also the mean) when the retention is longer than
  an hour, up to 6 h;
* 5-minute buckets beyond that, up to the retention (burn-rate windows reach 3 days).

Memory is flat by construction: each tier is a fixed-size buffer (`Tier`) allocated whole when
its series is created, as Prometheus-style stores do, so a store's footprint is set by its
series, not by how long it has run. The columns are compact: times as uint32 (milliseconds
from the tier's base for raw samples, the bucket's number for buckets), values as float64
(counters need it: a 5-minute increase read off a 10⁹ counter), a gauge bucket's mean as
float32 and its sample count as uint16; a counter's buckets keep no mean (it is read by
`increase` only). A raw sample costs 12 bytes, a counter's bucket 12, a gauge's 18.

How long a series is kept depends on its name (`Retention`: the longest window any rule reads
it over; for histogram buckets, its name and ``le``), so the 3-day tiers exist only for the
counters a burn-rate rule needs. The number of series is bounded: a new series beyond
`max_series` is dropped and counted in `dropped`.

A read (`window`) picks the finest tier that reaches back to the window's start. Counters are
read with `increase` (Prometheus' meaning: resets add the value after the reset); a counter
(a name ending in ``_total``) is stored reset-corrected, so its increase is one subtraction
and its `latest` value is the corrected one.

`snapshot`/`restore` turn the whole store into plain columns and back (``store_file`` writes
them as a binary file); `save_atomic` writes a file in one ``os.replace``.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from crisisctl.watch.model import Labels, SeriesKey

__all__ = [
    "Retention",
    "SavedSeries",
    "SavedTier",
    "Series",
    "SeriesStore",
    "Tier",
    "save_atomic",
]

RAW_SPAN_S: Final = 3600.0
MINUTE_SPAN_S: Final = 6 * 3600.0
#: the shortest history kept for any series (enough for `for`, rates and target_down)
MIN_RETENTION_S: Final = 900.0
#: series whose name ends so are counters (Prometheus' convention), stored reset-corrected
COUNTER_SUFFIX: Final = "_total"


class Tier:
    """One resolution of a series: a buffer of fixed capacity, allocated whole when the series
    is created, holding its newest `cap` points oldest first.

    Columns (all `array`s of one length, ``cap + cap // 16``): ``times`` (uint32: for raw
    samples milliseconds since `base`, for buckets the bucket's number, start ÷ step), ``last``
    (float64: the sample, or the bucket's last value), and for buckets of a gauge ``mean``
    (float32) and ``count`` (uint16). The live points are ``[lo, hi)``: a new point is written
    at ``hi``; beyond `cap` points the oldest is dropped (``lo`` moves on); when ``hi`` reaches
    the end, the live points slide to the front in one copy (every ``cap // 16`` points:
    amortised O(1), and the live points stay contiguous for `bisect`)."""

    __slots__ = ("base", "cap", "count", "hi", "last", "lo", "mean", "step", "times")

    def __init__(self, step: float, cap: int, *, means: bool = True) -> None:
        self.step = step  #: bucket width (s); 0 for raw samples
        self.cap = cap
        size = cap + max(1, cap // 16)
        self.lo = 0
        self.hi = 0
        #: raw tiers: the time (epoch s) that ``times`` count milliseconds from
        self.base = 0.0
        self.times: array[int] = array("I", bytes(4 * size))
        self.last: array[float] = array("d", bytes(8 * size))
        #: a raw sample (and a counter's bucket, read by its last value) is its own mean
        self.mean: array[float] = self.last
        self.count: array[int] | None = None
        if step and means:
            self.mean = array("f", bytes(4 * size))
            self.count = array("H", bytes(2 * size))

    def __len__(self) -> int:
        return self.hi - self.lo

    def nbytes(self) -> int:
        """The memory its columns hold (fixed from creation)."""
        columns: list[array[Any]] = [self.times, self.last]
        if self.count is not None:
            columns += [self.mean, self.count]
        return sum(c.itemsize * len(c) for c in columns)

    def stamp(self, t: float) -> int:
        """`t` as this tier stores it (milliseconds since `base`, or a bucket number)."""
        if self.step:
            return int(t // self.step)
        return round((t - self.base) * 1000.0)

    def time_at(self, i: int) -> float:
        """The time (epoch s) of the point at physical index `i` (a bucket's start)."""
        if self.step:
            return self.times[i] * self.step
        return self.base + self.times[i] / 1000.0

    def add(self, t: float, value: float) -> None:
        if self.hi == self.lo and not self.step:
            self.base = float(math.floor(t))
        stamp = self.stamp(t)
        if self.hi > self.lo:
            newest = self.times[self.hi - 1]
            if self.step and newest == stamp:
                self._fold(self.hi - 1, value)
                return
            if stamp <= newest:
                return  # not newer than what is kept: a repeated scrape
        if stamp > 0xFFFF_FFFF:  # a raw tier 49 days past its base: count from its oldest
            stamp = self._rebase(t)
        if self.hi == len(self.times):
            self._slide()
        i = self.hi
        self.times[i] = stamp
        self.last[i] = value
        if self.count is not None:
            self.mean[i] = value
            self.count[i] = 1
        self.hi = i + 1
        if self.hi - self.lo > self.cap:
            self.lo += 1

    def _fold(self, i: int, value: float) -> None:
        """Add a sample to the bucket at `i` (its running mean and count)."""
        self.last[i] = value
        count = self.count
        if count is not None and count[i] < 65_535:
            n = count[i] + 1
            count[i] = n
            self.mean[i] += (value - self.mean[i]) / n

    def _slide(self) -> None:
        n = self.hi - self.lo
        columns: list[array[Any]] = [self.times, self.last]
        if self.count is not None:
            columns += [self.mean, self.count]
        for column in columns:
            column[0:n] = column[self.lo : self.hi]
        self.lo, self.hi = 0, n

    def _rebase(self, t: float) -> int:
        """Count from the oldest point kept instead (points 49 days older than `t`, which a
        uint32 of milliseconds cannot reach, are dropped)."""
        while self.hi > self.lo and (t - self.time_at(self.lo)) * 1000.0 >= 0xFFFF_FFFF:
            self.lo += 1
        if self.hi == self.lo:
            self.base = float(math.floor(t))
            return self.stamp(t)
        oldest = self.times[self.lo]
        for i in range(self.lo, self.hi):
            self.times[i] -= oldest
        self.base += oldest / 1000.0
        return self.stamp(t)

    def oldest(self) -> float | None:
        return self.time_at(self.lo) if self.hi > self.lo else None

    def newest(self) -> tuple[float, float] | None:
        if self.hi == self.lo:
            return None
        return self.time_at(self.hi - 1), self.last[self.hi - 1]

    def span(self, start: float, end: float) -> tuple[int, int]:
        """Physical indexes [lo, hi) of the points with start ≤ t ≤ end (bucket starts)."""
        step = self.step
        if step:
            first, final = start / step, end / step
        else:
            base = self.base
            first, final = round((start - base) * 1000.0), round((end - base) * 1000.0)
        return (
            bisect.bisect_left(self.times, first, self.lo, self.hi),
            bisect.bisect_right(self.times, final, self.lo, self.hi),
        )

    def points(self, lo: int, hi: int, *, mean: bool = False) -> list[tuple[float, float]]:
        """(time, value) of the points at physical [lo, hi)."""
        column = self.mean if mean else self.last
        if self.step:
            step = self.step
            return [(n * step, v) for n, v in zip(self.times[lo:hi], column[lo:hi], strict=True)]
        base = self.base
        return [
            (base + ms / 1000.0, v) for ms, v in zip(self.times[lo:hi], column[lo:hi], strict=True)
        ]

    def columns(self) -> tuple[array[Any], ...]:
        """The live points' columns, copied (what a snapshot saves)."""
        lo, hi = self.lo, self.hi
        if self.count is not None:
            return (self.times[lo:hi], self.last[lo:hi], self.mean[lo:hi], self.count[lo:hi])
        return (self.times[lo:hi], self.last[lo:hi])

    def load(self, times: array[int], last: array[float], *extra: array[Any]) -> None:
        """Replace the points with these columns (a snapshot's, oldest first; the newest `cap`
        are kept)."""
        n = min(len(times), self.cap)
        skip = len(times) - n
        self.lo, self.hi = 0, n
        self.times[0:n] = times[skip:]
        self.last[0:n] = last[skip:]
        if self.count is not None and len(extra) == 2:
            self.mean[0:n] = extra[0][skip:]
            self.count[0:n] = extra[1][skip:]
        elif self.count is not None:  # a counter's tier saved without means: its last values
            self.mean[0:n] = array("f", last[skip:])
            self.count[0:n] = array("H", [1] * n)


class Series:
    """One series' tiers (raw, then 1-minute, then 5-minute buckets as its retention needs)."""

    __slots__ = ("counter", "offset", "raw_last", "tiers")

    def __init__(self, retention_s: float, interval_s: float, counter: bool = False) -> None:
        #: a counter is stored reset-corrected: `offset` (the values lost to resets so far) is
        #: added to each sample, so its increase over a window is one subtraction
        self.counter = counter
        self.offset = 0.0
        self.raw_last: float | None = None
        raw_span = min(retention_s, RAW_SPAN_S)
        means = not counter  # a counter is read by its last values only
        tiers = [Tier(0.0, max(8, int(raw_span / max(interval_s, 0.001)) + 2))]
        if retention_s > RAW_SPAN_S:
            minutes = int(min(retention_s, MINUTE_SPAN_S) / 60.0) + 2
            tiers.append(Tier(60.0, minutes, means=means))
        if retention_s > MINUTE_SPAN_S:
            tiers.append(Tier(300.0, int(retention_s / 300.0) + 2, means=means))
        self.tiers = tiers

    def add(self, t: float, value: float) -> None:
        if self.counter:
            newest = self.tiers[0].newest()
            if newest is not None and t <= newest[0]:
                return
            if self.raw_last is not None and value < self.raw_last:
                self.offset += self.raw_last  # a reset: the counter restarted from 0
            self.raw_last = value
            value += self.offset
        for tier in self.tiers:
            tier.add(t, value)

    def latest(self) -> tuple[float, float] | None:
        return self.tiers[0].newest()

    def tier_for(self, start: float) -> Tier:
        """The finest tier whose oldest point is at or before `start` (else the coarsest)."""
        tiers = self.tiers
        for tier in tiers:  # (`Tier.oldest`, inlined: this runs for every read)
            if tier.hi > tier.lo:
                first = tier.times[tier.lo]
                step = tier.step
                if (first * step if step else tier.base + first / 1000.0) <= start:
                    return tier
        last = tiers[-1]
        return last if last.hi > last.lo else tiers[0]

    def window(self, start: float, end: float, *, mean: bool = False) -> list[tuple[float, float]]:
        """(time, value) points in [start, end]; aggregates give their last (or mean) value."""
        tier = self.tier_for(start)
        lo, hi = tier.span(start, end)
        return tier.points(lo, hi, mean=mean)

    def increase(self, start: float, end: float) -> float | None:
        """How much a counter grew over [start, end] (a reset adds the value after it); None
        without two points in the window."""
        tier = self.tier_for(start)
        lo, hi = tier.span(start, end)
        if hi - lo < 2:
            return None
        values = tier.last
        if self.counter:
            return values[hi - 1] - values[lo]
        total = 0.0
        previous = values[lo]
        for i in range(lo + 1, hi):
            value = values[i]
            total += value - previous if value >= previous else value
            previous = value
        return total

    def covered_s(self, end: float) -> float:
        """How far back from `end` the series has points (0 when it has none)."""
        starts = [t for t in (tier.oldest() for tier in self.tiers) if t is not None]
        return max(0.0, end - min(starts)) if starts else 0.0

    def nbytes(self) -> int:
        """The memory its tiers' columns hold (fixed from creation)."""
        return sum(tier.nbytes() for tier in self.tiers)


@dataclass(frozen=True)
class Retention:
    """How long series of each name are kept (seconds); names not listed get `default`."""

    by_name: Mapping[str, float]
    default: float = MIN_RETENTION_S
    #: (name, le) → seconds: the one histogram bucket a latency SLO reads
    by_le: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def of(self, name: str, labels: Labels = ()) -> float:
        span = self.by_name.get(name, self.default)
        if self.by_le:
            le = next((v for k, v in labels if k == "le"), None)
            if le is not None:
                span = max(span, self.by_le.get((name, le), 0.0))
        return max(span, MIN_RETENTION_S)


class SeriesStore:
    """Every series, by key, bounded in number; reads by name and label match."""

    def __init__(self, retention: Retention, interval_s: float, max_series: int = 200_000) -> None:
        self.retention = retention
        self.interval_s = interval_s
        self.max_series = max_series
        self.series: dict[SeriesKey, Series] = {}
        self.by_name: dict[str, list[SeriesKey]] = {}
        #: samples of new series refused because the store was full
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.series)

    def get(self, key: SeriesKey) -> Series | None:
        return self.series.get(key)

    def add(self, key: SeriesKey, t: float, value: float) -> None:
        """Append one sample (a new series is created unless the store is full)."""
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.max_series:
                self.dropped += 1
                return
            series = self._new(key)
            self.series[key] = series
            self.by_name.setdefault(key.name, []).append(key)
        series.add(t, value)

    def _new(self, key: SeriesKey) -> Series:
        retention = self.retention.of(key.name, key.labels)
        return Series(retention, self.interval_s, counter=key.name.endswith(COUNTER_SUFFIX))

    def add_many(self, t: float, samples: Iterable[tuple[SeriesKey, float]]) -> None:
        for key, value in samples:
            self.add(key, t, value)

    def select(self, name: str, match: Mapping[str, str] | None = None) -> Iterator[SeriesKey]:
        """The keys of series `name` whose labels include every (label, value) of `match`."""
        keys = self.by_name.get(name, ())
        if not match:
            yield from keys
            return
        wanted = tuple(match.items())
        for key in keys:
            labels = dict(key.labels)
            if all(labels.get(k) == v for k, v in wanted):
                yield key

    def forget(self, keep: Callable[[SeriesKey], bool]) -> int:
        """Drop series `keep` refuses (e.g. instances gone for longer than their retention)."""
        gone = [key for key in self.series if not keep(key)]
        for key in gone:
            del self.series[key]
            self.by_name[key.name].remove(key)
        return len(gone)

    def expire(self, now: float) -> int:
        """Drop the series with no sample within their retention (an instance gone from DNS,
        a route gone from a guard): the series count stays bounded by what is alive."""

        def alive(key: SeriesKey) -> bool:
            latest = self.series[key].latest()
            return latest is not None and now - latest[0] <= self.retention.of(key.name, key.labels)

        return self.forget(alive)

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self, keys: Iterable[SeriesKey] | None = None) -> list[SavedSeries]:
        """These series (default: all) as plain columns, copies of their live points
        (``store_file.pack`` turns them into bytes, in a thread; the watch loop asks for a
        few hundred series at a time and yields between, so the loop is never held long)."""
        out = []
        for key in self.series if keys is None else keys:
            series = self.series.get(key)
            if series is not None:
                tiers = [SavedTier(t.step, t.base, t.columns()) for t in series.tiers]
                out.append(SavedSeries(key, series.offset, series.raw_last, tiers))
        return out

    def restore(self, saved: Iterable[SavedSeries]) -> int:
        """Load a `snapshot` (tiers whose step no longer fits the series' retention are
        skipped); returns the number of series restored."""
        restored = 0
        for one in saved:
            key = one.key
            if key in self.series or len(self.series) >= self.max_series:
                continue
            series = self._new(key)
            if series.counter:
                series.offset, series.raw_last = one.offset, one.raw_last
            by_step = {tier.step: tier for tier in series.tiers}
            for step, base, columns in one.tiers:
                tier = by_step.get(step)
                if tier is not None and columns and len(columns[0]):
                    tier.base = base
                    tier.load(*columns)
            self.series[key] = series
            self.by_name.setdefault(key.name, []).append(key)
            restored += 1
        return restored


class SavedTier(NamedTuple):
    """One tier of a snapshot: its step, base and live columns (as `Tier.columns`)."""

    step: float
    base: float
    columns: tuple[array[Any], ...]


class SavedSeries(NamedTuple):
    """One series of a snapshot."""

    key: SeriesKey
    offset: float
    raw_last: float | None
    tiers: list[SavedTier]


def save_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a temporary file in the same directory, fsynced,
    then renamed over it): a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
