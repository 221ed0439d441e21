"""GuardConfig and friends: limit-string parsing, validation errors, from_dict."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.guard import (
    BreakerConfig,
    ConcurrencyConfig,
    EmergencyConfig,
    Guard,
    GuardConfig,
    GuardConfigError,
    Priority,
    RateLimit,
    RouteRule,
    parse_limits,
)
from crisisctl.guard.types import Receive, Scope, Send

# -- parse_limits ------------------------------------------------------------------------------


def test_parse_stacked_limits() -> None:
    assert parse_limits("10/second;300/minute") == (RateLimit(10, 1.0), RateLimit(300, 60.0))


def test_parse_per_with_a_multiple() -> None:
    assert parse_limits("5 per 10 seconds") == (RateLimit(5, 10.0),)


def test_parse_short_unit() -> None:
    assert parse_limits("100/s") == (RateLimit(100, 1.0),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1/m", (RateLimit(1, 60.0),)),
        ("2/hour", (RateLimit(2, 3600.0),)),
        ("3 per day", (RateLimit(3, 86400.0),)),
        ("  7 / 2 MIN  ", (RateLimit(7, 120.0),)),
        ("10/second, 20/minute", (RateLimit(10, 1.0), RateLimit(20, 60.0))),
        ("10/second;;", (RateLimit(10, 1.0),)),
    ],
)
def test_parse_variants(text: str, expected: tuple[RateLimit, ...]) -> None:
    assert parse_limits(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("abc", "'abc'"),
        ("10/fortnight", "'10/fortnight'"),
        ("10/second;ten/minute", "'ten/minute'"),
        ("10 / 5", "'10 / 5'"),
        ("-1/second", "'-1/second'"),
        ("10/1.5 seconds", "'10/1.5 seconds'"),
        ("10/ms", "'10/ms'"),
    ],
)
def test_parse_rejects_bad_strings_with_an_example(text: str, fragment: str) -> None:
    with pytest.raises(GuardConfigError) as info:
        parse_limits(text)
    message = str(info.value)
    assert fragment in message  # names the offending part
    assert "10/second" in message  # and shows how to write it


@pytest.mark.parametrize("text", ["0/second", "10/0 seconds"])
def test_parse_rejects_zero(text: str) -> None:
    with pytest.raises(GuardConfigError, match="must be ≥ 1"):
        parse_limits(text)


@pytest.mark.parametrize("text", ["", "   ", " ; , "])
def test_parse_rejects_empty(text: str) -> None:
    with pytest.raises(GuardConfigError, match="empty rate limit"):
        parse_limits(text)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_limits("nope")


UNIT_SECONDS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip

one_limit = st.tuples(
    st.integers(min_value=1, max_value=10**9),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**4)),
    st.sampled_from(sorted(UNIT_SECONDS)),
    st.sampled_from(["/", " / ", " per ", "per"]),
    st.sampled_from([str.lower, str.upper, str.title]),
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(one_limit, min_size=1, max_size=5), joiner=st.sampled_from([";", ", "]))
def test_any_valid_limit_string_round_trips(
    parts: list[tuple[int, int | None, str, str, Any]], joiner: str
) -> None:
    texts = []
    expected = []
    for amount, multiple, unit, sep, case in parts:
        count = "" if multiple is None else f"{multiple} "
        texts.append(f"{amount}{sep}{count}{case(unit)}")
        expected.append(RateLimit(amount, float((multiple or 1) * UNIT_SECONDS[unit])))
    parsed = parse_limits(joiner.join(texts))
    assert parsed == tuple(expected)
    # the canonical forms parse back to the same limits
    assert parse_limits(";".join(f"{lim.amount}/{int(lim.period)} s" for lim in parsed)) == parsed


def test_rate_limit_names() -> None:
    assert RateLimit(10, 1.0).name == "10-per-1s"
    assert str(RateLimit(300, 60.0)) == "300/60s"
    assert RateLimit(5, 0.5).name == "5-per-0.5s"


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pattern": "api/x"}, "must start with '/'"),
        ({"pattern": "/x", "rate_limit": "lots"}, "invalid rate limit 'lots'"),
        ({"pattern": "/x", "emergency_rate_limit": "1/week"}, "invalid rate limit '1/week'"),
        ({"pattern": "/x", "strategy": "leaky-bucket"}, "unknown strategy 'leaky-bucket'"),
        ({"pattern": "/x", "timeout_s": 0}, "timeout_s must be > 0"),
        ({"pattern": "/x", "priority": "urgent"}, "unknown priority 'urgent'.*low, normal"),
    ],
)
def test_route_rule_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(GuardConfigError, match=match):
        RouteRule(**kwargs)


def test_route_rule_normalises_priority_and_methods() -> None:
    rule = RouteRule("/x", methods=("get", "Post"), priority="low")
    assert rule.priority is Priority.LOW
    assert rule.methods == ("GET", "POST")
    assert RouteRule("/x", priority=2).priority is Priority.HIGH
    assert RouteRule("/x", priority=" Critical ").priority is Priority.CRITICAL


def test_route_rule_accepts_a_single_method_string() -> None:
    # as written in YAML/JSON ("methods: POST"); must not become ('P', 'O', 'S', 'T')
    assert RouteRule("/x", methods="post").methods == ("POST",)  # type: ignore[arg-type]
    assert RouteRule("/x", methods="GET, head").methods == ("GET", "HEAD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix": "_crisis"}, "prefix '_crisis' must start with '/'"),
        ({"prefix": "/_crisis/"}, "not end with '/'"),
        ({"rate_limit": "fast"}, "invalid rate limit 'fast'"),
        ({"strategy": "fixed-window"}, "unknown strategy 'fixed-window'"),
        ({"storage": "mysql://db"}, "unknown storage 'mysql://db'"),
        ({"storage_timeout_s": 0}, "storage_timeout_s must be > 0"),
        ({"timeout_s": -1}, "timeout_s must be > 0"),
        ({"max_route_labels": 0}, "max_route_labels must be ≥ 1"),
        ({"trusted_proxies": ("10.0.0.0/8", "proxy.local")}, "'proxy.local' is not an IP"),
    ],
)
def test_guard_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(GuardConfigError, match=match):
        GuardConfig(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (BreakerConfig, {"window_s": 0.5}, "window_s must be at least 1"),
        (BreakerConfig, {"min_calls": 0}, "min_calls"),
        (BreakerConfig, {"failure_ratio": 0}, "failure_ratio"),
        (BreakerConfig, {"failure_ratio": 1.5}, "failure_ratio"),
        (BreakerConfig, {"slow_call_ratio": 0}, "slow_call_ratio"),
        (BreakerConfig, {"slow_call_s": 0}, "slow_call_s"),
        (BreakerConfig, {"open_s": 0}, "open_s"),
        (BreakerConfig, {"half_open_calls": 0}, "half_open_calls"),
        (ConcurrencyConfig, {"mode": "magic"}, "adaptive, static or off"),
        (ConcurrencyConfig, {"min_limit": 0}, "min_limit"),
        (ConcurrencyConfig, {"min_limit": 10, "max_limit": 5, "limit": 7}, "max_limit"),
        (ConcurrencyConfig, {"limit": 2000}, r"\[min_limit, max_limit\]"),
        (ConcurrencyConfig, {"queue_size": -1}, "queue_size"),
        (ConcurrencyConfig, {"queue_timeout_s": 0}, "queue timeouts"),
        (ConcurrencyConfig, {"queue_target_s": 0}, "queue timeouts"),
        (ConcurrencyConfig, {"tolerance": 0.9}, "tolerance"),
        (ConcurrencyConfig, {"smoothing": 0}, "smoothing"),
        (EmergencyConfig, {"concurrency_factor": 0}, "concurrency_factor"),
        (EmergencyConfig, {"rate_factor": 1.1}, "rate_factor"),
        (EmergencyConfig, {"ramp_s": -1}, "ramp_s"),
    ],
)
def test_section_errors(cls: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(GuardConfigError, match=match):
        cls(**kwargs)


def test_defaults_are_valid_and_sequences_become_tuples() -> None:
    config = GuardConfig(
        routes=[RouteRule("/a")],  # type: ignore[arg-type]
        trusted_proxies=["127.0.0.1", "10.0.0.0/8"],  # type: ignore[arg-type]
        critical_paths=["/ping"],  # type: ignore[arg-type]
    )
    assert config.routes == (RouteRule("/a"),)
    assert config.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert config.critical_paths == ("/ping",)
    assert GuardConfig().concurrency.mode == "adaptive"
    assert GuardConfig().rate_limit is None


# -- from_dict ---------------------------------------------------------------------------------


def test_from_dict_builds_nested_sections() -> None:
    config = GuardConfig.from_dict(
        {
            "rate_limit": "100/second",
            "strategy": "sliding-window",
            "concurrency": {"mode": "static", "limit": 8, "queue_size": 4},
            "breaker": {"window_s": 5, "min_calls": 3, "open_s": 2},
            "emergency": {"shed_priority": "normal", "ramp_s": 10},
            "routes": [
                {"pattern": "/api/scans", "methods": ["post"], "rate_limit": "2/minute"},
                {"pattern": "/api/reports/{id}", "priority": "low", "timeout_s": 10},
                RouteRule("/already/built"),
            ],
            "trusted_proxies": ["127.0.0.1"],
            "critical_paths": ["/ping"],
        }
    )
    assert config.concurrency == ConcurrencyConfig(mode="static", limit=8, queue_size=4)
    assert config.breaker == BreakerConfig(window_s=5, min_calls=3, open_s=2)
    assert config.emergency.shed_priority is Priority.NORMAL
    assert config.emergency.ramp_s == 10
    assert config.routes[0] == RouteRule("/api/scans", methods=("POST",), rate_limit="2/minute")
    assert config.routes[1].priority is Priority.LOW
    assert config.routes[2] == RouteRule("/already/built")
    assert config.trusted_proxies == ("127.0.0.1",)
    assert config.critical_paths == ("/ping",)
    assert config.strategy == "sliding-window"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"rate_limt": "1/s"}, "invalid guard configuration.*rate_limt"),
        ({"concurrency": {"limt": 3}}, "invalid guard configuration.*limt"),
        ({"routes": [{"path": "/x"}]}, "invalid guard configuration"),
        ({"breaker": {"min_calls": 0}}, "min_calls"),
        ({"emergency": {"shed_priority": "sometimes"}}, "unknown priority 'sometimes'"),
        ({"emergency": {"shed_priority": "critical"}}, "shed_priority must be below critical"),
        ({"routes": [{"pattern": "/x", "rate_limit": "often"}]}, "invalid rate limit 'often'"),
    ],
)
def test_from_dict_errors(data: dict[str, Any], match: str) -> None:
    with pytest.raises(GuardConfigError, match=match):
        GuardConfig.from_dict(data)


async def _app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
    raise AssertionError("not called")


def test_guard_accepts_fields_as_keywords() -> None:
    guard = Guard(_app, rate_limit="5/second", concurrency={"mode": "off"}, token="")
    assert guard.config.rate_limit == "5/second"
    assert guard.concurrency is None
    assert guard.token is None  # "" disables the mode endpoint
    guard = Guard(_app, GuardConfig(rate_limit="1/s"), timeout_s=3.0, token="t")
    assert guard.config.rate_limit == "1/s"
    assert guard.config.timeout_s == 3.0
    assert guard.token == b"t"
    # sections given as plain data next to a config object are converted too
    guard = Guard(_app, GuardConfig(rate_limit="1/s"), breaker={"min_calls": 7}, token="")
    assert guard.config.breaker.min_calls == 7
    assert guard.config.rate_limit == "1/s"
    with pytest.raises(GuardConfigError):
        Guard(_app, rate_limit="whenever")
    with pytest.raises(GuardConfigError):
        Guard(_app, GuardConfig(), breaker={"no_such_field": 1})


def test_guard_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRISISCTL_GUARD_TOKEN", "from-env")
    assert Guard(_app).token == b"from-env"
    assert Guard(_app, token="").token is None
    monkeypatch.delenv("CRISISCTL_GUARD_TOKEN")
    assert Guard(_app).token is None
