"""Runbook timers (`crisisctl.watch.escalation`) against hand-picked instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.watch.escalation import (
    due_escalation,
    escalation_due_at,
    first_level,
    may_run_unattended,
    next_level,
)
from crisisctl.watch.respond_config import EscalationLevel, ResponseConfig

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

RUNBOOK = [
    EscalationLevel(level=1, escalate_after=600),
    EscalationLevel(level=2, escalate_after=1800, notify=["json://127.0.0.1:1/x"]),
    EscalationLevel(level=3),
]


def test_first_level_and_next() -> None:
    assert first_level(RUNBOOK) is RUNBOOK[0]
    assert first_level([]) is None
    assert next_level(RUNBOOK, 1) is RUNBOOK[1]
    assert next_level(RUNBOOK, 3) is None
    gapped = [EscalationLevel(level=1, escalate_after=60), EscalationLevel(level=3)]
    assert next_level(gapped, 1) is gapped[1]


def test_escalates_exactly_when_the_timer_runs_out() -> None:
    assert escalation_due_at(RUNBOOK, 1, T0) == T0 + timedelta(minutes=10)
    just_before = T0 + timedelta(seconds=599.999)
    assert due_escalation(RUNBOOK, 1, T0, just_before, mitigated=False) is None
    at = T0 + timedelta(seconds=600)
    assert due_escalation(RUNBOOK, 1, T0, at, mitigated=False) is RUNBOOK[1]


def test_one_level_per_step_each_with_its_own_timer() -> None:
    late = T0 + timedelta(hours=5)
    assert due_escalation(RUNBOOK, 1, T0, late, mitigated=False) is RUNBOOK[1]
    # level 2 reached at `late`: its own 30 min start there
    assert due_escalation(RUNBOOK, 2, late, late + timedelta(minutes=29), mitigated=False) is None
    assert (
        due_escalation(RUNBOOK, 2, late, late + timedelta(minutes=30), mitigated=False)
        is (RUNBOOK[2])
    )


def test_no_escalation_when_mitigated_without_timer_or_at_the_top() -> None:
    late = T0 + timedelta(days=1)
    assert due_escalation(RUNBOOK, 1, T0, late, mitigated=True) is None
    assert due_escalation(RUNBOOK, 3, T0, late, mitigated=False) is None
    assert due_escalation([EscalationLevel(level=1)], 1, T0, late, mitigated=False) is None
    assert due_escalation(RUNBOOK, 4, T0, late, mitigated=False) is None  # not in the runbook


def test_levels_three_and_four_need_unattended() -> None:
    assert may_run_unattended(EscalationLevel(level=1))
    assert may_run_unattended(EscalationLevel(level=2))
    assert not may_run_unattended(EscalationLevel(level=3))
    assert not may_run_unattended(EscalationLevel(level=4))
    assert may_run_unattended(EscalationLevel(level=4, unattended=True))


def test_runbook_by_severity() -> None:
    from crisisctl.severity import Severity

    config = ResponseConfig.model_validate({"runbooks": {"P1": [{"level": 1}]}})
    assert [lvl.level for lvl in config.runbook(Severity.P1)] == [1]
    assert config.runbook(Severity.P2) == []


@given(
    after=st.floats(min_value=1, max_value=1e6),
    elapsed=st.floats(min_value=0, max_value=2e6),
)
def test_due_iff_elapsed_reaches_the_timer(after: float, elapsed: float) -> None:
    runbook = [EscalationLevel(level=1, escalate_after=after), EscalationLevel(level=2)]
    now = T0 + timedelta(seconds=elapsed)
    due = due_escalation(runbook, 1, T0, now, mitigated=False)
    assert (due is not None) == (now >= T0 + timedelta(seconds=after))
