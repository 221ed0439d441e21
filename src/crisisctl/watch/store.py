"""The series store: a bounded in-memory history per series, downsampled for long windows.

Each series keeps up to three tiers, each held in contiguous arrays (raw: times and values as
float64; buckets: start, last value (float64), mean (float32) and sample count (uint16)):

* raw samples for ``min(retention, 1 h)``;
* 1-minute buckets (last value and mean) when the retention is longer than an hour, up to 6 h;
* 5-minute buckets beyond that, up to the retention (burn-rate windows reach 3 days).

How long a series is kept depends on its name (`Retention`: the longest window any rule reads
it over; for histogram buckets, its name and ``le``), so the 3-day tiers exist only for the
counters a burn-rate rule needs. The number of
series is bounded: a new series beyond `max_series` is dropped and counted in `dropped`.

A read (`window`) picks the finest tier that reaches back to the window's start. Counters are
read with `increase` (Prometheus' meaning: resets add the value after the reset); a counter
(a name ending in ``_total``) is stored reset-corrected, so its increase is one subtraction
and its `latest` value is the corrected one.

`snapshot`/`restore` turn the whole store into compact bytes (arrays as raw bytes in one JSON
document) so a restarted watch keeps its last hours; `save_atomic` writes a file in one
``os.replace``.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import json
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crisisctl.watch.model import Labels, SeriesKey

__all__ = ["Retention", "Series", "SeriesStore", "Tier", "save_atomic"]

RAW_SPAN_S: Final = 3600.0
MINUTE_SPAN_S: Final = 6 * 3600.0
#: the shortest history kept for any series (enough for `for`, rates and target_down)
MIN_RETENTION_S: Final = 900.0
SNAPSHOT_VERSION: Final = 1
#: series whose name ends so are counters (Prometheus' convention), stored reset-corrected
COUNTER_SUFFIX: Final = "_total"


class Tier:
    """One resolution of a series, oldest first: raw samples (times and values) or buckets
    (start times, last values, means as float32 and sample counts as uint16)."""

    __slots__ = ("cap", "count", "last", "mean", "step", "times")

    def __init__(self, step: float, cap: int) -> None:
        self.step = step  #: bucket width (s); 0 for raw samples
        self.cap = cap
        self.times: array[float] = array("d")
        self.last: array[float] = array("d")
        #: a raw sample is its own mean (the same column); buckets keep a float32 mean
        self.mean: array[float] = array("f") if step else self.last
        self.count: array[int] = array("H")

    def add(self, t: float, value: float) -> None:
        times = self.times
        if self.step:
            start = t - t % self.step
            if times and times[-1] == start:
                n = self.count[-1]
                if n < 65_535:
                    self.count[-1] = n + 1
                    self.mean[-1] += (value - self.mean[-1]) / (n + 1)
                self.last[-1] = value
                return
            times.append(start)
            self.mean.append(value)
            self.count.append(1)
        else:
            if times and t <= times[-1]:
                return  # not newer than what is kept: a repeated scrape
            times.append(t)
        self.last.append(value)
        extra = len(times) - self.cap
        if extra > self.cap // 4:  # drop in batches: amortised O(1) and arrays stay contiguous
            for column in self.columns():
                del column[:extra]

    def oldest(self) -> float | None:
        return self.times[0] if self.times else None

    def span(self, start: float, end: float) -> tuple[int, int]:
        """Indexes [lo, hi) of the points with start ≤ t ≤ end."""
        return bisect.bisect_left(self.times, start), bisect.bisect_right(self.times, end)

    def columns(self) -> tuple[array[Any], ...]:
        """The arrays that hold this tier (what a snapshot saves)."""
        if self.step:
            return (self.times, self.last, self.mean, self.count)
        return (self.times, self.last)


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
        tiers = [Tier(0.0, max(8, int(raw_span / max(interval_s, 0.001)) + 2))]
        if retention_s > RAW_SPAN_S:
            tiers.append(Tier(60.0, int(min(retention_s, MINUTE_SPAN_S) / 60.0) + 2))
        if retention_s > MINUTE_SPAN_S:
            tiers.append(Tier(300.0, int(retention_s / 300.0) + 2))
        self.tiers = tiers

    def add(self, t: float, value: float) -> None:
        if self.counter:
            raw = self.tiers[0].times
            if raw and t <= raw[-1]:
                return
            if self.raw_last is not None and value < self.raw_last:
                self.offset += self.raw_last  # a reset: the counter restarted from 0
            self.raw_last = value
            value += self.offset
        for tier in self.tiers:
            tier.add(t, value)

    def latest(self) -> tuple[float, float] | None:
        raw = self.tiers[0]
        return (raw.times[-1], raw.last[-1]) if raw.times else None

    def tier_for(self, start: float) -> Tier:
        """The finest tier whose oldest point is at or before `start` (else the coarsest)."""
        for tier in self.tiers:
            oldest = tier.oldest()
            if oldest is not None and oldest <= start:
                return tier
        return self.tiers[-1] if self.tiers[-1].times else self.tiers[0]

    def window(self, start: float, end: float, *, mean: bool = False) -> list[tuple[float, float]]:
        """(time, value) points in [start, end]; aggregates give their last (or mean) value."""
        tier = self.tier_for(start)
        lo, hi = tier.span(start, end)
        column = tier.mean if mean else tier.last
        return list(zip(tier.times[lo:hi], column[lo:hi], strict=True))

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
        starts = [t.times[0] for t in self.tiers if t.times]
        return max(0.0, end - min(starts)) if starts else 0.0


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
    def snapshot(self) -> dict[str, Any]:
        """The whole store as a document for `encode` (arrays as their bytes: a copy cheap
        enough for the event loop; `encode`, which can run in a thread, makes them base64)."""
        rows = []
        for key, series in self.series.items():
            tiers = [[tier.step, *(c.tobytes() for c in tier.columns())] for tier in series.tiers]
            rows.append(
                [key.name, [list(p) for p in key.labels], tiers, [series.offset, series.raw_last]]
            )
        return {"version": SNAPSHOT_VERSION, "series": rows}

    def restore(self, document: Mapping[str, Any]) -> int:
        """Load a `snapshot` (tiers whose step no longer fits the series' retention are
        skipped); returns the number of series restored."""
        if document.get("version") != SNAPSHOT_VERSION:
            return 0
        restored = 0
        for name, labels, tiers, *counter in document.get("series", []):
            key = SeriesKey(str(name), tuple((str(k), str(v)) for k, v in labels))
            if key in self.series or len(self.series) >= self.max_series:
                continue
            series = self._new(key)
            if counter and series.counter:
                series.offset, series.raw_last = float(counter[0][0]), counter[0][1]
            by_step = {tier.step: tier for tier in series.tiers}
            for step, *columns in tiers:
                tier = by_step.get(float(step))
                if tier is None:
                    continue
                for target, text in zip(tier.columns(), columns, strict=True):
                    target.frombytes(base64.b64decode(text))
            self.series[key] = series
            self.by_name.setdefault(key.name, []).append(key)
            restored += 1
        return restored


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


def _base64(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(document: Mapping[str, Any]) -> bytes:
    """A snapshot document as compact JSON bytes (bytes values as base64)."""
    return json.dumps(document, separators=(",", ":"), default=_base64).encode()
