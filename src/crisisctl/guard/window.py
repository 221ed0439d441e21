"""The recent-latency window of a route (and of the whole guard): its segments of 15 s, its
counts per histogram bucket with percentile cursors, and its summary.

`WindowCounts` keeps the window's counts per bucket and per group of 32 neighbouring buckets,
and one cursor per percentile: adding a bucket costs two dict updates and a comparison per
cursor, and a percentile steps its cursor from where the last read left it (a few buckets, or
whole empty groups at once), instead of sorting or walking every bucket. `WindowSegment` is one
epoch's histograms in a route's window. `window_summary` reports a window as
`LatencyHistogram.summary()` reports a histogram: exactly (1/1024 resolution).

Split from guard/metrics.py (which re-exports these names); compiled with it.
"""

from __future__ import annotations

import math
from typing import Final

from crisisctl.stats import MAX_TRACKABLE_US, LatencyHistogram, bucket_bounds

#: the recent-latency window: segments of SEGMENT_S seconds, the last WINDOW_SEGMENTS whole
#: ones and the current one (so 60 to 75 s of samples)
SEGMENT_S: Final = 15.0
WINDOW_SEGMENTS: Final = 4
WINDOW_S: Final = SEGMENT_S * WINDOW_SEGMENTS
#: a WindowCounts group holds 2**_GROUP_BITS neighbouring bucket indexes
_GROUP_BITS: Final = 5
_GROUP_SIZE: Final = 1 << _GROUP_BITS
_GROUP_MASK: Final = _GROUP_SIZE - 1


_PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0, 99.9)
#: the most histograms a window segment keeps apart (the background refresh adds one a second)
SEGMENT_PARTS: Final = 32


def epoch_of(now: float) -> int:
    """The window segment a monotonic time falls in."""
    return int(now // SEGMENT_S)


class WindowCounts:
    """Counts per bucket index, and per group of 32 neighbouring indexes, with one cursor per
    percentile asked, so a percentile moves from where it was instead of being searched anew.

    A cursor is (index, samples below it): adding or removing a histogram moves every cursor's
    count of samples below (two dict updates and a comparison per cursor per bucket), and a
    read steps each cursor from its last index to the bucket holding the rank it wants, one
    index at a time or a whole group of 32 at a time where the group lies entirely on one side.
    New samples move a percentile by a few buckets: a read costs about that, never a walk
    over the whole histogram."""

    __slots__ = ("below", "count", "counts", "groups", "indexes", "sum_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.groups: dict[int, int] = {}
        self.count = 0
        self.sum_us = 0
        #: one cursor per percentile rank asked (in `indexes_at`'s order): its bucket index
        #: and the number of samples in the buckets below that index
        self.indexes: list[int] = []
        self.below: list[int] = []

    def add(self, hist: LatencyHistogram, sign: int) -> None:
        """Add (`sign` 1) or remove (-1) every sample of `hist`."""
        counts = self.counts
        groups = self.groups
        indexes = self.indexes
        below = self.below
        cursors = len(indexes)
        # (the histogram's own dict, not its `index_counts` view: compiled code iterates a
        # typed dict's items without a tuple per item)
        for index, n in hist._counts.items():
            delta = n * sign
            left = counts.get(index, 0) + delta
            if left:
                counts[index] = left
            else:
                del counts[index]
            group = index >> _GROUP_BITS
            left = groups.get(group, 0) + delta
            if left:
                groups[group] = left
            else:
                del groups[group]
            for c in range(cursors):
                if index < indexes[c]:
                    below[c] += delta
        self.count += hist.count * sign
        self.sum_us += hist.sum_us * sign

    def indexes_at(self, ranks: list[int]) -> list[int]:
        """The bucket index holding each `rank`-th smallest sample (1 ≤ rank ≤ count)."""
        counts = self.counts
        groups = self.groups
        indexes = self.indexes
        below = self.below
        while len(indexes) < len(ranks):
            indexes.append(0)
            below.append(0)
        out: list[int] = []
        for c, rank in enumerate(ranks):
            index = indexes[c]
            seen = below[c]
            # backwards while the rank lies below this index
            while seen >= rank:
                if index & _GROUP_MASK == 0:
                    in_group = groups.get((index >> _GROUP_BITS) - 1, 0)
                    if seen - in_group >= rank:
                        seen -= in_group
                        index -= _GROUP_SIZE
                        continue
                index -= 1
                seen -= counts.get(index, 0)
            # forwards while this index's bucket ends below the rank
            while True:
                if index & _GROUP_MASK == 0:
                    in_group = groups.get(index >> _GROUP_BITS, 0)
                    if seen + in_group < rank:
                        seen += in_group
                        index += _GROUP_SIZE
                        continue
                here = counts.get(index, 0)
                if seen + here >= rank:
                    break
                seen += here
                index += 1
            indexes[c] = index
            below[c] = seen
            out.append(index)
        return out


class WindowSegment:
    """The histograms of one epoch taken into a route's window, kept as they came (merging
    each into one histogram cost a dict update per bucket on every fold; they are taken out
    again, one by one, when the epoch leaves the window; past `SEGMENT_PARTS` they are merged
    into the last), with their extremes."""

    __slots__ = ("count", "epoch", "max_us", "min_us", "parts")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.parts: list[LatencyHistogram] = []
        self.count = 0
        self.min_us = MAX_TRACKABLE_US + 1
        self.max_us = 0

    def add(self, hist: LatencyHistogram) -> None:
        parts = self.parts
        if len(parts) < SEGMENT_PARTS:
            parts.append(hist)
        else:  # (reads many times a second: memory stays bounded, at a merge per bucket)
            parts[-1].merge(hist)
        self.count += hist.count
        if hist.count:
            if hist.min_us < self.min_us:
                self.min_us = hist.min_us
            if hist.max_us > self.max_us:
                self.max_us = hist.max_us


def window_summary(window: WindowCounts, low_us: int, high_us: int) -> dict[str, float | int]:
    """`LatencyHistogram.summary().as_dict()` of the window, from its Fenwick tree.

    Equal to the summary of the merged window histogram: percentile p is the bucket holding
    rank ceil(count × p / 100), reported as its highest value clamped to the true maximum.
    """
    count = window.count
    if count <= 0:
        return {"count": 0, "min": 0.0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0,
                "p99": 0.0, "p999": 0.0, "max": 0.0}  # fmt: skip
    values: list[float] = []
    for index in window.indexes_at([_rank(count, pct) for pct in _PERCENTILES]):
        top = bucket_bounds(index)[1]
        values.append((top if top < high_us else high_us) / 1000.0)
    return {
        "count": count,
        "min": low_us / 1000.0,
        "mean": round(window.sum_us / count / 1000.0, 3),
        "p50": values[0],
        "p90": values[1],
        "p95": values[2],
        "p99": values[3],
        "p999": values[4],
        "max": high_us / 1000.0,
    }


def _rank(count: int, pct: float) -> int:
    """The rank `LatencyHistogram.percentiles` looks for (same formula, same rounding)."""
    return max(1, math.ceil(count * pct / 100.0 - 1e-9))
