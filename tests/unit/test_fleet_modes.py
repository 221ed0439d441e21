"""The mode's fleet rules without Redis: switch ids only grow, records parse strictly."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.cli.guard import describe_reach
from crisisctl.guard.config import EmergencyConfig
from crisisctl.guard.fleet_store import fleet_keys, parse_record
from crisisctl.guard.modes import EMERGENCY, MODES, NORMAL, RECOVERING, ModeChange, ModeState


def _change(switch_id: int, mode: str = EMERGENCY, actor: str = "a") -> ModeChange:
    return ModeChange("2026-01-01T00:00:00.000Z", NORMAL, mode, actor, "", "http", switch_id)


@given(st.lists(st.tuples(st.integers(1, 30), st.sampled_from(MODES)), max_size=40))
def test_the_newest_switch_wins_whatever_order_messages_arrive_in(
    arrivals: list[tuple[int, str]],
) -> None:
    state = ModeState(EmergencyConfig())
    modes_by_id: dict[int, str] = {}
    for switch_id, mode in arrivals:
        mode = modes_by_id.setdefault(switch_id, mode)  # one id is one switch
        state.adopt(_change(switch_id, mode))
    if arrivals:
        newest = max(modes_by_id)
        assert state.switch_id == newest
        assert state.mode == modes_by_id[newest]
        assert len({c.switch_id for c in state.history}) == len(state.history)
    else:
        assert (state.switch_id, state.mode) == (0, NORMAL)


def test_a_local_switch_stored_late_yields_to_a_newer_fleet_switch() -> None:
    state = ModeState(EmergencyConfig())
    local = state.switch(EMERGENCY, actor="me")
    state.adopt(_change(5, RECOVERING, actor="other"))  # came in while ours was being stored
    stored = state.stored(local, _change(4))
    assert stored.switch_id == 4
    assert (state.mode, state.switch_id) == (RECOVERING, 5)
    assert [c.switch_id for c in state.history] == [4, 5]


def test_a_local_switch_stored_first_is_in_force_under_its_fleet_id() -> None:
    state = ModeState(EmergencyConfig())
    local = state.switch(EMERGENCY, actor="me")
    state.stored(local, _change(3))
    assert (state.mode, state.switch_id) == (EMERGENCY, 3)
    assert not state.adopt(_change(3, NORMAL))  # its own message, echoed: nothing happens
    assert state.adopt(_change(3, NORMAL), force=True)  # unless forced (a refused switch)
    assert state.mode == NORMAL


def test_a_refused_local_switch_leaves_the_history() -> None:
    state = ModeState(EmergencyConfig())
    local = state.switch(EMERGENCY, actor="me")
    state.discard(local)
    assert list(state.history) == []


def test_scope_is_the_process_until_a_fleet_shares_the_mode() -> None:
    described = ModeState(EmergencyConfig()).describe()
    assert described["scope"] == "process"
    assert "fleet" not in described


def test_records_parse_strictly() -> None:
    good = {"switch_id": 3, "mode": "emergency", "previous": "normal", "actor": "a",
            "reason": "r", "source": "http", "at_us": "1767225600000000"}  # fmt: skip
    parsed = parse_record(json.dumps(good).encode())
    assert parsed is not None
    change, at_us = parsed
    assert (change.switch_id, change.mode, at_us) == (3, "emergency", 1767225600000000)
    assert change.at == "2026-01-01T00:00:00.000Z"
    for bad in ("", b"not json", json.dumps({**good, "mode": "panic"}),
                json.dumps({**good, "switch_id": 0}), json.dumps({"mode": "normal"})):  # fmt: skip
        assert parse_record(bad) is None


def test_every_fleet_key_shares_one_hash_tag() -> None:
    keys = fleet_keys("shop:crisisctl")
    tags = {k.split("}")[0] + "}" for k in (keys.mode, keys.seq, keys.history,
                                            keys.instances, keys.applied)}  # fmt: skip
    assert tags == {"{shop:crisisctl:fleet}"}


def test_the_cli_says_how_far_a_switch_reached() -> None:
    process = describe_reach({"switch": {"scope": "process", "pid": 42}})
    assert "only to the process that answered (pid 42)" in process
    fleet = describe_reach(
        {"switch": {"scope": "fleet", "stored": True, "switch_id": 9, "confirmed": 2,
                    "instances": 3, "waited_ms": 1500.0, "pid": 1}}
    )  # fmt: skip
    assert "fleet switch #9 confirmed by 2 of 3 instances" in fleet
    assert "next re-read" in fleet
    degraded = describe_reach(
        {"switch": {"scope": "fleet", "stored": False, "error": "ConnectionError", "pid": 7}}
    )
    assert "the fleet was not switched: Redis did not answer (ConnectionError)" in degraded
