"""Baseline profiles: what a healthy triage run looked like, and how to compare against one.

A profile is plain JSON stored with a saved baseline (`crisisctl baseline save`)::

    {"version": 2, "url": …, "recorded_at": …, "samples_per_operation": 20, "rounds": 5,
     "operations": {"GET /api/x": {"method": "GET", "path": "/api/x", "body": null,
                                   "count": 100, "p50": …, "p95": …, "p99": …, "max": …,
                                   "error_rate": 0.0,
                                   "rounds_ms": [[21.3, 22.0, …], …]}},
     "error_rate": 0.0, "latency_ms": {…},
     "resources": {"process_rss_mb": …, "process_cpu_percent": …, "process_threads": …,
                   "system_cpu_percent": …, "memory_percent": …, "load_avg_1m": …}}

A baseline is measured in rounds (one triage probe pass each, spread over time); the
percentiles are those of all rounds' requests together and ``rounds_ms`` keeps every latency
(ms) of every round, so triage can tell the baseline's own spread from a slowdown (spread.py).
Version 1 profiles (before the rounds) have no ``rounds_ms``: they still load, and triage says
it judges them on its own run's spread only.

Triage with ``--baseline NAME`` compares each operation's p95 with the baseline's p95 for
the same operation (the degradation factor), and re-uses the baseline's operations when no
``--path`` is given. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from crisisctl.probe.sampling import summarize
from crisisctl.stats import LatencyHistogram

PROFILE_VERSION: Final = 2


class ProfileError(ValueError):
    """A stored profile that cannot be used (one sentence saying what is wrong)."""


def profile_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The baseline profile of one triage report (one round; see `profile_from_reports`)."""
    return profile_from_reports([report])


def profile_from_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The baseline profile of a baseline's rounds (triage reports of the same operations).

    Raises ProfileError when no operation answered in any round.
    """
    merged: dict[str, dict[str, Any]] = {}
    for report in reports:
        for op in report.get("operations") or []:
            entry = merged.setdefault(
                op["operation"], {"op": op, "rounds": [], "sent": 0, "failed": 0, "last": None}
            )
            samples = op.get("latency_samples_ms")
            if isinstance(samples, list) and samples:
                entry["rounds"].append([round(float(v), 3) for v in samples])
            entry["sent"] += int(op.get("sent") or 0)
            entry["failed"] += int(op.get("failed") or 0)
            if op.get("latency_ms"):
                entry["last"] = op
    operations: dict[str, Any] = {}
    everything = LatencyHistogram()
    for name, entry in merged.items():
        last = entry["last"]
        if last is None:
            continue
        op = entry["op"]
        rounds: list[list[float]] = entry["rounds"]
        latency = _pooled_summary(rounds, everything) or last["latency_ms"]
        rate = entry["failed"] / entry["sent"] if entry["sent"] else last.get("error_rate")
        operations[name] = {
            "method": op["method"],
            "path": op["path"],
            "body": op.get("body"),
            "count": latency["count"],
            "p50": latency["p50"],
            "p95": latency["p95"],
            "p99": latency["p99"],
            "max": latency["max"],
            "error_rate": rate,
        }
        if rounds:
            operations[name]["rounds_ms"] = rounds
    if not operations:
        raise ProfileError(
            "no operation answered during the probes, so there is no healthy profile to save; "
            "check the URL and that the service is up."
        )
    first = reports[0]
    with_host = next((r for r in reports if _section(r, "host").get("collected")), first)
    host = _section(with_host, "host")
    process = _section(host, "process")
    load = host.get("load_avg")
    memory = _section(host, "memory")
    sent = sum(int(_section(r, "sampling").get("sent") or 0) for r in reports)
    failed = sum(int(_section(r, "sampling").get("failed") or 0) for r in reports)
    return {
        "version": PROFILE_VERSION,
        "url": first.get("url"),
        "recorded_at": first.get("started_at"),
        "samples_per_operation": _section(first, "sampling").get("per_operation"),
        "rounds": len(reports),
        "operations": operations,
        "error_rate": failed / sent if sent else first.get("error_rate"),
        "latency_ms": summarize(everything) or first.get("latency_ms"),
        "resources": {
            "process_rss_mb": _number(process.get("rss_mb")),
            "process_cpu_percent": _number(process.get("cpu_percent")),
            "process_threads": _number(process.get("threads")),
            "system_cpu_percent": _number(host.get("cpu_percent")),
            "memory_percent": _number(memory.get("percent")),
            "load_avg_1m": load[0] if isinstance(load, list) and load else None,
        },
    }


def _pooled_summary(
    rounds: list[list[float]], everything: LatencyHistogram
) -> dict[str, float | int] | None:
    hist = LatencyHistogram()
    for samples in rounds:
        for value in samples:
            hist.record_us(round(value * 1000))
    everything.merge(hist)
    return summarize(hist)


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


def baseline_rounds(profile: dict[str, Any], operation: str) -> list[list[float]] | None:
    """The baseline's latencies (ms) of `operation` per round; None when it kept none (v1)."""
    entry = _operations(profile).get(operation)
    rounds = entry.get("rounds_ms") if isinstance(entry, dict) else None
    if not isinstance(rounds, list):
        return None
    kept = [
        [float(v) for v in r]
        for r in rounds
        if isinstance(r, list)
        and r
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in r)
    ]
    return kept or None


def baseline_count(profile: dict[str, Any], operation: str) -> int | None:
    """How many requests the baseline's p95 of `operation` came from, None if not recorded."""
    entry = _operations(profile).get(operation)
    count = entry.get("count") if isinstance(entry, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return None
    return count


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
