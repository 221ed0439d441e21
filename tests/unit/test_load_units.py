"""Unit tests of the load engine's pure parts: durations, rate schedules, URL checks, errors."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import math
import ssl

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.load import ERROR_KINDS, LoadResult, RateSchedule, ThinkTime, classify_error
from crisisctl.load.client import (
    BadResponse,
    ClosedEarly,
    RequestError,
    build_request,
    parse_target,
)
from crisisctl.stats import LatencyHistogram
from crisisctl.units import parse_duration

# -- durations -------------------------------------------------------------------------------
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=999),
    st.sampled_from(sorted(UNITS)),
    st.booleans(),
)
def test_parse_duration_property(whole: int, frac: int, unit: str, spaced: bool) -> None:
    text = f"{whole}.{frac:03d}" + (" " if spaced else "") + unit
    expected = (whole + frac / 1000) * UNITS[unit]
    assert math.isclose(parse_duration(text), expected, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(parse_duration(text.upper()), expected, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("500ms", 0.5), ("7", 7), ("3d", 259200), ("1.5 D", 129600)],
)
def test_parse_duration_examples(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@given(st.text().filter(lambda s: not any(c.isdigit() for c in s)))
def test_parse_duration_rejects_non_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-1s", "1 w", "1dd", "1e3", "s", "1..2s", "2m30s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- rate schedules --------------------------------------------------------------------------
def test_constant_schedule_times() -> None:
    schedule = RateSchedule.constant(100, 2.0)
    times = list(schedule.send_times())
    assert len(times) == 200 == schedule.expected()
    assert times[:3] == pytest.approx([0.0, 0.01, 0.02])
    assert schedule.rate_at(1.5) == 100 and schedule.rate_at(2.0) == 0


def test_ramp_schedule_follows_the_integral() -> None:
    schedule = RateSchedule.from_stages(0, [(2.0, 100), (1.0, 100), (1.0, 0)])
    assert schedule.duration_s == 4.0
    assert schedule.expected() == pytest.approx(100 + 100 + 50)
    assert schedule.rate_at(1.0) == pytest.approx(50)
    assert schedule.rate_at(3.5) == pytest.approx(50)
    times = list(schedule.send_times())
    assert len(times) == 250
    assert times == sorted(times) and times[-1] < 4.0
    # request k of the ramp is due when 25 t² = k
    for k in (1, 25, 64, 99):
        assert times[k] == pytest.approx(math.sqrt(k / 25))
    assert times[100] == pytest.approx(2.0) and times[150] == pytest.approx(2.5)


@given(
    st.floats(min_value=0, max_value=500),
    st.lists(
        st.tuples(st.floats(min_value=0.01, max_value=5), st.floats(min_value=0, max_value=500)),
        min_size=1,
        max_size=4,
    ),
)
def test_schedule_counts_match_the_area(start: float, stages: list[tuple[float, float]]) -> None:
    schedule = RateSchedule.from_stages(start, stages)
    times = list(schedule.send_times())
    assert abs(len(times) - schedule.expected()) <= 1
    assert all(0 <= t <= schedule.duration_s for t in times)
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(times))


def test_schedule_rejects_bad_stages() -> None:
    with pytest.raises(ValueError):
        RateSchedule.from_stages(10, [])
    with pytest.raises(ValueError):
        RateSchedule.from_stages(10, [(1.0, -5)])
    with pytest.raises(ValueError):
        RateSchedule.from_stages(10, [(0.0, 5)])


def test_think_time() -> None:
    import random

    rng = random.Random(3)
    assert ThinkTime("constant", 0.2).draw(rng) == 0.2
    assert all(0.1 <= ThinkTime("uniform", 0.1, 0.3).draw(rng) <= 0.3 for _ in range(100))
    mean = sum(ThinkTime("exponential", 0.05).draw(rng) for _ in range(4000)) / 4000
    assert mean == pytest.approx(0.05, rel=0.1)
    with pytest.raises(ValueError):
        ThinkTime("gaussian", 1.0)


# -- loopback check and requests -------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/", "http://127.9.8.7/x?y=1", "http://[::1]:81/", "http://localhost/"],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    target = parse_target(url)
    assert target.connect_host in ("127.0.0.1", "127.9.8.7", "::1")


@pytest.mark.parametrize(
    "url",
    ["http://example.com/", "http://10.0.0.1/", "http://[::2]/", "http://localhost.evil.com/"],
)
def test_other_hosts_are_accepted_and_connect_by_name(url: str) -> None:
    target = parse_target(url)
    assert target.connect_host == target.host and not target.is_tls


def test_https_targets_verify_with_sni_by_default() -> None:
    target = parse_target("https://api.test.local/x")
    assert target.is_tls and target.port == 443 and target.server_hostname == "api.test.local"
    assert target.ssl is not None and target.ssl.check_hostname


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:80", "http:///x"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"http://|no host"):
        parse_target(url)


def test_build_request() -> None:
    target = parse_target("http://127.0.0.1:8080/a?b=1")
    raw = build_request(target, "post", b"abc", {"X-Test": "1"})
    assert raw.startswith(b"POST /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"Content-Length: 3\r\n" in raw and raw.endswith(b"\r\n\r\nabc")
    with pytest.raises(ValueError):
        build_request(target, "GET", None, {"X": "a\r\nb"})
    with pytest.raises(ValueError):
        build_request(target, "GET /evil")


# -- error classification --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(), "refused"),
        (OSError(errno.ECONNREFUSED, "refused"), "refused"),
        (OSError(errno.EHOSTUNREACH, "unreachable"), "refused"),
        (ConnectionResetError(), "reset"),
        (BrokenPipeError(), "reset"),
        (ClosedEarly(True), "reset"),
        (asyncio.IncompleteReadError(b"", 10), "reset"),
        (TimeoutError(), "timeout"),
        (BadResponse("x"), "bad_response"),
        (httptools.HttpParserError("x"), "bad_response"),
        (RequestError("timeout"), "timeout"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls"),
        (ssl.SSLError(1, "tlsv13 alert certificate required"), "tls"),
        (OSError(errno.ENOSPC, "full"), "other"),
        (RuntimeError("boom"), "other"),
    ],
)
def test_classify_error(exc: BaseException, kind: str) -> None:
    assert classify_error(exc) == kind
    assert kind in ERROR_KINDS


# -- result shape ----------------------------------------------------------------------------
def test_to_dict_shape() -> None:
    result = LoadResult(
        model="open", url="http://127.0.0.1/", duration_s=2.0, timeout_s=1.0, target_rate=10,
        latency_uncorrected=LatencyHistogram(),
    )  # fmt: skip
    result.requests = 20
    result.completed = 19
    result.errors["timeout"] = 1
    result.status_counts = {200: 18, 503: 1}
    for us in (1500, 2500):
        result.latency.record_us(us)
        assert result.latency_uncorrected is not None
        result.latency_uncorrected.record_us(us // 2)
    result.per_second = [
        {"second": 0, "requests": 20, "errors": 1, "p50_ms": 1.5, "p95_ms": 2.5, "p99_ms": 2.5}
    ]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status_counts"] == {"200": 18, "503": 1}
    assert data["errors"] == {
        "refused": 0,
        "reset": 0,
        "timeout": 1,
        "bad_response": 0,
        "tls": 0,
        "other": 0,
    }
    assert data["requests_per_second"] == 10.0 and data["error_total"] == 1
    assert data["latency_ms"]["p50"] == pytest.approx(1.5, rel=1e-3)
    assert data["latency_ms"]["max"] == 2.5
    assert data["latency_uncorrected_ms"]["max"] == 1.25
    assert set(data["per_second"][0]) == {
        "second",
        "requests",
        "errors",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    }
    for key in data:
        assert key == key.lower() and " " not in key and "-" not in key
    assert not result.unreachable
    full = result.to_dict(histograms=True)
    assert LatencyHistogram.from_dict(full["histograms"]["latency"]).count == 2
