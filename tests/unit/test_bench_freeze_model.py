"""The freeze server's analytic latency distribution is the truth the open model is judged by.

`FreezeModel.quantile` (benchmarks/apps/freeze_server.py) must match a simulation of the
server's rule at a fixed arrival rate with a random phase, for any service time, freeze and
period; `cdf` must invert `quantile`; and the real server (a thread pair on 127.0.0.1) must
answer each request after the latency it designed for it.
"""

from __future__ import annotations

import http.client
import random
import statistics
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.freeze_server import FreezeModel, FreezeServer


def simulated_quantile(model: FreezeModel, rate: float, periods: int, q: float, seed: int) -> float:
    """The q-quantile of R over arrivals every 1/rate s, from a random phase, for `periods`."""
    rng = random.Random(seed)
    start = rng.uniform(0, model.period_s)
    n = round(rate * model.period_s * periods)
    samples = sorted(model.response_time(start + i / rate) for i in range(n))
    return samples[max(0, min(n - 1, int(q * n + 0.5) - 1))]


@settings(max_examples=60, deadline=None)
@given(
    service_ms=st.floats(0.5, 50),
    freeze_frac=st.floats(0.0, 0.6),
    period_s=st.floats(0.2, 2.0),
    q=st.sampled_from([0.5, 0.75, 0.9, 0.95, 0.99, 0.999]),
    seed=st.integers(0, 10_000),
)
def test_the_analytic_quantile_matches_a_simulation_of_the_server_at_a_fixed_rate(
    service_ms: float, freeze_frac: float, period_s: float, q: float, seed: int
) -> None:
    model = FreezeModel(service_ms / 1000, freeze_frac * period_s, period_s)
    rate = 2000.0
    simulated = simulated_quantile(model, rate, periods=20, q=q, seed=seed)
    # the arrival grid (1/rate) moves a quantile by at most one step either way
    assert simulated == pytest.approx(model.quantile(q), abs=2.0 / rate + 1e-9)


def test_the_issue_settings_give_the_documented_quantiles() -> None:
    model = FreezeModel(0.020, 0.200, 1.0)
    got = [round(model.quantile(q) * 1000, 6) for q in (0.5, 0.9, 0.99, 0.999)]
    assert got == [20.0, 120.0, 210.0, 219.0]


@given(q=st.floats(0.01, 0.999), freeze_frac=st.floats(0.05, 0.9))
def test_the_cdf_inverts_the_quantile_in_the_tail(q: float, freeze_frac: float) -> None:
    model = FreezeModel(0.01, freeze_frac, 1.0)
    x = model.quantile(q)
    if q > 1 - freeze_frac:
        assert model.cdf(x) == pytest.approx(q, abs=1e-9)
    else:
        assert x == model.service_s and model.cdf(x) >= q - 1e-12


def test_a_request_arriving_in_a_freeze_waits_for_its_end_then_the_service_time() -> None:
    model = FreezeModel(0.02, 0.2, 1.0)
    assert model.response_time(0.05) == pytest.approx(0.02 + 0.15)
    assert model.response_time(0.5) == pytest.approx(0.02)
    assert model.response_time(1.05) == pytest.approx(0.17)


def test_the_server_answers_each_request_after_its_designed_latency() -> None:
    server = FreezeServer(FreezeModel(0.015, 0.06, 0.2))
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        errors, designed = [], []
        for _ in range(25):
            start = time.monotonic()
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.read() == b"ok"
            took = time.monotonic() - start
            want = int(response.getheader("X-Designed-Us") or "0") / 1e6
            designed.append(want)
            errors.append(took - want)
        conn.close()
    finally:
        server.stop()
    assert min(designed) >= 0.015
    assert min(errors) > -0.0005  # never early
    assert statistics.median(errors) < 0.010  # on time, give or take a busy machine
