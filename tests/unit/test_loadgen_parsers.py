"""Reading wrk's, hey's and the Python generators' outputs in benchmarks/loadgen_throughput.py.

The samples are real outputs of Debian's wrk 4.1.0 and hey, trimmed; the property test
renders wrk summaries with every time unit wrk prints and reads them back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.loadgen_tools import parse_hey, parse_json_out, parse_wrk

WRK = """\
Running 3s test @ http://127.0.0.1:18123/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.69ms    6.18ms 135.45ms   92.23%
    Req/Sec     7.70k     1.68k    9.48k    60.00%
  Latency Distribution
     50%    7.80ms
     75%   10.43ms
     90%   11.92ms
     99%   23.66ms
  23115 requests in 3.02s, 3.04MB read
Requests/sec:   7658.35
Transfer/sec:      1.01MB
"""

WRK_ERRORS = """\
Running 1s test @ http://127.0.0.1:18124/nope
  1 threads and 4 connections
  Latency Distribution
     50%  793.00us
     75%    2.46ms
     90%    4.17ms
     99%    6.39ms
  2884 requests in 1.01s, 419.78KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 84
Requests/sec:   2869.23
"""

HEY = """\

Summary:
  Total:\t2.0191 secs
  Slowest:\t0.2404 secs
  Fastest:\t0.0064 secs
  Average:\t0.0140 secs
  Requests/sec:\t4540.7105

Latency distribution:
  10% in 0.0074 secs
  25% in 0.0079 secs
  50% in 0.0113 secs
  75% in 0.0172 secs
  90% in 0.0216 secs
  95% in 0.0265 secs
  99% in 0.0504 secs

Status code distribution:
  [200]\t9168 responses
  [503]\t12 responses

Error distribution:
  [7]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
  [2]\tGet "http://127.0.0.1:1/": context deadline exceeded
"""


def test_wrk_summary() -> None:
    out = parse_wrk(WRK)
    assert out == {
        "requests": 23115,
        "errors": 0,
        "wall_s": pytest.approx(3.02),
        "p50_ms": pytest.approx(7.80),
        "p99_ms": pytest.approx(23.66),
    }


def test_wrk_errors_and_microseconds() -> None:
    out = parse_wrk(WRK_ERRORS)
    assert out["requests"] == 2884 - 84
    assert out["errors"] == 84 + 2 + 3
    assert out["p50_ms"] == pytest.approx(0.793)
    assert out["p99_ms"] == pytest.approx(6.39)


def test_hey_summary_with_errors() -> None:
    out = parse_hey(HEY)
    assert out["requests"] == 9168
    assert out["errors"] == 12 + 7 + 2
    assert out["wall_s"] == pytest.approx(2.0191)
    assert out["p50_ms"] == pytest.approx(11.3)
    assert out["p99_ms"] == pytest.approx(50.4)


@pytest.mark.parametrize(
    "text", ["", "unable to connect to 127.0.0.1:1 Connection refused", "Summary:\n"]
)
def test_unreadable_outputs_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_wrk(text)
    with pytest.raises(ValueError):
        parse_hey(text)


def test_json_line() -> None:
    line = json.dumps({"requests": 5, "errors": 0, "cpu_s": 0.1, "wall_s": 1.0, "p50_ms": 1.0})
    assert parse_json_out(line)["requests"] == 5
    with pytest.raises(ValueError, match="without cpu_s"):
        parse_json_out(json.dumps({"requests": 5, "errors": 0, "wall_s": 1.0}))
    with pytest.raises(ValueError, match="not a generator result"):
        parse_json_out("Traceback (most recent call last):")
    with pytest.raises(ValueError, match="not a generator result"):
        parse_json_out("[1, 2]")


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@given(
    requests=st.integers(0, 10**9),
    bad=st.integers(0, 1000),
    p50=st.tuples(st.integers(0, 99999), st.sampled_from(sorted(UNITS))),
    p99=st.tuples(st.integers(0, 99999), st.sampled_from(sorted(UNITS))),
    seconds=st.integers(1, 99999),
)
def test_wrk_round_trip(
    requests: int, bad: int, p50: tuple[int, str], p99: tuple[int, str], seconds: int
) -> None:
    text = (
        "  Latency Distribution\n"
        f"     50%    {p50[0] / 100:.2f}{p50[1]}\n"
        f"     75%    1.00ms\n"
        f"     99%    {p99[0] / 100:.2f}{p99[1]}\n"
        f"  {requests + bad} requests in {seconds / 100:.2f}s, 1.00MB read\n"
        + (f"  Non-2xx or 3xx responses: {bad}\n" if bad else "")
    )
    out = parse_wrk(text)
    assert out["requests"] == requests and out["errors"] == bad
    assert out["wall_s"] == pytest.approx(seconds / 100)
    assert out["p50_ms"] == pytest.approx(p50[0] / 100 * UNITS[p50[1]])
    assert out["p99_ms"] == pytest.approx(p99[0] / 100 * UNITS[p99[1]])
