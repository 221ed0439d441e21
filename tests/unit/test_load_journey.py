"""Journeys before the run: extraction rules, feeders, step thresholds and the scenario checks
(hypothesis for the extraction and template parsers)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.load.abort import AbortWindow, parse_abort_on
from crisisctl.load.feeders import Feeder, FeederError, load_rows
from crisisctl.load.journey import compile_extractor, compile_journey
from crisisctl.load.journey_client import JourneyClient
from crisisctl.load.journey_spec import ExtractSpec
from crisisctl.load.plan import check_scenario
from crisisctl.load.recorder import Tick
from crisisctl.load.recording import SecondStats
from crisisctl.load.scenario import Scenario, ScenarioError, load_scenario
from crisisctl.load.target import Target
from crisisctl.load.templates import StringTemplate, TemplateError
from crisisctl.load.thresholds import ThresholdError, parse_threshold
from crisisctl.stats import LatencyHistogram

KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
SCALARS = st.one_of(st.integers(), st.text(min_size=1, max_size=20), st.booleans())


@given(path=st.lists(KEYS, min_size=1, max_size=4), value=SCALARS)
def test_json_extraction_finds_a_nested_value(path: list[str], value: object) -> None:
    document: object = value
    for key in reversed(path):
        document = {key: document}
    rule = compile_extractor("v", ExtractSpec(json=".".join(f'"{k}"' for k in path)))
    got = rule.apply({}, json.dumps(document).encode())
    assert got == (str(value).lower() if isinstance(value, bool) else str(value))


@given(index=st.integers(0, 5), size=st.integers(0, 5))
def test_json_extraction_of_a_missing_index_is_none(index: int, size: int) -> None:
    rule = compile_extractor("v", ExtractSpec(json=f"items[{index}].id"))
    body = json.dumps({"items": [{"id": i} for i in range(size)]}).encode()
    assert rule.apply({}, body) == (str(index) if index < size else None)


@given(st.text(max_size=30))
def test_extraction_never_raises_on_any_body(body: str) -> None:
    for spec in (ExtractSpec(json="a.b"), ExtractSpec(regex=r"id=(\d+)")):
        value = compile_extractor("v", spec).apply({}, body.encode())
        assert value is None or isinstance(value, str)


@given(st.text(alphabet="[]{}()*+?\\|", min_size=1, max_size=6))
def test_bad_expressions_are_template_errors_not_crashes(text: str) -> None:
    for spec in (ExtractSpec(json=text), ExtractSpec(regex=text)):
        try:
            compile_extractor("v", spec)
        except TemplateError as exc:
            assert str(exc).endswith(".")


def test_header_and_regex_extraction() -> None:
    header = compile_extractor("v", ExtractSpec(header="X-Id"))
    assert header.apply({"x-id": "42"}, b"") == "42"  # the client lower-cases names
    assert header.apply({}, b"") is None
    regex = compile_extractor("v", ExtractSpec(regex=r'value="([^"]+)"'))
    assert regex.apply({}, b'<input value="abc">') == "abc"
    whole = compile_extractor("v", ExtractSpec(regex=r"\d+"))
    assert whole.apply({}, b"id 17") == "17"
    with pytest.raises(TemplateError, match="JMESPath"):
        compile_extractor("v", ExtractSpec(json="items[0"))


@given(
    st.lists(st.tuples(st.text(alphabet="abc/ -", max_size=5), KEYS), max_size=4),
    st.text(alphabet="abc/ -", max_size=5),
)
def test_template_parser_round_trips(pieces: list[tuple[str, str]], tail: str) -> None:
    text = "".join(f"{lit}{{{name}}}" for lit, name in pieces) + tail
    template = StringTemplate.compile(text)
    assert template.names == tuple(name for _, name in pieces)
    values = {name: f"<{name}>" for _, name in pieces}
    assert template.render(values) == "".join(f"{lit}<{n}>" for lit, n in pieces) + tail


@given(step=st.from_regex(r"[A-Za-z_][A-Za-z0-9_ ./-]{0,12}[A-Za-z0-9]", fullmatch=True))
def test_step_tag_scopes_a_threshold(step: str) -> None:
    t = parse_threshold(f"p95{{step:{step}}} < 300ms")
    assert (t.operation, t.metric, t.limit) == (step, "p95", 300.0)


def test_bad_step_tags() -> None:
    for text in ("p95{login} < 1s", "p95{step:} < 1s", "p95{method:GET} < 1s"):
        with pytest.raises(ThresholdError, match="name a step"):
            parse_threshold(text)
    with pytest.raises(ThresholdError, match="belongs to the operation"):
        parse_threshold("p95{step:a} < 1s", operation="b")


def test_feeder_modes(tmp_path: Path) -> None:
    rows = [{"u": str(i)} for i in range(3)]
    seq = Feeder(rows, "sequential")
    assert [seq.row(0, random.Random(0))["u"] for _ in range(4)] == ["0", "1", "2", "0"]
    unique = Feeder(rows, "unique")
    assert [unique.row(i, random.Random(0))["u"] for i in range(3)] == ["0", "1", "2"]
    assert unique.part(1, 2).rows == [rows[1]]
    with pytest.raises(FeederError, match="3 rows for 4 users"):
        unique.check_unique(4)
    rnd = Feeder(rows, "random")
    assert {rnd.row(0, random.Random(s))["u"] for s in range(30)} == {"0", "1", "2"}


def test_jsonl_feeder_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text('{"name": "a", "id": 1, "ok": true}\n\n{"name": "b", "id": 2, "ok": false}\n')
    assert load_rows(path, "jsonl") == [
        {"name": "a", "id": "1", "ok": "true"},
        {"name": "b", "id": "2", "ok": "false"},
    ]
    path.write_text('{"name": "a"}\n[1]\n')
    with pytest.raises(FeederError, match=r"users.jsonl:2 is not a JSON object"):
        load_rows(path, "jsonl")
    with pytest.raises(FeederError, match="cannot read"):
        load_rows(tmp_path / "missing.csv", "csv")


BASE = {"base_url": "http://127.0.0.1:8000", "model": {"type": "closed", "users": 2, "duration": 1}}


def test_scenario_shape_checks() -> None:
    step = {"path": "/"}
    with pytest.raises(ValueError, match=r"either operations .* or steps"):
        Scenario.model_validate({**BASE, "operations": [step], "steps": [step]})
    open_model = {"type": "open", "rate": 5, "duration": 1}  # a journey per arrival
    assert Scenario.model_validate({**BASE, "model": open_model, "steps": [step]}).steps
    with pytest.raises(ValueError, match="exactly one of json, header or regex"):
        Scenario.model_validate({**BASE, "steps": [{"path": "/", "extract": {"a": {}}}]})


def test_missing_feeder_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("user\nalice\n")
    scenario = Scenario.model_validate(
        {
            **BASE,
            "feeders": [{"csv": "u.csv"}],
            "steps": [{"path": "/u/{user}"}, {"name": "two", "path": "/p/{password}"}],
        }
    )
    with pytest.raises(ScenarioError, match=r"steps\[1\].path: no variable named password"):
        compile_journey(scenario, tmp_path)


def _tick(second: int, requests: int, errors: int, op: str | None = None) -> Tick:
    stats = SecondStats(requests, errors, 0, LatencyHistogram())
    return Tick(second, second + 1.0, stats, {op: stats} if op else {})


def test_abort_on_parses_its_window() -> None:
    rule = parse_abort_on("error_rate > 50% for 10s")
    assert (rule.condition.metric, rule.condition.limit, rule.window_s) == ("error_rate", 0.5, 10)
    assert parse_abort_on("p99{step:login} > 2s").window_s == 1
    for bad in ("requests > 5 for 2s", "error_rate > 50% for ever", "error_rate > 50% for 0s"):
        with pytest.raises(ThresholdError):
            parse_abort_on(bad)


@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=12))
def test_abort_window_stops_only_on_a_whole_failing_window(seconds: list[tuple[int, int]]) -> None:
    window = AbortWindow.of([parse_abort_on("error_rate > 50% for 3s")])
    fired = None
    for second, (requests, errors) in enumerate(seconds):
        errors = min(errors, requests)
        if window.add(_tick(second, requests, errors)) is not None:
            fired = second
            break
    if fired is not None:
        last = seconds[max(0, fired - 2) : fired + 1]
        assert fired >= 2
        assert sum(min(e, r) for r, e in last) / sum(r for r, _ in last) > 0.5


def test_abort_window_on_a_step() -> None:
    window = AbortWindow.of([parse_abort_on("error_rate{step:login} > 50% for 2s")])
    assert window.add(_tick(0, 10, 10, "login")) is None  # one second is not the window
    assert window.add(_tick(1, 10, 0, "login")) is None  # 10 of 20: not above 50 %
    assert window.add(_tick(2, 10, 10, "other")) is None  # other steps do not count
    assert window.add(_tick(3, 10, 10, "login")) is not None  # seconds 2-3: 10 of 10


def test_the_example_journey_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "scenarios" / "shop-journey.yaml"
    scenario, root = load_scenario(example)
    journey = compile_journey(scenario, example.parent, str(example), root)
    assert [s.name for s in journey.steps] == ["login", "list", "read"]
    assert scenario.max_requests == 20000 and scenario.abort_rules()[0].window_s == 10


def test_journey_client_cookie_jar() -> None:
    client = JourneyClient(Target("127.0.0.1", 1, "127.0.0.1", "/", "127.0.0.1:1"), 1.0)
    client._keep_cookies("sid=abc; Path=/; HttpOnly\ncart=7")
    assert client.cookies == {"sid": "abc", "cart": "7"}
    client._keep_cookies('cart=""; Max-Age=0')
    assert client.cookies == {"sid": "abc"}
    raw = client._bytes("POST", "/x?a=1", {"X-A": "b"}, b"{}")
    assert raw.startswith(b"POST /x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n")
    assert b"\r\nCookie: sid=abc\r\nContent-Length: 2\r\n\r\n{}" in raw


def test_abort_on_naming_an_unknown_step_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "base_url: http://127.0.0.1:1\nmodel: {type: closed, users: 1, duration: 1s}\n"
        "steps: [{name: a, path: /}]\nabort_on:\n  - error_rate{step:a} > 50% for 2s\n"
        "  - error_rate{step:b} > 50% for 2s\n"
    )
    scenario, root = load_scenario(path)
    with pytest.raises(ScenarioError, match=r"s.yaml:6: abort_on\[1\]: there is no step .* 'b'"):
        check_scenario(scenario, tmp_path, str(path), root)
