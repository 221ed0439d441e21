"""guard_overhead reports how often a response woke the load generator (issue 14, point 13).

On loopback the server's write wakes wrk in the server's own kernel time, so a change in how
often a response finds wrk asleep moves the server's CPU figure without any change in its
code. Each round stores wrk's voluntary context switches per request, and the summary gives
their median per variant; rounds stored before the figure existed have none and are left out.
"""

from __future__ import annotations

from benchmarks.guard_overhead import Run, summarize


def _round(variant: str, rnd: int, cpu_us: float, wakeups: float | None) -> Run:
    return Run(
        variant=variant,
        round=rnd,
        requests=1000,
        duration_s=1.0,
        cpu_s=cpu_us * 1000 / 1e6,
        cpu_system_s=0.015,
        client_wakeups_per_req=wakeups,
        cpu_us_per_req=cpu_us,
        used=True,
        valid=True,
    )


def test_the_median_of_the_rounds_that_have_it() -> None:
    runs = [
        _round("realistic_bare", 1, 60.0, 1.10),
        _round("realistic_bare", 2, 61.0, 1.20),
        _round("realistic_bare", 3, 59.0, None),  # (a round stored before the figure)
        _round("realistic_guard", 1, 70.0, 1.40),
        _round("realistic_guard", 2, 71.0, 1.00),
        _round("realistic_guard", 3, 72.0, 1.30),
    ]
    med = summarize(runs, ["realistic_bare", "realistic_guard"])
    assert abs(med["realistic_bare"]["client_wakeups_per_req"] - 1.15) < 1e-9
    assert abs(med["realistic_guard"]["client_wakeups_per_req"] - 1.30) < 1e-9


def test_none_when_no_round_has_it() -> None:
    runs = [_round("realistic_bare", 1, 60.0, None)]
    assert summarize(runs, ["realistic_bare"])["realistic_bare"]["client_wakeups_per_req"] is None
