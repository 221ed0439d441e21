"""The line said before a run against a host that is not on this machine (no traffic sent)."""

from __future__ import annotations

from crisisctl.load.preflight import describe_run
from crisisctl.load.scenario import ClosedModel, OpenModel

OPEN = OpenModel(type="open", rate=200, duration=30)
CLOSED = ClosedModel(type="closed", users=50, duration=60)


def test_a_remote_open_run_says_host_rate_duration_and_most_requests() -> None:
    line = describe_run("https://api.example.com/v1", OPEN)
    assert line == (
        "crisisctl load: sending to api.example.com:443 — up to 200 requests/s for 30s, "
        "at most 6,000 requests."
    )
    assert describe_run("https://api.example.com", OPEN, 100) is not None
    assert "at most 100 requests" in str(describe_run("http://api.example.com", OPEN, 100))


def test_a_remote_closed_run_says_users_and_the_bound_or_its_absence() -> None:
    line = describe_run("http://10.0.0.5:8080/", CLOSED, 5000)
    assert line == (
        "crisisctl load: sending to 10.0.0.5:8080 — up to 50 virtual users for 60s, "
        "at most 5,000 requests."
    )
    assert "set one with --max-requests" in str(describe_run("http://10.0.0.5/", CLOSED))
    assert "[2001:db8::1]:80" in str(describe_run("http://[2001:db8::1]/", CLOSED))


def test_loopback_runs_stay_quiet() -> None:
    for url in (
        "http://127.0.0.1:8000",
        "http://localhost/",
        "http://[::1]:9000/",
        "http://127.3.2.1",
    ):
        assert describe_run(url, OPEN) is None
