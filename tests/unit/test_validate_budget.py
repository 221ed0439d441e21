"""The validation suite's budget: a check cut at the deadline leaves the budget spent.

uvloop fires timers up to a millisecond before `time.monotonic()` reaches them. A check that
the deadline cut could then end a moment before the deadline, and the suite would start the
next check with a millisecond to run in (CI once saw `resource_utilization` pass on a load cut
after a millisecond). The suite's deadline has a slack (`MIN_CHECK_S`) for that.
"""

from __future__ import annotations

import asyncio
import time

import uvloop

from crisisctl.transport.target import parse_url
from crisisctl.validate.options import ValidateOptions
from crisisctl.validate.suite import MIN_CHECK_S, TOOL, _Run


def _run(budget_s: float) -> _Run:
    run = _Run("http://127.0.0.1:9/", parse_url("http://127.0.0.1:9/", TOOL), ValidateOptions())
    run.deadline = time.monotonic() + budget_s
    return run


def test_a_check_cut_at_the_deadline_leaves_no_time_to_start_another() -> None:
    async def cut_then_ask() -> list[bool]:
        answers = []
        for i in range(30):
            # past MIN_CHECK_S, so `bounded` starts the check and the deadline's timer cuts it
            run = _run(MIN_CHECK_S + 0.003 + (i % 7) * 0.0001)
            assert await run.bounded(10.0, asyncio.sleep(1.0)) is True
            answers.append(run.out_of_time())
        return answers

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert all(runner.run(cut_then_ask()))
    assert all(asyncio.run(cut_then_ask()))


def test_too_little_budget_runs_nothing_and_enough_runs_to_the_end() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        short = _run(MIN_CHECK_S / 2)
        ran = [False]

        async def mark() -> None:
            ran[0] = True

        cut = await short.bounded(10.0, mark())
        whole = await _run(5.0).bounded(10.0, asyncio.sleep(0.01))
        return cut, ran[0], whole

    assert asyncio.run(scenario()) == (True, False, False)
