"""`crisisctl validate`'s options and helpers: bad input gets one sentence, bounds hold."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.cli.validate import _skips
from crisisctl.validate.checks import ResourceLimits
from crisisctl.validate.options import MAX_BURST, ValidateOptions, split_route
from crisisctl.validate.report import CHECK_NAMES
from crisisctl.validate.suite import _delta


def test_defaults_are_valid_and_follow_the_seeds() -> None:
    options = ValidateOptions(path="/")
    options.check()
    assert options.target_ms == 2000.0 and options.required_rate == 90.0
    assert options.burst_target == "/" and options.concurrency_target == "/"
    settings = options.settings()
    assert settings["max_cpu_percent"] == 90.0 and settings["max_rss_mb"] == 2048.0


def test_paths_fall_back_in_order() -> None:
    options = ValidateOptions(path="/a", burst_path="/b")
    assert (options.burst_target, options.concurrency_target) == ("/b", "/b")
    options = ValidateOptions(path="/a", concurrency_path="/c")
    assert (options.burst_target, options.concurrency_target) == ("/a", "/c")


@pytest.mark.parametrize(
    ("change", "message"),
    [({"path": "api"}, "--path must start with '/'"),
     ({"path": "/a b"}, "--path must start with '/'"),
     ({"burst_path": "/a b"}, "--burst-path must be a path"),
     ({"concurrency_path": "GET"}, "--concurrency-path must be a path"),
     ({"prefix": "/_crisis/"}, "--prefix"),
     ({"skip": frozenset({"speed"})}, "unknown check 'speed'"),
     ({"skip": frozenset(CHECK_NAMES)}, "every check is skipped"),
     ({"target_ms": 0.0}, "--target-ms"),
     ({"timeout_s": float("nan")}, "--timeout"),
     ({"burst": MAX_BURST + 1}, "--burst must be between 1 and 5000"),
     ({"concurrency": 0}, "--concurrency"),
     ({"baseline_requests": 0}, "--baseline-requests"),
     ({"load_rate": 1e6}, "--load-rate must be at most"),
     ({"required_rate": 101.0}, "--required-rate"),
     ({"limits": ResourceLimits(max_rss_mb=-1.0)}, "--max-rss-mb"),
     ({"budget_s": 12.0, "load_duration_s": 10.0}, "at least --load-duration + 5 s")],
)  # fmt: skip
def test_invalid_options_say_what_to_change(change: dict[str, Any], message: str) -> None:
    options = dataclasses.replace(ValidateOptions(path="/"), **change)
    with pytest.raises(ValueError) as info:
        options.check()
    text = str(info.value)
    assert message in text and text.endswith(".")


@pytest.mark.parametrize(
    ("text", "route"),
    [("/a", ("GET", "/a")),
     ("POST /api/scans", ("POST", "/api/scans")),
     ("patch  /x?y=1", ("PATCH", "/x?y=1"))],
)  # fmt: skip
def test_split_route(text: str, route: tuple[str, str]) -> None:
    assert split_route(text, "--burst-path") == route


@pytest.mark.parametrize("text", ["", "api", "POST", "P0ST /a", "POST /a /b", " /a", "POST api"])
def test_split_route_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--burst-path must be a path starting with '/'"):
        split_route(text, "--burst-path")


def test_burst_routes_follow_the_options() -> None:
    options = ValidateOptions(path="/a", burst_path="POST /scans")
    options.check()
    assert options.burst_route == ("POST", "/scans")
    assert options.concurrency_route == ("POST", "/scans")
    options = dataclasses.replace(options, concurrency_path="/work")
    assert options.concurrency_route == ("GET", "/work")


def test_short_budget_is_fine_without_the_load() -> None:
    options = ValidateOptions(path="/", budget_s=3.0, skip=frozenset({"load_resilience"}))
    options.check()


def test_skip_parsing() -> None:
    assert _skips(["load_resilience,rate-limiting", " monitoring ", ""]) == {
        "load_resilience",
        "rate_limiting",
        "monitoring",
    }


@given(
    st.dictionaries(st.sampled_from(["rate_limited", "queue_full", "timeout"]), st.integers(0, 99)),
    st.dictionaries(st.sampled_from(["rate_limited", "queue_full", "timeout"]), st.integers(0, 99)),
)
def test_delta_reports_only_increases(before: dict[str, int], extra: dict[str, int]) -> None:
    after = {k: before.get(k, 0) + extra.get(k, 0) for k in set(before) | set(extra)}
    delta = _delta(before, after)
    assert delta == {k: v for k, v in extra.items() if v > 0}
    assert _delta(None, None) == {}
