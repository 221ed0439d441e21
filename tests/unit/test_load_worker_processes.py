"""A worker's engine processes: their ticks merge into one per second (`TickMerger`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.load.recorder import Tick
from crisisctl.load.recording import SecondStats
from crisisctl.load.worker_processes import TickMerger


def _tick(second: int, requests: int, process: int) -> Tick:
    stats = SecondStats()
    stats.requests = requests
    return Tick(second, second + 1.0, stats, {"op": SecondStats(requests=requests)}, process)


@given(st.lists(st.lists(st.integers(0, 50), min_size=3, max_size=3), min_size=1, max_size=6))
def test_one_tick_per_second_in_order_with_the_sum_of_the_processes(
    counts: list[list[int]],
) -> None:
    out: list[Tick] = []
    merger = TickMerger(3, out.append)
    for second, per_process in enumerate(counts):
        for process, n in enumerate(per_process):
            merger.add(_tick(second, n, process))
            if process < 2:
                assert len(out) == second  # a second goes out once all three reported it
    merger.flush()
    assert [t.second for t in out] == list(range(len(counts)))
    assert [t.stats.requests for t in out] == [sum(c) for c in counts]
    assert [t.ops["op"].requests for t in out] == [sum(c) for c in counts]


def test_flush_sends_the_seconds_a_process_never_reported() -> None:
    out: list[Tick] = []
    merger = TickMerger(2, out.append)
    merger.add(_tick(0, 5, 0))
    merger.add(_tick(1, 7, 0))
    assert out == []
    merger.flush()
    assert [(t.second, t.stats.requests) for t in out] == [(0, 5), (1, 7)]
