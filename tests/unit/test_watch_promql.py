"""PromQL building blocks: numbers without float noise, durations, names, promtool notation."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.watch.promql import (
    DIGITS,
    duration,
    label_name,
    metric_name,
    number,
    selector,
    source_of,
)
from crisisctl.watch.promsynth import compact_values

_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNIT_S = {"d": 86_400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
finite = st.floats(allow_nan=False, allow_infinity=False)


def test_products_of_decimal_inputs_print_as_people_write_them() -> None:
    assert number(0.1 * 14.4) == "1.44"
    assert number(6 * (1 - 0.999)) == "0.006"
    assert number(14.4 * (1 - 0.999)) == "0.0144"
    assert number(14.0) == "14"
    assert number(2e9) == "2000000000"
    assert number(1e-5) == "1e-5"
    assert number(-0.0) == "0"


@given(finite)
def test_a_number_reads_back_as_its_rounded_value_and_round_trips(value: float) -> None:
    text = number(value)
    assert float(text) == float(f"{value:.{DIGITS}g}")
    assert number(float(text)) == text
    significant = re.sub(r"e.*$", "", text).lstrip("-").replace(".", "").strip("0")
    assert len(significant) <= DIGITS


short = st.tuples(st.integers(min_value=1, max_value=9999), st.integers(min_value=-6, max_value=6))


@given(short, short)
def test_a_product_of_short_decimals_prints_as_the_exact_decimal(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    x, y = Decimal(a[0]).scaleb(a[1]), Decimal(b[0]).scaleb(b[1])
    printed = number(float(x) * float(y))
    assert Decimal(printed) == x * y  # 0.1 × 14.4 is 1.44, not 1.4400000000000002


@given(st.text(min_size=1, max_size=40))
def test_any_rule_name_becomes_a_valid_metric_and_label_name(name: str) -> None:
    assert _METRIC.match(metric_name(name))
    assert _LABEL.match(label_name(name))


@given(st.text(alphabet="abcxyz_:.-09", min_size=1), st.text())
def test_a_selector_quotes_any_label_value(label: str, value: str) -> None:
    text = selector("up", {label: value})
    inner = text[len("up{") : -1]
    name, _, quoted = inner.partition("=")
    assert _LABEL.match(name)
    assert quoted.startswith('"') and quoted.endswith('"')
    body, unescaped, i = quoted[1:-1], "", 0
    while i < len(body):
        if body[i] == "\\":
            unescaped += {"n": "\n"}.get(body[i + 1], body[i + 1])
            i += 2
        else:
            assert body[i] not in '"\n'
            unescaped += body[i]
            i += 1
    assert unescaped == value


@given(st.integers(min_value=1, max_value=10 * 86_400_000))
def test_a_duration_adds_back_up_to_its_seconds(ms: int) -> None:
    text = duration(ms / 1000)
    assert "".join(f"{n}{u}" for n, u in _DURATION.findall(text)) == text
    assert math.isclose(sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text)), ms / 1000)


def test_durations_read_like_prometheus_writes_them() -> None:
    assert duration(300) == "5m"
    assert duration(5400) == "1h30m"
    assert duration(259_200) == "3d"
    assert duration(1.5) == "1s500ms"


def _expand(notation: str) -> list[float]:
    out: list[float] = []
    for token in notation.split():
        match = re.fullmatch(r"(-?[0-9.e+-]+?)([+-])([0-9.e+-]+)x(\d+)", token)
        if match is None:
            out.append(float(token))
            continue
        start, sign, step, n = match.groups()
        delta = float(step) * (1 if sign == "+" else -1)
        out += [float(start) + i * delta for i in range(int(n) + 1)]
    return out


@given(st.lists(st.integers(min_value=-1000, max_value=10**7), max_size=60))
def test_promtool_notation_expands_back_to_the_values(values: list[int]) -> None:
    floats = [float(v) for v in values]
    assert _expand(compact_values(floats)) == floats


def test_watch_names_map_to_the_guards_own_families() -> None:
    errors = source_of("guard_errors_total")
    assert errors is not None
    assert errors.over("increase", 60, {"service": "api"}) == (
        "sum without (route, method, status_class) "
        '(increase(crisisctl_http_requests_total{service="api",status_class="5xx"}[1m]))'
    )
    p95 = source_of("guard_latency_p95_ms")
    assert p95 is not None and "histogram_quantile(0.95" in p95.value({})
    assert "crisisctl_http_request_duration_seconds_bucket" in p95.value({})
    assert source_of("probe_success") is None
    assert source_of("my_queue_depth") is not None
