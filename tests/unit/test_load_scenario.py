"""Scenario files (pydantic + YAML lines), request templates, value sources, process shares."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.cli.load import quick_scenario
from crisisctl.load.plan import compile_operations, share
from crisisctl.load.scenario import ClosedModel, OpenModel, ScenarioError, load_scenario
from crisisctl.load.target import check_loopback_url
from crisisctl.load.templates import (
    FixedRequest,
    JsonTemplate,
    ListSource,
    RangeSource,
    RequestTemplate,
    StringTemplate,
    TemplateError,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        scenario, root = load_scenario(path)
        compile_operations(scenario, path.parent, str(path), root)
    return info.value.problems


# -- the examples ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads_and_compiles(path: Path) -> None:
    scenario, root = load_scenario(path)
    if scenario.steps:  # a journey: test_load_journey.py compiles it
        return
    operations = compile_operations(scenario, path.parent, str(path), root)
    assert len(operations) == len(scenario.operations) >= 1
    assert scenario.duration_s > 0
    for spec in scenario.all_thresholds():
        assert spec.operation is None or spec.operation in {op.name for op in operations}
    rng = random.Random(1)
    for op in operations:
        raw = op.request.bind({"Cookie": "sid=1"}).render(rng)
        assert raw.startswith(f"{op.method} /".encode()) and b"\r\nCookie: sid=1\r\n" in raw


def test_examples_exist() -> None:
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 3


# -- errors with file, line and field --------------------------------------------------------
BROKEN = """\
name: broken
base_url: http://127.0.0.1:8000
model:
  type: open
  rate: -3
  duratoin: 5s
operations:
  - path: /ok
  - path: no-slash
    weight: 0
  - path: /x
    json: {a: 1}
    body: "both"
thresholds:
  - "p95 < 300 parsecs"
"""


def test_schema_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    found = problems(path)
    assert f"{path}:5: model.rate: Input should be greater than or equal to 0" in found
    assert f"{path}:6: model.duratoin: Extra inputs are not permitted" in found
    assert f"{path}:9: operations[1].path: String should match pattern '^/'" in found
    assert f"{path}:10: operations[1].weight: Input should be greater than 0" in found
    assert f"{path}:11: operations[2]: give either json or body, not both" in found
    assert any(p.startswith(f"{path}:15: thresholds[0]: ") and "parsecs" in p for p in found)
    assert [int(p.split(":")[1]) for p in found] == sorted(int(p.split(":")[1]) for p in found)


def test_missing_fields_point_at_their_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "base_url: http://127.0.0.1:1\nmodel:\n  type: closed\n")
    found = problems(path)
    assert f"{path}:1: operations: Field required" in found
    assert any(p.startswith(f"{path}:3: model") and "users" in p for p in found)


def test_template_and_data_errors_have_lines(tmp_path: Path) -> None:
    (tmp_path / "ids.csv").write_text("id,name\n1,a\n")
    text = """\
base_url: http://127.0.0.1:8000
model: {type: open, rate: 10, duration: 1s}
variables:
  id: {csv: ids.csv, column: ident}
operations:
  - name: one
    path: /clients/{client}
  - name: one
    path: /a{b
thresholds:
  - expr: p95 < 1s
    operation: ghost
"""
    path = write(tmp_path, text)
    found = problems(path)
    assert any(p.startswith(f"{path}:4: variables.id.csv: ") and "ident" in p for p in found)
    assert any(
        p.startswith(f"{path}:7: operations[0].path: no variable named client") for p in found
    )
    assert f"{path}:8: operations[1].name: the operation name 'one' is used twice" in found
    assert any(p.startswith(f"{path}:9: operations[1].path: ") for p in found)
    assert f"{path}:12: thresholds[0].operation: there is no operation named 'ghost'" in found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\n  b: 2\n", ":2: YAML syntax error: mapping values are not allowed here"),
        ("- just\n- a list\n", ":1: scenario: must be a YAML mapping"),
        ("", ":1: scenario: must be a YAML mapping"),
    ],
)
def test_unusable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    found = problems(path)
    assert len(found) == 1 and expected in found[0]


def test_a_base_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    text = "base_url: ftp://10.0.0.1\nmodel: {type: open, rate: 1, duration: 1}\n"
    found = problems(write(tmp_path, text + "operations: [{path: /}]\n"))
    assert found == [
        f"{tmp_path / 's.yaml'}:1: base_url: crisisctl load speaks http:// and https://, "
        "not 'ftp://10.0.0.1'."
    ]


def test_any_host_and_https_are_accepted_with_transport_options(tmp_path: Path) -> None:
    text = (
        "base_url: https://api.test.local:8443\nmodel: {type: open, rate: 1, duration: 1}\n"
        "transport: {resolve: ['api.test.local:8443:127.0.0.1'], insecure: true}\n"
    )
    path = write(tmp_path, text + "operations: [{path: /}]\n")
    scenario, _ = load_scenario(path)
    target = scenario.transport.target(scenario.base_url + "/")
    assert (target.connect_host, target.server_hostname, target.is_tls) == (
        "127.0.0.1",
        "api.test.local",
        True,
    )


def test_error_message_is_one_sentence_for_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "base_url: http://127.0.0.1\nmodel: {type: open}\noperations: []\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path} has 2 problems:\n")


# -- templates -------------------------------------------------------------------------------
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30))
def test_literal_text_round_trips_with_escaped_braces(text: str) -> None:
    template = StringTemplate.compile(text.replace("{", "{{").replace("}", "}}"))
    assert template.is_static and template.render({}) == text


@given(st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=4))
def test_placeholders_are_found_and_filled(names: list[str]) -> None:
    template = StringTemplate.compile("/".join(f"x{{{n}}}" for n in names))
    assert template.names == tuple(names)
    values = {n: f"<{n}>" for n in names}
    assert template.render(values) == "/".join(f"x<{n}>" for n in names)


@pytest.mark.parametrize("text", ["/a{", "/a{1x}", "/a}", "{ id }"])
def test_bad_placeholders(text: str) -> None:
    with pytest.raises(TemplateError):
        StringTemplate.compile(text)


def test_json_template_keeps_types_and_fills_text() -> None:
    template = JsonTemplate.compile(
        {"id": "{id}", "label": "client {id}", "tags": ["{tag}", 3], "ok": True}
    )
    assert set(template.names) == {"id", "tag"}
    body = json.loads(template.render({"id": 42, "tag": "vip"}))
    assert body == {"id": 42, "label": "client 42", "tags": ["vip", 3], "ok": True}


def test_request_template_renders_a_whole_request() -> None:
    target = check_loopback_url("http://127.0.0.1:8000/", "test")
    template = RequestTemplate(
        target=target,
        method="POST",
        path=StringTemplate.compile("/api/clients/{id}/notes"),
        query=((StringTemplate.compile("q"), StringTemplate.compile("{word}")),),
        headers=(("X-Trace", StringTemplate.compile("t-{id}")),),
        body=JsonTemplate.compile({"id": "{id}"}),
        content_type="application/json",
        sources={"id": RangeSource(7, 8, sequential=True), "word": ListSource(["a b&c"])},
    )
    bound = template.bind({"Authorization": "Bearer t"})
    assert bound.fixed is None
    rng = random.Random(0)
    first, second, third = (bound.render(rng) for _ in range(3))
    head, _, body = first.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /api/clients/7/notes?q=a%20b%26c HTTP/1.1"
    assert {"Host: 127.0.0.1:8000", "Authorization: Bearer t", "X-Trace: t-7"} <= set(lines)
    assert "Content-Type: application/json" in lines and "Content-Length: 8" in lines
    assert body == b'{"id":7}'
    assert b"/api/clients/8/" in second and b"/api/clients/7/" in third  # sequential, wraps


def test_static_templates_are_built_once_and_fixed_requests_take_headers() -> None:
    target = check_loopback_url("http://127.0.0.1:8000/", "test")
    bound = RequestTemplate(target, "GET", StringTemplate.compile("/a")).bind()
    assert bound.fixed is not None and bound.fixed.startswith(b"GET /a HTTP/1.1\r\n")
    raw = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
    with_cookie = FixedRequest(raw).bind({"Cookie": "a=b"}).render(random.Random())
    assert (
        with_cookie == b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nCookie: a=b\r\n\r\nhi"
    )
    assert FixedRequest(raw).bind().render(random.Random()) == raw


def test_sources() -> None:
    rng = random.Random(5)
    assert {RangeSource(1, 3).next(rng) for _ in range(200)} == {1, 2, 3}
    seq = ListSource(["a", "b"], sequential=True)
    assert [seq.next(rng) for _ in range(5)] == ["a", "b", "a", "b", "a"]
    with pytest.raises(TemplateError):
        RangeSource(3, 1)
    with pytest.raises(TemplateError):
        ListSource([])


# -- shares and the quick form ---------------------------------------------------------------
def test_share_splits_connections_and_users_and_keeps_one_schedule(tmp_path: Path) -> None:
    scenario, _ = load_scenario(EXAMPLES / "clients-api.yaml")
    parts = [share(scenario, i, 3) for i in range(3)]
    assert all(isinstance(p.model, OpenModel) for p in parts)
    # each process keeps the whole schedule and sends its part of it (see test_load_schedule)
    assert all(p.model.schedule() == scenario.model.schedule() for p in parts)
    assert all(p.seed == scenario.seed for p in parts)
    closed, _ = load_scenario(EXAMPLES / "closed-users.yaml")
    users = [share(closed, i, 3).model for i in range(3)]
    assert all(isinstance(m, ClosedModel) for m in users)
    assert sum(m.users for m in users if isinstance(m, ClosedModel)) == 50


def test_quick_form_builds_a_scenario() -> None:
    opts = {
        "rate": 50.0, "users": None, "duration": None, "stage": ["1s:10", "2s:100"],
        "connections": 4, "timeout": "2s", "method": "post", "header": ["X-A: 1"],
        "body": '{"a": {"b": 1}}', "body_file": None, "ramp_up": None, "think": None,
        "think_dist": None, "seed": 3,
    }  # fmt: skip
    scenario = quick_scenario("http://127.0.0.1:9/p/{raw}?q=1", opts)
    assert isinstance(scenario.model, OpenModel)
    assert scenario.duration_s == 3.0 and scenario.model.connections == 4
    (op,) = compile_operations(scenario, Path("."))
    raw = op.request.bind().render(random.Random())
    assert raw.startswith(b"POST /p/{raw}?q=1 HTTP/1.1\r\n") and b"X-A: 1\r\n" in raw
    assert raw.endswith(b'\r\n\r\n{"a": {"b": 1}}')
    bad = dict(opts, stage=None, rate=-1.0)
    with pytest.raises(ValueError, match="--rate"):
        quick_scenario("http://127.0.0.1:9/", bad)
    with pytest.raises(ValueError, match="--stage"):
        quick_scenario("http://127.0.0.1:9/", dict(opts, stage=["fast"]))
    with pytest.raises(ValueError, match="-H"):
        quick_scenario("http://127.0.0.1:9/", dict(opts, header=["nocolon"]))


def test_arrival_kind_and_whole_run_thresholds_are_checked_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "base_url: http://127.0.0.1:9\n"
        "model: {type: open, rate: 10, duration: 1s, arrival: bursty}\n"
        "operations:\n"
        "  - path: /\n"
        "    thresholds: [dropped_rate < 1%]\n"
        "thresholds:\n"
        "  - {expr: dropped_rate < 1%, operation: GET /}\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    problems = info.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:2: model.arrival: ") and "poisson" in problems[0]
    assert problems[1].startswith(f"{path}:4: operations[0]: ") and "whole run" in problems[1]
    assert problems[2].startswith(f"{path}:7: thresholds[0]: ") and "whole run" in problems[2]
