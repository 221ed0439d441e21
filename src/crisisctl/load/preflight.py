"""The one line said before a run against a host that is not on this machine.

`describe_run(base_url, model, max_requests)` gives, for a non-loopback host, one line that
says what is about to be sent — host, rate (open model) or users (closed model), duration,
and the most requests the run may send — so nobody loads a remote service by surprise;
None for loopback hosts (local runs stay quiet). ``crisisctl load`` writes it on stderr right
before the run starts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from crisisctl.load.scenario import ClosedModel, OpenModel
from crisisctl.transport.target import is_loopback_host

__all__ = ["describe_run"]


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def describe_run(
    base_url: str, model: OpenModel | ClosedModel, max_requests: int | None = None
) -> str | None:
    """The line (see the module's docstring), or None for a loopback host."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if is_loopback_host(host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    schedule = model.schedule()
    duration = schedule.duration_s
    peak = max(max(r0, r1) for _, r0, r1 in schedule.segments)
    if isinstance(model, OpenModel):
        what = f"up to {_number(peak)} requests/s"
        expected = schedule.expected()
        bound = expected if max_requests is None else min(expected, max_requests)
        most = f"at most {_number(bound)} requests"
    else:
        what = f"up to {_number(peak)} virtual users"
        most = (
            "no bound on requests (set one with --max-requests)"
            if max_requests is None
            else f"at most {_number(max_requests)} requests"
        )
    where = f"[{host}]" if ":" in host else host
    return f"crisisctl load: sending to {where}:{port} — {what} for {duration:g}s, {most}."
