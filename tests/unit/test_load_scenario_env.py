"""``env:NAME`` values of a scenario file (`crisisctl.load.scenario_env`)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.load.scenario_env import resolve_env

values = st.text(max_size=20).filter(lambda v: not v.startswith("env:"))


@given(st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=4))
def test_values_without_the_prefix_are_left_alone(headers: dict[str, str]) -> None:
    data = {"headers": headers, "steps": [{"path": "/", "headers": dict(headers)}]}
    before = copy.deepcopy(data)
    out, secrets, problems = resolve_env(data)
    assert out == before and secrets == [] and problems == []


@given(st.text(min_size=1, max_size=30).filter(lambda v: not set(v) & {"\r", "\n", "\0"}))
def test_a_value_is_read_escaped_for_templates_and_kept_as_a_secret(value: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRISISCTL_T_VALUE", value)
        data = {"login": {"headers": {"X-A": "env:CRISISCTL_T_VALUE"}}}
        out, secrets, problems = resolve_env(data)
    escaped = value.replace("{", "{{").replace("}", "}}")
    assert out["login"]["headers"]["X-A"] == escaped and problems == []
    assert value in secrets and escaped in secrets
    assert data["login"]["headers"]["X-A"] == "env:CRISISCTL_T_VALUE"  # the input is not changed


def test_missing_variables_are_problems_at_their_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRISISCTL_T_NOPE", raising=False)
    data = {
        "operations": [{"path": "/"}, {"path": "/", "headers": {"K": "env:CRISISCTL_T_NOPE"}}],
        "transport": {"cert": "env:CRISISCTL_T_NOPE"},
    }
    _, _, problems = resolve_env(data)
    assert [loc for loc, _ in problems] == [
        ("operations", 1, "headers", "K"),
        ("transport", "cert"),
    ]
    assert all("'CRISISCTL_T_NOPE' is not set" in message for _, message in problems)
