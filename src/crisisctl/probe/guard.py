"""Read a running guard's ``<prefix>/status`` and keep what triage reports about it.

`read_guard_status()` asks the target for the guard's status document (one bounded request)
and `summarize_status()` turns it into the triage's ``guard`` section: whether a guard answers,
its mode (and since when), its limits, shed counts, in-flight requests, open circuit breakers and
the server-side latency of the last minute. A target without a guard gives ``present: false``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from crisisctl.probe.http import ProbeResult, probe, with_path
from crisisctl.transport.target import Target

DEFAULT_PREFIX: Final = "/_crisis"
GUARD_SERVICE: Final = "crisisctl-guard"


def _parse(result: ProbeResult) -> dict[str, Any] | None:
    try:
        data = json.loads(result.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and data.get("service") == GUARD_SERVICE:
        return data
    return None


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def summarize_status(data: dict[str, Any]) -> dict[str, Any]:
    """The triage's view of a guard status document (missing parts become None)."""
    mode = _section(data, "mode")
    conc = _section(data, "concurrency")
    breakers = _section(data, "breakers")
    open_breakers = sorted(
        route
        for route, state in breakers.items()
        if isinstance(state, dict) and state.get("state") in ("open", "half_open")
    )
    requests = _section(data, "requests")
    return {
        "present": True,
        "mode": mode.get("mode"),
        "mode_since": mode.get("since"),
        "pid": data.get("pid"),
        "uptime_s": data.get("uptime_s"),
        "in_flight": data.get("in_flight"),
        "requests_total": requests.get("total"),
        "status_classes": requests.get("status_classes"),
        "shed": data.get("shed") or {},
        "shed_total": data.get("shed_total"),
        "limits": {
            "concurrency_mode": conc.get("mode"),
            "concurrency_limit": conc.get("limit"),
            "queued": conc.get("queued"),
            "queue_size": conc.get("queue_size"),
            "rate_limits": data.get("rate_limits") or [],
        },
        "open_breakers": open_breakers,
        "latency_window_s": data.get("latency_window_s"),
        "latency_ms": data.get("latency_ms"),
        "internal_errors": data.get("internal_errors"),
    }


async def read_guard_status(
    target: Target, *, prefix: str = DEFAULT_PREFIX, timeout_s: float
) -> dict[str, Any]:
    """The ``guard`` section for `target`: a summary, ``present: false`` or why it is unknown."""
    path = f"{prefix.rstrip('/')}/status"
    result = await probe(with_path(target, path), operation=f"GET {path}", timeout_s=timeout_s)
    base: dict[str, Any] = {"status_url_path": path, "probe": result.as_dict()}
    if not result.answered:
        return {**base, "present": None, "error": f"{result.error}: {result.detail}"}
    data = _parse(result) if result.status == 200 else None
    if data is None:
        return {**base, "present": False}
    return {**base, **summarize_status(data)}
