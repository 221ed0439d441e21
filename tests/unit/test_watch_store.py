"""The series store (crisisctl.watch.store): tiers, counters, bounds and snapshots."""

from __future__ import annotations

import base64
import json
import tracemalloc
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.watch.model import SeriesKey, labels_of
from crisisctl.watch.store import Retention, Series, SeriesStore, Tier, save_atomic
from crisisctl.watch.store_file import MAGIC, StateFileError, pack, unpack

T0 = 1_800_000_000.0  # a round epoch second, a multiple of 300
KEY = SeriesKey("guard_requests_total", labels_of({"service": "api", "instance": "a:1"}))


def test_short_retention_keeps_raw_samples_only() -> None:
    series = Series(900.0, 10.0)
    assert [t.step for t in series.tiers] == [0.0]
    for i in range(1000):
        series.add(T0 + 10 * i, float(i))
    raw = series.tiers[0]
    assert len(raw) == raw.cap  # the newest cap samples
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
    assert len(minute) == 30
    assert minute.points(minute.lo, minute.hi)[0] == (T0, 5.0)
    assert minute.points(minute.lo, minute.hi, mean=True)[0] == (T0, 2.5)
    five = series.tiers[2]
    assert len(five) == 6 and five.points(five.lo, five.hi)[0] == (T0, 29.0)


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
    path = tmp_path / "state" / "s.bin"
    save_atomic(path, pack(store.snapshot(), T0 + 5000))
    again = SeriesStore(retention, 10.0)
    saved, at = unpack(path.read_bytes())
    assert at == T0 + 5000 and again.restore(saved) == 2
    original, restored = store.get(KEY), again.get(KEY)
    assert original is not None and restored is not None
    for a, b in zip(original.tiers, restored.tiers, strict=True):
        assert a.points(a.lo, a.hi, mean=True) == b.points(b.lo, b.hi, mean=True)
        assert a.points(a.lo, a.hi) == b.points(b.lo, b.hi)
    assert restored.increase(T0, T0 + 5000) == original.increase(T0, T0 + 5000)
    assert [p.name for p in path.parent.iterdir()] == ["s.bin"]  # no temporary left


def test_save_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    save_atomic(path, b"old")
    save_atomic(path, b"new")
    assert path.read_bytes() == b"new"


def test_memory_is_flat_once_full() -> None:
    """A day of 10 s samples on 3-day series costs no more memory than their first hours."""
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
    # every tier was allocated whole with its series: a day of samples adds nothing
    assert marks[1] <= marks[0] * 1.01, marks


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
    assert marks[4] <= marks[0] * 1.01, marks


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
    again.restore(unpack(pack(store.snapshot(), T0))[0])
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


def _v1_document() -> dict[str, object]:
    """A state file as version 1 wrote it: JSON, arrays as base64 of float64 times/values."""

    def b64(typecode: str, values: list[float]) -> str:
        return base64.b64encode(array(typecode, values).tobytes()).decode()

    times = [T0 + 10 * i for i in range(12)]
    raw = [0.0, b64("d", times), b64("d", [float(i) for i in range(12)])]
    minute = [60.0, b64("d", [T0, T0 + 60]), b64("d", [5.0, 11.0])]
    minute += [b64("f", [2.5, 8.5]), b64("H", [6, 6])]
    series = [
        ["gauge_ms", [["service", "api"]], [raw, minute], [0.0, None]],
        [KEY.name, list(map(list, KEY.labels)), [raw], [100.0, 11.0]],
    ]
    return {"saved_at": T0 + 110, "store": {"version": 1, "series": series}}


def test_a_version_1_json_state_file_is_restored() -> None:
    store = SeriesStore(Retention({"gauge_ms": 2 * 3600.0}), 10.0)
    saved, at = unpack(json.dumps(_v1_document()).encode())
    assert at == T0 + 110 and store.restore(saved) == 2
    gauge = store.get(SeriesKey("gauge_ms", (("service", "api"),)))
    counter = store.get(KEY)
    assert gauge is not None and counter is not None
    assert gauge.latest() == (T0 + 110, 11.0)
    assert gauge.window(T0, T0 + 30) == [(T0 + 10 * i, float(i)) for i in range(4)]
    minute = gauge.tiers[1]
    assert minute.points(minute.lo, minute.hi, mean=True) == [(T0, 2.5), (T0 + 60, 8.5)]
    assert counter.offset == 100.0 and counter.increase(T0, T0 + 110) == 11.0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG whatever", "not a crisisctl watch state file"),
        (MAGIC + b"\x07\x00" + bytes(12), "version 7 of the state file"),
        (MAGIC + b"\x02\x00" + bytes(8) + b"\x05\x00\x00\x00", "damaged"),
        (b'{"store": {"version": 9}}', "not version 1 or 2"),
    ],
)
def test_other_files_are_refused_in_one_sentence(data: bytes, reason: str) -> None:
    with pytest.raises(StateFileError, match=reason) as caught:
        unpack(data)
    assert "\n" not in str(caught.value)


def test_a_binary_snapshot_is_much_smaller_than_base64_json() -> None:
    store = SeriesStore(Retention({KEY.name: 3 * 86_400.0}), 10.0)
    for i in range(8640):  # a day
        store.add(KEY, T0 + 10 * i, float(i))
    data = pack(store.snapshot(), T0)
    series = store.get(KEY)
    assert series is not None
    points = sum(len(t) for t in series.tiers)
    # 12 bytes a point (times u32, values f64) before compression; base64 JSON took 21+
    assert len(data) < points * 12 * 0.6


def test_a_tier_allocates_its_whole_capacity_at_creation() -> None:
    tier = Tier(0.0, 100)
    before = tier.nbytes()
    assert before == 106 * (4 + 8)  # a sixteenth more room than it keeps
    for i in range(1000):
        tier.add(T0 + 10 * i, float(i))
    assert tier.nbytes() == before and len(tier) == 100
    assert tier.points(tier.lo, tier.hi)[-1] == (T0 + 9990, 999.0)
    gauge_minutes, counter_minutes = Tier(60.0, 10), Tier(60.0, 10, means=False)
    assert gauge_minutes.nbytes() == 11 * 18 and counter_minutes.nbytes() == 11 * 12


def test_raw_times_past_49_days_from_their_base_are_rebased() -> None:
    tier = Tier(0.0, 8)
    tier.add(T0, 1.0)
    later = T0 + 50 * 86_400.0 + 0.25  # 4.32e9 ms: past uint32
    tier.add(later, 2.0)
    tier.add(later + 10, 3.0)
    # T0 is beyond a uint32 of milliseconds from the newest: dropped; the rest counted anew
    assert tier.points(tier.lo, tier.hi) == [(later, 2.0), (later + 10, 3.0)]
    tier = Tier(0.0, 8)
    for day in (0, 30, 60):  # 60 days from the base, 30 from the oldest kept
        tier.add(T0 + day * 86_400.0, float(day))
    assert [v for _, v in tier.points(tier.lo, tier.hi)] == [30.0, 60.0]


async def test_the_watch_reads_a_version_1_file_once_then_writes_binary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from crisisctl.watch.config import parse_watch_text
    from crisisctl.watch.loop import LEGACY_STATE_FILE, STATE_FILE, Watch

    config = parse_watch_text("interval: 10s\nservices: {}\n", "w.yaml")
    (tmp_path / LEGACY_STATE_FILE).write_text(json.dumps(_v1_document()))
    watch = Watch(config, state_dir=tmp_path)
    assert await watch.load_state(alerts=False) == (2, 0)
    await watch.save_state()
    assert not (tmp_path / LEGACY_STATE_FILE).exists() and (tmp_path / STATE_FILE).exists()
    assert await Watch(config, state_dir=tmp_path).load_state(alerts=False) == (2, 0)
    (tmp_path / STATE_FILE).write_bytes(b"not a state file")
    assert await Watch(config, state_dir=tmp_path).load_state(alerts=False) == (0, 0)
    assert "it is not a crisisctl watch state file; starting without them" in caplog.text
