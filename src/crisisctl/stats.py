"""Latency histograms shared by every part of crisisctl that measures latency.

`LatencyHistogram` follows HdrHistogram's layout: values are integer microseconds, stored in
log-linear buckets with 2048 sub-buckets per power of two, so any recorded value is known to
within 1/1024 (better than three significant digits) from 1 µs up to about 73 minutes
(values above that are clamped and counted). Memory is bounded by the number of distinct
buckets touched (at most ~24k), never by the number of samples, and two histograms merge
exactly by adding counts — which is how several processes or several routes are combined.

Counts live in a sparse dict, so a histogram that only ever saw a few hundred distinct
latencies costs a few kilobytes. Recording is a handful of integer operations.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

#: log2 of the sub-bucket count: 2048 sub-buckets -> 1/1024 relative resolution.
_SUB_BITS: Final = 11
_HALF_BITS: Final = _SUB_BITS - 1
_SUB_COUNT: Final = 1 << _SUB_BITS
#: Largest value kept exactly (µs): 2**32 - 1 µs ≈ 71.6 minutes. Larger values are clamped.
MAX_TRACKABLE_US: Final = (1 << 32) - 1
#: `_min_us` of an empty histogram: above any value that can be recorded
_EMPTY_MIN: Final = MAX_TRACKABLE_US + 1

#: Percentiles every summary reports, in this order.
SUMMARY_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


def bucket_index(value_us: int) -> int:
    """Return the counts index of an integer microsecond value (HdrHistogram layout)."""
    if value_us < _SUB_COUNT:
        return value_us if value_us > 0 else 0
    if value_us > MAX_TRACKABLE_US:
        value_us = MAX_TRACKABLE_US
    shift = value_us.bit_length() - _SUB_BITS
    return (shift << _HALF_BITS) + (value_us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Return the lowest and highest microsecond values that share `index`."""
    if index < _SUB_COUNT:
        return index, index
    shift = (index >> _HALF_BITS) - 1
    sub = index - (shift << _HALF_BITS)
    low = sub << shift
    return low, low + (1 << shift) - 1


def _bucket_value(index: int) -> int:
    """The representative value of a bucket: the highest value equivalent to it."""
    return bucket_bounds(index)[1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a histogram in milliseconds (floats), as every JSON report carries them."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        """Stable snake_case form: {"count", "min", "mean", "p50", …, "max"} in ms."""
        return {
            "count": self.count,
            "min": self.min_ms,
            "mean": self.mean_ms,
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p95": self.p95_ms,
            "p99": self.p99_ms,
            "p999": self.p999_ms,
            "max": self.max_ms,
        }


class LatencyHistogram:
    """A bounded-memory, mergeable latency histogram with microsecond resolution.

    Record with `record_us(int)` (fast path) or `record_seconds(float)`. Query with
    `percentile(p)` (µs), `summary()` (ms), or iterate `buckets()`.
    """

    __slots__ = ("_counts", "_min_us", "count", "max_us", "overflow", "sum_us")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0
        self.sum_us = 0
        #: the smallest value recorded; _EMPTY_MIN while empty (read `min_us`)
        self._min_us = _EMPTY_MIN
        self.max_us = 0
        #: samples above MAX_TRACKABLE_US (recorded at the maximum)
        self.overflow = 0

    # -- recording -------------------------------------------------------------------------
    def record_us(self, value_us: int, n: int = 1) -> None:
        """Record `n` samples of `value_us` integer microseconds (negative values count as 0)."""
        if value_us < _SUB_COUNT:
            if value_us < 0:
                value_us = 0
            index = value_us
        else:
            if value_us > MAX_TRACKABLE_US:
                value_us = MAX_TRACKABLE_US
                self.overflow += n
            shift = value_us.bit_length() - _SUB_BITS
            index = (shift << _HALF_BITS) + (value_us >> shift)
        counts: dict[Any, int] = self._counts
        boxed: object = index  # compiled: one int object for both dict operations
        old = counts.get(boxed)
        # (no try/except KeyError: a raised exception costs more than the whole update)
        counts[boxed] = n if old is None else old + n
        if value_us < self._min_us:
            self._min_us = value_us
        if value_us > self.max_us:
            self.max_us = value_us
        self.count += n
        self.sum_us += value_us * n

    def record_seconds(self, seconds: float, n: int = 1) -> None:
        """Record a duration given in seconds."""
        self.record_us(round(seconds * 1_000_000), n)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of `other` into this histogram (exact)."""
        if other.count == 0:
            return
        counts = self._counts
        for index, n in other._counts.items():
            counts[index] = counts.get(index, 0) + n
        if other._min_us < self._min_us:
            self._min_us = other._min_us
        if other.max_us > self.max_us:
            self.max_us = other.max_us
        self.count += other.count
        self.sum_us += other.sum_us
        self.overflow += other.overflow

    def reset(self) -> None:
        """Forget every sample."""
        self._counts = {}
        self.count = 0
        self.sum_us = 0
        self._min_us = _EMPTY_MIN
        self.max_us = 0
        self.overflow = 0

    def copy(self) -> LatencyHistogram:
        """An independent copy."""
        clone = LatencyHistogram()
        clone.merge(self)
        return clone

    # -- queries ---------------------------------------------------------------------------
    def index_counts(self) -> ItemsView[int, int]:
        """(bucket index, count) of every non-empty bucket, unordered: a live view, for code
        that folds histograms incrementally (the guard's control surface) without sorting."""
        return self._counts.items()

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """Yield (low_us, high_us, count) for every non-empty bucket, in ascending order."""
        for index in sorted(self._counts):
            low, high = bucket_bounds(index)
            yield low, high, self._counts[index]

    def percentile(self, pct: float) -> int:
        """The value (µs) at or below which `pct` percent of samples fall (0 < pct ≤ 100).

        Returned as the highest value equivalent to the bucket, clamped to the true max, so
        p100 is the exact maximum and no percentile is under-reported by more than 1/1024.
        """
        if self.count == 0:
            return 0
        if pct <= 0:
            return self.min_us
        rank = max(1, math.ceil(self.count * min(pct, 100.0) / 100.0 - 1e-9))
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                return min(_bucket_value(index), self.max_us)
        return self.max_us

    def percentiles(self, pcts: Iterable[float]) -> list[int]:
        """Several percentiles in one pass (µs), in the order given."""
        wanted = sorted((p, i) for i, p in enumerate(pcts))
        out = [0] * len(wanted)
        if self.count == 0:
            return out
        ordered = sorted(self._counts)
        pos = 0
        seen = 0
        for pct, slot in wanted:
            if pct <= 0:
                out[slot] = self.min_us
                continue
            rank = max(1, math.ceil(self.count * min(pct, 100.0) / 100.0 - 1e-9))
            while pos < len(ordered) and seen + self._counts[ordered[pos]] < rank:
                seen += self._counts[ordered[pos]]
                pos += 1
            if pos < len(ordered):
                out[slot] = min(_bucket_value(ordered[pos]), self.max_us)
            else:
                out[slot] = self.max_us
        return out

    def count_at_or_below(self, value_us: int) -> int:
        """How many samples are ≤ `value_us` (bucket-resolution, as for Prometheus `le`)."""
        limit = bucket_index(value_us)
        return sum(n for index, n in self._counts.items() if index <= limit)

    def cumulative_counts(self, bounds_us: Iterable[int]) -> list[int]:
        """Cumulative counts at each upper bound (ascending), in one pass: Prometheus buckets."""
        limits = [bucket_index(b) for b in bounds_us]
        out = [0] * len(limits)
        ordered = sorted(self._counts.items())
        pos = 0
        seen = 0
        for slot, limit in enumerate(limits):
            while pos < len(ordered) and ordered[pos][0] <= limit:
                seen += ordered[pos][1]
                pos += 1
            out[slot] = seen
        return out

    @property
    def min_us(self) -> int:
        """The smallest value recorded (µs), 0 when empty."""
        return self._min_us if self.count else 0

    @min_us.setter
    def min_us(self, value: int) -> None:
        self._min_us = value

    @property
    def mean_us(self) -> float:
        """Arithmetic mean in µs (exact: the sum is kept)."""
        return self.sum_us / self.count if self.count else 0.0

    def summary(self) -> LatencySummary:
        """Count, min, mean, p50/p90/p95/p99/p99.9 and max in milliseconds."""
        p50, p90, p95, p99, p999 = self.percentiles([p for _, p in SUMMARY_PERCENTILES])
        return LatencySummary(
            count=self.count,
            min_ms=self.min_us / 1000.0,
            mean_ms=round(self.mean_us / 1000.0, 3),
            p50_ms=p50 / 1000.0,
            p90_ms=p90 / 1000.0,
            p95_ms=p95 / 1000.0,
            p99_ms=p99 / 1000.0,
            p999_ms=p999 / 1000.0,
            max_ms=self.max_us / 1000.0,
        )

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able form that `from_dict` restores exactly (for reports, IPC)."""
        return {
            "unit": "us",
            "sub_bucket_bits": _SUB_BITS,
            "count": self.count,
            "sum_us": self.sum_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "overflow": self.overflow,
            "counts": [[index, n] for index, n in sorted(self._counts.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """Restore a histogram written by `to_dict`; raises ValueError on a foreign layout."""
        if data.get("unit") != "us" or data.get("sub_bucket_bits") != _SUB_BITS:
            raise ValueError("histogram data has an unknown layout (expected µs, 11 sub-bits)")
        hist = cls()
        try:
            for index, n in data["counts"]:
                if int(index) < 0 or int(n) < 0:
                    raise ValueError("histogram data has a negative index or count")
                hist._counts[int(index)] = int(n)
            hist.count = int(data["count"])
            hist.sum_us = int(data["sum_us"])
            if hist.count:
                hist.min_us = int(data["min_us"])
            hist.max_us = int(data["max_us"])
            hist.overflow = int(data.get("overflow", 0))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"histogram data is incomplete: {exc}") from exc
        if sum(hist._counts.values()) != hist.count:
            raise ValueError("histogram data is inconsistent: counts do not add up to count")
        return hist

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        if not self.count:
            return "LatencyHistogram(empty)"
        s = self.summary()
        return f"LatencyHistogram(count={s.count}, p50={s.p50_ms}ms, p99={s.p99_ms}ms)"


def merge_all(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """A new histogram holding every sample of `histograms`."""
    out = LatencyHistogram()
    for hist in histograms:
        out.merge(hist)
    return out
