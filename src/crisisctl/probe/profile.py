"""Baseline profiles: what a healthy triage run looked like, and how to compare against one.

A profile is plain JSON stored with a saved baseline (`crisisctl baseline save`)::

    {"version": 1, "url": …, "recorded_at": …, "samples_per_operation": 20,
     "operations": {"GET /api/x": {"method": "GET", "path": "/api/x", "body": null,
                                   "count": 20, "p50": …, "p95": …, "p99": …, "max": …,
                                   "error_rate": 0.0}},
     "error_rate": 0.0, "latency_ms": {…},
     "resources": {"process_rss_mb": …, "process_cpu_percent": …, "process_threads": …,
                   "system_cpu_percent": …, "memory_percent": …, "load_avg_1m": …}}

Triage with ``--baseline NAME`` compares each operation's p95 with the baseline's p95 for
the same operation (the degradation factor), and re-uses the baseline's operations when no
``--path`` is given. Pure functions: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

PROFILE_VERSION: Final = 1


class ProfileError(ValueError):
    """A stored profile that cannot be used (one sentence saying what is wrong)."""


def profile_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The baseline profile of a triage report (raises ProfileError if nothing was measured)."""
    operations: dict[str, Any] = {}
    for op in report.get("operations") or []:
        latency = op.get("latency_ms")
        if not latency:
            continue
        operations[op["operation"]] = {
            "method": op["method"],
            "path": op["path"],
            "body": op.get("body"),
            "count": latency["count"],
            "p50": latency["p50"],
            "p95": latency["p95"],
            "p99": latency["p99"],
            "max": latency["max"],
            "error_rate": op.get("error_rate"),
        }
    if not operations:
        raise ProfileError(
            "no operation answered during the probes, so there is no healthy profile to save; "
            "check the URL and that the service is up."
        )
    host = report.get("host") or {}
    process = _section(host, "process")
    load = host.get("load_avg")
    memory = _section(host, "memory")
    return {
        "version": PROFILE_VERSION,
        "url": report.get("url"),
        "recorded_at": report.get("started_at"),
        "samples_per_operation": _section(report, "sampling").get("per_operation"),
        "operations": operations,
        "error_rate": report.get("error_rate"),
        "latency_ms": report.get("latency_ms"),
        "resources": {
            "process_rss_mb": _number(process.get("rss_mb")),
            "process_cpu_percent": _number(process.get("cpu_percent")),
            "process_threads": _number(process.get("threads")),
            "system_cpu_percent": _number(host.get("cpu_percent")),
            "memory_percent": _number(memory.get("percent")),
            "load_avg_1m": load[0] if isinstance(load, list) and load else None,
        },
    }


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def profile_operations(profile: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(method, path, body) of every operation in `profile`, in stored order."""
    ops = _operations(profile)
    return [(str(o["method"]), str(o["path"]), o.get("body")) for o in ops.values()]


def baseline_p95(profile: dict[str, Any], operation: str) -> float | None:
    """The baseline p95 (ms) of `operation` ("GET /x"), None if it was not recorded."""
    entry = _operations(profile).get(operation)
    if not isinstance(entry, dict):
        return None
    p95 = entry.get("p95")
    if not isinstance(p95, int | float) or p95 <= 0:
        return None
    return float(p95)


def _operations(profile: dict[str, Any]) -> dict[str, Any]:
    ops = profile.get("operations") if isinstance(profile, dict) else None
    if not isinstance(ops, dict) or not all(
        isinstance(v, dict) and "method" in v and "path" in v for v in ops.values()
    ):
        raise ProfileError(
            "the stored baseline has no usable operations; save it again with "
            "`crisisctl baseline save`."
        )
    return ops


def resource_changes(profile: dict[str, Any], host: dict[str, Any] | None) -> list[str]:
    """Sentences comparing the host's resource levels now with the baseline's."""
    base = profile.get("resources") if isinstance(profile, dict) else None
    if not isinstance(base, dict) or not host:
        return []
    process = _section(host, "process")
    out: list[str] = []
    pairs = (
        ("process RSS", base.get("process_rss_mb"), process.get("rss_mb"), "MB"),
        ("process threads", base.get("process_threads"), process.get("threads"), ""),
        ("process CPU", base.get("process_cpu_percent"), process.get("cpu_percent"), "%"),
    )
    for label, then, now, unit in pairs:
        if _number(then) is not None and _number(now) is not None:
            out.append(f"{label} {now:g}{unit} now vs {then:g}{unit} in the baseline")
    return out
