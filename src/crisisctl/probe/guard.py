"""Read a running guard's ``<prefix>/status`` and keep what triage reports about it.

`read_guard_status()` asks the target for the guard's status document (one bounded request)
and `summarize_status()` turns it into the triage's ``guard`` section: whether a guard answers,
its mode (and since when), its limits, shed counts, in-flight requests, open circuit breakers,
the server-side latency of the last minute and the guard's own process figures. A target
without a guard gives ``present: false``.

`process_evidence()` turns the guard's process figures (one status document, or two around a
measured stretch) into the shape of a local psutil reading (`probe.host`), marked
``source: "guard status"``: the resource evidence of a service whose process cannot be seen
from here (remote, in a container, another user's).
"""

from __future__ import annotations

import json
from typing import Any, Final

from crisisctl.probe.http import ProbeResult, probe, with_path
from crisisctl.transport.target import Target

DEFAULT_PREFIX: Final = "/_crisis"
GUARD_SERVICE: Final = "crisisctl-guard"
#: where resource figures read from the guard's status document came from
GUARD_SOURCE: Final = "guard status"


#: the route limits a summary lists: the lowest (the routes the guard holds back most)
ROUTE_LIMITS_SHOWN: Final = 5


def local_source(pid: int) -> str:
    """Where resource figures read with psutil on this machine came from."""
    return f"local process (psutil pid {pid})"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sampled_at(status: dict[str, Any]) -> float | None:
    """The guard's uptime (s) when its process sample was taken."""
    process = _section(status, "process")
    uptime = _num(status.get("uptime_s"))
    age = _num(process.get("sample_age_s"))
    return None if uptime is None or age is None else uptime - age


def _cpu_s(process: dict[str, Any]) -> float | None:
    user = _num(process.get("cpu_user_s"))
    system = _num(process.get("cpu_system_s"))
    return None if user is None or system is None else user + system


def process_evidence(
    after: dict[str, Any], before: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The guard's process figures as a `probe.host` process reading (None when the status
    carries none). With `before` (an earlier status of the same process) the CPU is the share
    of one core used between the two samples; otherwise the guard's own recent figure (its
    last sample interval). RSS peak is the larger of the two samples (the guard samples once a
    second; a peak between samples is not seen)."""
    process = _section(after, "process")
    if not process or "rss_bytes" not in process:
        return None
    cpu: float | None = _num(process.get("cpu_percent_recent"))
    cpu_basis = "the guard's last sample interval"
    rss = _num(process.get("rss_mb"))
    peak = rss
    earlier = _section(before, "process") if before is not None else {}
    if earlier and earlier.get("pid") == process.get("pid"):
        t0, t1 = _sampled_at(before or {}), _sampled_at(after)
        c0, c1 = _cpu_s(earlier), _cpu_s(process)
        span = t1 - t0 if t0 is not None and t1 is not None else 0.0
        if c0 is not None and c1 is not None and span >= 0.5:
            cpu = round(max(0.0, c1 - c0) / span * 100.0, 1)
            cpu_basis = f"between two guard samples {span:.1f} s apart"
        rss0 = _num(earlier.get("rss_mb"))
        if rss0 is not None and (peak is None or rss0 > peak):
            peak = rss0
    return {
        "source": GUARD_SOURCE,
        "pid": process.get("pid"),
        "name": "guarded process",
        "cpu_percent": cpu,
        "cpu_basis": cpu_basis,
        "rss_mb": rss,
        "rss_peak_mb": peak,
        "threads": process.get("threads"),
        "open_files": process.get("open_fds"),
        "fds": process.get("open_fds"),
        "loop_lag_ms": process.get("loop_lag_ms"),
        "gc": process.get("gc"),
        "sample_age_s": process.get("sample_age_s"),
    }


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


def concurrency_limits(conc: dict[str, Any]) -> dict[str, Any]:
    """The limits in force, from a status document's ``concurrency`` section: one service-wide
    limit, or (scope ``"route"``) the guard-wide cap and the lowest route limits — the cap is
    not the limit any route runs at."""
    scope = conc.get("scope") or "service"
    out: dict[str, Any] = {"concurrency_mode": conc.get("mode"), "concurrency_scope": scope}
    if scope != "route":
        out["concurrency_limit"] = conc.get("limit")
        return out
    routes = _section(conc, "routes")
    limits = sorted(
        (limit, label)
        for label, route in routes.items()
        if isinstance(route, dict) and isinstance(limit := route.get("limit"), int)
    )
    out["concurrency_limit"] = None
    out["concurrency_cap"] = conc.get("limit")
    out["route_limits"] = {label: limit for limit, label in limits[:ROUTE_LIMITS_SHOWN]}
    out["route_limit_count"] = len(limits)
    return out


def describe_limits(limits: dict[str, Any]) -> str:
    """One line for `concurrency_limits`: ``adaptive limit 12`` or ``adaptive per route: /b 1,
    /a 2 (+3 more) under a cap of 1000``."""
    mode = limits.get("concurrency_mode")
    if limits.get("concurrency_scope") != "route":
        return f"{mode} limit {limits.get('concurrency_limit')}"
    shown = limits.get("route_limits") or {}
    routes = ", ".join(f"{label} {limit}" for label, limit in shown.items()) or "no route yet"
    more = (limits.get("route_limit_count") or 0) - len(shown)
    if more > 0:
        routes += f" (+{more} more)"
    return f"{mode} per route: {routes} under a cap of {limits.get('concurrency_cap')}"


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
            **concurrency_limits(conc),
            "queued": conc.get("queued"),
            "queue_size": conc.get("queue_size"),
            "rate_limits": data.get("rate_limits") or [],
        },
        "open_breakers": open_breakers,
        "latency_window_s": data.get("latency_window_s"),
        "latency_ms": data.get("latency_ms"),
        "internal_errors": data.get("internal_errors"),
        "process": process_evidence(data),
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
