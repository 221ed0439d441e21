"""What the validation suite reads from an answer beyond its status, and its burst's pacing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.validate.errors import wrong_method
from crisisctl.validate.exchange import (
    Exchange,
    allowed_methods,
    refusal_reason,
    retry_after_seconds,
)
from crisisctl.validate.parallel import (
    MAX_SPAN_S,
    MIN_SPAN_S,
    jittered,
    pause_for,
    span_for,
)

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


@given(st.integers(0, 10**6))
def test_retry_after_delta_seconds(seconds: int) -> None:
    assert retry_after_seconds(str(seconds)) == float(seconds)
    assert retry_after_seconds(f" {seconds} ") == float(seconds)


def test_retry_after_http_date_and_garbage() -> None:
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, NOW) == 90.0
    earlier = format_datetime(NOW - timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(earlier, NOW) == 0.0
    for bad in (None, "", "soon", "-5", "1.5"):
        assert retry_after_seconds(bad, NOW) is None


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [({"content-type": "application/json"}, b'{"reason": "queue_full"}', "queue_full"),
     ({"x-crisis-reason": "overloaded", "content-type": "application/json"},
      b'{"reason": "queue_full"}', "overloaded"),                   # the header wins
     ({"content-type": "text/html"}, b'{"reason": "queue_full"}', None),
     ({"content-type": "application/json"}, b'{"error": "busy"}', None),
     ({"content-type": "application/json"}, b'["queue_full"]', None),
     ({"content-type": "application/json"}, b'{"reason": 3}', None),
     ({"content-type": "application/json"}, b"{broken", None),
     ({"content-type": "application/json"},
      b'{"reason": "queue_full", "pad": "' + b"x" * 70_000 + b'"}', None)],  # too big to read
)  # fmt: skip
def test_refusal_reason(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    assert refusal_reason(httpx.Headers(headers), body) == reason


def test_allow_header_and_the_wrong_method() -> None:
    assert allowed_methods(httpx.Headers({"allow": "get, HEAD,POST "})) == ("GET", "HEAD", "POST")
    assert allowed_methods(httpx.Headers({})) == ()
    assert wrong_method(()) == "DELETE"
    assert wrong_method(("GET", "HEAD")) == "DELETE"
    assert wrong_method(("GET", "DELETE")) == "PATCH"
    assert wrong_method(("GET", "DELETE", "PATCH")) == "PUT"


def test_span_follows_the_service_time_within_bounds() -> None:
    def alone(*seconds: float) -> list[Exchange]:
        return [Exchange(0.0, s, 200) for s in seconds]

    assert span_for([]) == MIN_SPAN_S
    assert span_for(alone(0.001, 0.002)) == MIN_SPAN_S
    assert span_for(alone(0.5, 0.6, 0.7)) == pytest.approx(1.8)
    assert span_for(alone(9.0)) == MAX_SPAN_S
    # refusals say nothing of the service time
    assert span_for([*alone(0.5), Exchange(0.0, 3.0, 503)]) == pytest.approx(1.5)


@given(st.integers(1, 256), st.integers(1, 5000), st.floats(1.0, 5.0), st.randoms())
def test_the_pause_spreads_the_burst(
    connections: int, total: int, span: float, rng: random.Random
) -> None:
    pause = pause_for(connections, total, span)
    # refused at once every time, the workers need at least the span for `total` requests
    assert pause >= 0.01 and connections * span / pause <= total + 1e-6
    assert 0.5 * pause <= jittered(pause, rng) <= 1.5 * pause
