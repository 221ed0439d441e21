"""The series store (crisisctl.watch.store): tiers, counters, bounds and snapshots."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.watch.model import SeriesKey, labels_of
from crisisctl.watch.store import Retention, Series, SeriesStore, encode, save_atomic

T0 = 1_800_000_000.0  # a round epoch second, a multiple of 300
KEY = SeriesKey("guard_requests_total", labels_of({"service": "api", "instance": "a:1"}))


def test_short_retention_keeps_raw_samples_only() -> None:
    series = Series(900.0, 10.0)
    assert [t.step for t in series.tiers] == [0.0]
    for i in range(1000):
        series.add(T0 + 10 * i, float(i))
    raw = series.tiers[0]
    assert len(raw.times) <= raw.cap + raw.cap // 4  # bounded
    assert series.latest() == (T0 + 9990, 999.0)
    assert series.window(T0 + 9950, T0 + 9990) == [
        (T0 + 9950 + 10 * i, 995.0 + i) for i in range(5)
    ]


def test_three_day_retention_downsamples() -> None:
    series = Series(3 * 86_400.0, 10.0)
    assert [t.step for t in series.tiers] == [0.0, 60.0, 300.0]
    for i in range(6 * 30):  # 30 minutes of 10 s samples
        series.add(T0 + 10 * i, float(i))
    minute = series.tiers[1]
    assert len(minute.times) == 30
    assert minute.times[0] == T0 and minute.last[0] == 5.0 and minute.mean[0] == 2.5
    five = series.tiers[2]
    assert len(five.times) == 6 and five.last[0] == 29.0


def test_a_window_older_than_the_raw_tier_reads_aggregates() -> None:
    series = Series(3 * 86_400.0, 10.0, counter=True)
    for i in range(8640 * 2):  # two days at 10 s
        series.add(T0 + 10 * i, float(i))
    end = T0 + 10 * (8640 * 2 - 1)
    assert series.tier_for(end - 600).step == 0.0
    assert series.tier_for(end - 6 * 3600).step == 60.0
    assert series.tier_for(end - 40 * 3600).step == 300.0
    # a counter growing 1 per 10 s grew by 1 per 10 s whichever tier answers (to one bucket)
    assert series.increase(end - 3600, end) == pytest.approx(360, abs=1)
    assert series.increase(end - 6 * 3600, end) == pytest.approx(6 * 360, abs=6)
    assert series.increase(end - 40 * 3600, end) == pytest.approx(40 * 360, abs=30)


@pytest.mark.parametrize("counter", [True, False])
def test_increase_counts_across_a_reset(counter: bool) -> None:
    series = Series(900.0, 10.0, counter=counter)
    for i, value in enumerate([10.0, 20.0, 30.0, 5.0, 15.0]):
        series.add(T0 + 10 * i, value)
    assert series.increase(T0, T0 + 40) == 20.0 + 5.0 + 10.0
    assert series.increase(T0 + 40, T0 + 40) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1000), min_size=2, max_size=50))
def test_increase_of_a_monotone_counter_is_last_minus_first(steps: list[float]) -> None:
    series = Series(3 * 86_400.0, 10.0, counter=True)
    total = 0.0
    values = []
    for i, step in enumerate(steps):
        total += step
        values.append(total)
        series.add(T0 + 10 * i, total)
    grown = series.increase(T0, T0 + 10 * len(steps))
    assert grown == pytest.approx(values[-1] - values[0])


def test_repeated_timestamps_are_ignored() -> None:
    series = Series(900.0, 10.0)
    series.add(T0, 1.0)
    series.add(T0, 2.0)
    assert series.window(T0, T0) == [(T0, 1.0)]


def test_the_number_of_series_is_bounded() -> None:
    store = SeriesStore(Retention({}), 10.0, max_series=3)
    for i in range(5):
        store.add(SeriesKey("x", (("i", str(i)),)), T0, 1.0)
    assert len(store) == 3 and store.dropped == 2


def test_select_by_name_and_labels() -> None:
    store = SeriesStore(Retention({}), 10.0)
    for service in ("api", "web"):
        for instance in ("a", "b"):
            store.add(SeriesKey("up", labels_of({"service": service, "instance": instance})), T0, 1)
    assert len(list(store.select("up"))) == 4
    assert {k.label("instance") for k in store.select("up", {"service": "web"})} == {"a", "b"}
    assert list(store.select("nothing")) == []


def test_retention_by_name() -> None:
    retention = Retention({"guard_requests_total": 3 * 86_400.0, "tiny": 5.0})
    assert retention.of("guard_requests_total") == 3 * 86_400.0
    assert retention.of("tiny") == 900.0  # the floor
    assert retention.of("other") == 900.0


def test_snapshot_round_trip(tmp_path: Path) -> None:
    retention = Retention({KEY.name: 3 * 86_400.0})
    store = SeriesStore(retention, 10.0)
    for i in range(500):
        store.add(KEY, T0 + 10 * i, float(i))
        store.add(SeriesKey("up", KEY.labels), T0 + 10 * i, 1.0)
    path = tmp_path / "state" / "s.json"
    save_atomic(path, encode(store.snapshot()))
    again = SeriesStore(retention, 10.0)
    assert again.restore(json.loads(path.read_bytes())) == 2
    original, restored = store.get(KEY), again.get(KEY)
    assert original is not None and restored is not None
    for a, b in zip(original.tiers, restored.tiers, strict=True):
        assert list(a.times) == list(b.times) and list(a.mean) == list(b.mean)
    assert restored.increase(T0, T0 + 5000) == original.increase(T0, T0 + 5000)
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temporary left


def test_save_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    save_atomic(path, b"old")
    save_atomic(path, b"new")
    assert path.read_bytes() == b"new"


def test_memory_is_flat_once_full() -> None:
    """A day of 10 s samples on 3-day series costs no more memory than its first hours."""
    store = SeriesStore(Retention({"c": 3 * 86_400.0}), 10.0)
    keys = [SeriesKey("c", (("i", str(i)),)) for i in range(20)]
    tracemalloc.start()
    try:
        marks = []
        for hour in range(26):
            for step in range(360):
                t = T0 + hour * 3600 + step * 10
                for key in keys:
                    store.add(key, t, float(step))
            if hour in (2, 25):
                marks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # raw tiers are full after an hour; minute tiers fill until 24 h, then stay bounded: the
    # minute and five-minute tiers grow by at most their 1440 + 288 buckets a series in between
    per_series = (marks[1] - marks[0]) / len(keys)
    assert per_series < (1440 + 300) * 4 * 8 * 1.5


def test_memory_of_raw_only_series_stops_growing() -> None:
    store = SeriesStore(Retention({}), 10.0)
    keys = [SeriesKey("g", (("i", str(i)),)) for i in range(50)]
    tracemalloc.start()
    try:
        marks = []
        for hour in range(5):
            for step in range(360):
                for key in keys:
                    store.add(key, T0 + hour * 3600 + step * 10, 1.0)
            marks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert marks[4] <= marks[1] * 1.05


def test_only_the_bucket_a_latency_slo_reads_is_kept_long() -> None:
    retention = Retention({}, by_le={("b", "0.25"): 3 * 86_400.0})
    store = SeriesStore(retention, 10.0)
    for le in ("0.1", "0.25"):
        store.add(SeriesKey("b", (("le", le),)), T0, 1.0)
    steps = {k.label("le"): [t.step for t in s.tiers] for k, s in store.series.items()}
    assert steps == {"0.1": [0.0], "0.25": [0.0, 60.0, 300.0]}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=2, max_size=60), st.integers(0, 58))
def test_a_corrected_counter_agrees_with_the_reset_walk(values: list[float], cut: int) -> None:
    fast, walk = Series(900.0, 10.0, counter=True), Series(900.0, 10.0)
    for i, value in enumerate(values):
        fast.add(T0 + 10 * i, value)
        walk.add(T0 + 10 * i, value)
    start = T0 + 10 * min(cut, len(values) - 1)
    end = T0 + 10 * len(values)
    assert fast.increase(start, end) == pytest.approx(walk.increase(start, end), abs=1e-6)


def test_a_restored_counter_keeps_counting_across_a_reset() -> None:
    store = SeriesStore(Retention({}), 10.0)
    store.add(KEY, T0, 100.0)
    store.add(KEY, T0 + 10, 5.0)  # reset
    again = SeriesStore(Retention({}), 10.0)
    again.restore(json.loads(encode(store.snapshot())))
    again.add(KEY, T0 + 20, 1.0)  # another reset after the restart
    series = again.get(KEY)
    assert series is not None and series.increase(T0, T0 + 20) == 5.0 + 1.0


def test_series_without_samples_within_their_retention_expire() -> None:
    store = SeriesStore(Retention({"long": 3 * 86_400.0}), 10.0)
    gone, long_ = SeriesKey("gone", KEY.labels), SeriesKey("long", KEY.labels)
    store.add(gone, T0, 1.0)
    store.add(long_, T0, 1.0)
    store.add(KEY, T0 + 2000, 1.0)
    assert store.expire(T0 + 2000) == 1
    assert set(store.series) == {long_, KEY} and list(store.select("gone")) == []
