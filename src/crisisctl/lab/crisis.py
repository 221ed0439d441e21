"""The scripted crisis of `crisisctl demo`: a sick service taken from P0 to its post-mortem.

`Crisis(options, emit).run()` plays the whole story on 127.0.0.1 within `MAX_DEMO_S` and
returns the summary (also written to ``summary.json``):

1. start the sick scanning service (its own uvicorn process) and the crowd of dashboard tabs
   polling every 2 s; the service degrades;
2. triage → P0/P1 with its reasons; an incident opens with the verdict;
3. the "before" load report;
4. stabilize: the pollers switch to shared backoff, the service restarts with the fixes behind
   the guard (its operation quota shown refusing an excess scan; emergency mode while the
   crowd comes back) — each step on the timeline;
5. re-triage → OK/P3 (mitigated; the guard recovers), the "after" load report, the comparison;
6. the validation suite, the resolution, root causes, actions, lessons and the post-mortem;
7. the summary: severities, MTTx, improvement, artefacts.

Progress goes to `emit(kind, data)`: "step" (one per step, with a `message`), "live" (the crowd
and the service every 2 s while the crowd runs) and "verdict". Nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from crisisctl import __version__
from crisisctl.incidents.lifecycle import Status
from crisisctl.incidents.reports import fmt_ms
from crisisctl.lab import measure, scan_quota, story
from crisisctl.lab.crowd import BACKOFF, EVERY_2S, Crowd
from crisisctl.lab.incident_log import IncidentLog
from crisisctl.lab.process import LabError, ServiceProcess, free_port
from crisisctl.lab.profile import DEFAULT, MAX_DEMO_S, Profile
from crisisctl.lab.scanner import DEFAULT_TOKEN, FIXED_MAX_CONCURRENT, describe_guard

EventSink = Callable[[str, dict[str, Any]], None]
LIVE_EVERY_S: Final = 2.0
PROBE_TIMEOUT_S: Final = 20.0
BAD: Final = ("P0", "P1")
GOOD: Final = ("OK", "P3")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `crisisctl demo` was asked for."""

    profile: Profile = DEFAULT
    out_dir: Path = Path("crisis-demo")
    db_url: str | None = None
    keep_running: bool = False


@dataclass(slots=True)
class _Figures:
    """What the run measured, for the story and the summary."""

    facts: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    artefacts: dict[str, str] = field(default_factory=dict)


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    latency = report.get("latency_ms") or {}
    host = report.get("host") or {}
    found = host.get("process")
    proc: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "severity": report["severity"],
        "label": report.get("label"),
        "degradation_factor": report.get("degradation_factor"),
        "p95_ms": latency.get("p95"),
        "error_rate": report.get("error_rate"),
        "available": report.get("available"),
        "reasons": [r["message"] for r in report.get("reasons", [])],
        "rss_mb": proc.get("rss_mb"),
        "rss_growth_mb": proc.get("rss_growth_mb"),
        "duration_s": report.get("duration_s"),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} %"


def _load_figures(report: dict[str, Any]) -> dict[str, Any]:
    latency = report.get("latency_ms") or {}
    return {
        "requests": report.get("requests"),
        "requests_per_second": report.get("requests_per_second"),
        "error_rate": report.get("error_rate"),
        "status_counts": report.get("status_counts"),
        "errors": {k: v for k, v in (report.get("errors") or {}).items() if v},
        **{f"{p}_ms": latency.get(p) for p in ("p50", "p95", "p99", "max")},
    }


class Crisis:
    """One run of the demo; `run()` once."""

    def __init__(self, options: DemoOptions, emit: EventSink | None = None) -> None:
        self.options = options
        self.profile = options.profile
        self.out = options.out_dir
        self.emit: EventSink = emit or (lambda kind, data: None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sick: ServiceProcess | None = None
        self.fixed: ServiceProcess | None = None
        self.crowd: Crowd | None = None
        self.incident = IncidentLog(options.db_url or str(self.out / "incidents.db"))
        self.http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        self.fig = _Figures()
        self.t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.kept_running = False

    # -- plumbing --------------------------------------------------------------------------
    def _step(self, name: str, message: str, **data: Any) -> None:
        elapsed = round(time.monotonic() - self.t0, 1)
        self.fig.steps.append({"step": name, "t_s": elapsed, "message": message})
        self.emit("step", {"step": name, "t_s": elapsed, "message": message, **data})

    async def _save(self, key: str, filename: str, data: dict[str, Any]) -> Path:
        path = self.out / filename
        await measure.write_json(path, data)
        self.fig.artefacts[key] = str(path)
        return path

    async def _stats(self) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self.http.get(f"{self.url}/api/stats")
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                return data
        return None

    async def _live(self, seconds: float, phase: str) -> None:
        assert self.crowd is not None
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(LIVE_EVERY_S, left))
            window = self.crowd.take_window()
            stats = await self._stats() or {}
            lat = window["poll_latency_ms"] or {}
            limited = window["poll_status"].get("429", 0) + window["scans_refused"]
            self.emit("live", {
                "phase": phase, "t_s": round(time.monotonic() - self.t0, 1),
                "polls_per_s": window["polls_per_s"], "poll_p95_ms": lat.get("p95"),
                "polls_skipped": window["polls_skipped_busy"],
                "scans_started": window["scans_started"], "limited": limited,
                "errors": sum(window["errors"].values()),
                "scans_active": stats.get("scans_active"),
                "pool_waiting": stats.get("pool_waiting"),
                "stored_mb": stats.get("stored_result_mb"), "rss_mb": stats.get("rss_mb"),
            })  # fmt: skip

    async def _probe_scan(self) -> str:
        """A scan of the demo's own, created and waited for: what triage and load read."""
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        scan_id: str | None = None
        while time.monotonic() < deadline:
            if scan_id is None:
                response = await self.http.post(
                    f"{self.url}/api/scans", json={"name": "crisisctl demo probe"}
                )
                if response.status_code == 202:
                    scan_id = str(response.json()["id"])
                else:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
            doc = (await self.http.get(f"{self.url}/api/scans/{scan_id}")).json()
            if doc.get("status") == "completed":
                return scan_id
            await asyncio.sleep(0.25)
        raise LabError(f"the demo's probe scan did not complete within {PROBE_TIMEOUT_S:g} s.")

    async def _ensure_probe(self, scan_id: str) -> str:
        response = await self.http.get(f"{self.url}/api/scans/{scan_id}")
        return scan_id if response.status_code == 200 else await self._probe_scan()

    async def _set_mode(self, mode: str, reason: str) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.url}/_crisis/mode",
            json={"mode": mode, "reason": reason, "actor": "crisisctl demo"},
            headers={"authorization": f"Bearer {DEFAULT_TOKEN}"},
        )
        if response.status_code != 200:
            raise LabError(f"the guard refused the switch to {mode} (HTTP {response.status_code}).")
        data: dict[str, Any] = response.json()
        await self.incident.event("guard_mode", f"guard mode → {mode}: {reason}", data)
        return data

    async def _guard_status(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.url}/_crisis/status")
        data: dict[str, Any] = response.json()
        return data

    # -- the story -------------------------------------------------------------------------
    async def _sick_service(self) -> str:
        p = self.profile
        self.sick = ServiceProcess("sick", self.port, settings=p.scanner,
                                   log_path=self.out / "service-sick.log")  # fmt: skip
        await self.sick.start()
        probe = await self._probe_scan()
        self.crowd = Crowd(self.url, p.crowd, EVERY_2S)
        self.crowd.start()
        self.fig.facts["crisis_started_at"] = datetime.now(UTC)
        c = p.crowd
        workers = (await self._stats() or {}).get("workers")
        self._step("start", f"sick scanning service on {self.url} (pid {self.sick.pid}): unlimited "
                   f"scans on a {workers}-thread pool, results kept forever, no guard; "
                   f"{c.users} users × {c.tabs} tabs poll every 2 s",
                   url=self.url, pid=self.sick.pid)  # fmt: skip
        await self._live(p.degrade_s, "sick")
        return probe

    async def _detect(self, probe: str) -> None:
        report = await measure.triage(self.url, probe, self.profile)
        await self._save("triage_before", "triage-before.json", report)
        verdict = _verdict(report)
        self.fig.facts["triage_before"] = report
        self.emit("verdict", {"which": "before", **verdict})
        factor = verdict["degradation_factor"] or 0.0
        title = (f"Scanning service {verdict['severity']}: status reads at {factor:.1f}× the "
                 f"{self.profile.target_ms:g} ms target")  # fmt: skip
        record = await self.incident.open(
            report, title=title, service=self.url,
            started_at=self.fig.facts["crisis_started_at"],
        )  # fmt: skip
        await self.incident.status(Status.INVESTIGATING, "crisisctl demo took the incident")
        self._step("incident", f"incident #{record.id} opened ({record.severity.name}) with the "
                   f"triage verdict; investigating", incident=record.id)  # fmt: skip

    async def _load(self, probe: str, label: str) -> dict[str, Any]:
        report = await measure.load_report(self.url, probe, self.profile, label)
        await self._save(label, f"{label}.json", report)
        await self.incident.attach(report, label=label)
        f = _load_figures(report)
        self._step(f"load_{label}", f"{label} load ({self.profile.load_rate:g} req/s for "
                   f"{self.profile.load_s:g} s): p50 {fmt_ms(f['p50_ms'])}, p95 "
                   f"{fmt_ms(f['p95_ms'])}, p99 {fmt_ms(f['p99_ms'])}, errors "
                   f"{(f['error_rate'] or 0) * 100:.1f} %",
                   **f)  # fmt: skip
        return report

    async def _stabilize(self) -> str:
        assert self.crowd is not None and self.sick is not None
        p = self.profile
        await self.incident.status(Status.STABILIZING, "restarting the service with the fixes")
        sick_stats = await self._stats() or {}
        self.fig.facts["sick_stats"] = sick_stats
        self.crowd.pause()
        self.fig.facts["crowd_before"] = self.crowd.end_phase(p.target_ms)
        await self.incident.event("action", f"dashboard pollers switched to {BACKOFF.name}, at "
                                  f"most {BACKOFF.max_polls} polls per scan",
                                  {"policy": BACKOFF.name})  # fmt: skip
        pid = self.sick.pid
        await asyncio.to_thread(self.sick.stop)
        await self.crowd.drain()  # the restart's failed requests belong to neither phase
        await self.incident.event(
            "action",
            f"stopped the sick service (pid {pid}): {sick_stats.get('scans_active')} scans "
            f"active, {sick_stats.get('pool_waiting')} pool tasks waiting, "
            f"{sick_stats.get('stored_result_mb')} MB of results held, RSS "
            f"{sick_stats.get('rss_mb')} MB",
            sick_stats,
        )
        settings = {**p.scanner, "ttl_s": p.ttl_s, "ramp_s": p.ramp_s}
        self.fixed = ServiceProcess("fixed", self.port, settings=settings, token=DEFAULT_TOKEN,
                                    log_path=self.out / "service-fixed.log")  # fmt: skip
        await self.fixed.start()
        guard = await self._guard_status()
        await self.incident.event(
            "action",
            f"restarted the service (pid {self.fixed.pid}) with the fixes: finished scans "
            f"dropped after {p.ttl_s:g} s unread, behind the guard ({describe_guard()})",
            {"concurrency": guard.get("concurrency"), "guard": describe_guard()},
        )
        quota = await scan_quota.show(self.url, FIXED_MAX_CONCURRENT)
        await self.incident.event("action", quota["message"], quota)
        self._step("scan_quota", quota.pop("message"), **quota)
        await self._set_mode("emergency", "stabilizing after the restart: the crowd comes back")
        probe = await self._probe_scan()
        self.crowd.resume(BACKOFF)
        self._step("stabilize", f"restarted with the guard (pid {self.fixed.pid}, mode emergency), "
                   "2-scan operation quota, TTL cleanup; pollers on backoff",
                   pid=self.fixed.pid)  # fmt: skip
        await self._live(p.settle_s, "fixed")
        return probe

    async def _verify(self, probe: str) -> None:
        assert self.crowd is not None
        probe = await self._ensure_probe(probe)
        report = await measure.triage(self.url, probe, self.profile)
        await self._save("triage_after", "triage-after.json", report)
        await self.incident.attach(report, source="triage")
        self.fig.facts["triage_after"] = report
        verdict = _verdict(report)
        self.emit("verdict", {"which": "after", **verdict})
        if verdict["severity"] in GOOD:
            await self.incident.status(Status.MITIGATED, f"re-triage {verdict['severity']}")
        await self._set_mode("recovering", f"re-triage {verdict['severity']}: ramping back")
        probe = await self._ensure_probe(probe)
        before = self.fig.facts["load_before"]
        after = await self._load(probe, "after")
        self.fig.facts["load_after"] = after
        self.fig.facts["crowd_after"] = self.crowd.end_phase(self.profile.target_ms)
        paths = (Path(self.fig.artefacts["before"]), Path(self.fig.artefacts["after"]))
        comparison = measure.compare(before, after, paths)
        await self._save("compare", "compare.json", comparison)
        self.fig.facts["compare"] = comparison
        p95 = measure.improvement(comparison, "p95")
        self.fig.facts["p95_improvement_pct"] = p95
        p99 = measure.improvement(comparison, "p99")
        self._step("compare", f"compare before/after: p95 {_pct(p95)} better, p99 {_pct(p99)} "
                   "better", p95_improvement_pct=p95, p99_improvement_pct=p99)  # fmt: skip
        await self._wait_normal()

    async def _wait_normal(self) -> None:
        deadline = time.monotonic() + self.profile.ramp_s + 5.0
        mode = "?"
        while time.monotonic() < deadline:
            mode = (await self._guard_status())["mode"]["mode"]
            if mode == "normal":
                break
            await asyncio.sleep(0.5)
        await self.incident.event(
            "guard_mode",
            f"guard mode {mode} after its {self.profile.ramp_s:g} s recovering ramp "
            "(120 s in production)",
            {"mode": mode},
        )

    async def _validate(self, probe: str) -> dict[str, Any]:
        probe = await self._ensure_probe(probe)
        report = await measure.validate(self.url, probe, self.profile)
        await self._save("validate", "validate.json", report)
        await self.incident.attach(report)
        counted = [c for c in report["checks"] if not c["skipped"]]
        passed = sum(1 for c in counted if c["passed"])
        failed = [c["name"] for c in counted if not c["passed"]]
        self._step("validate", f"validation {'PASSED' if report['passed'] else 'FAILED'}: "
                   f"{passed}/{len(counted)} checks" + (f" (failed: {', '.join(failed)})"
                   if failed else ""), passed=report["passed"])  # fmt: skip
        return report

    async def _learn(self, validation: dict[str, Any]) -> None:
        p = self.profile
        facts = self.fig.facts
        before = facts["crowd_before"]
        facts.update(
            users=p.crowd.users, tabs=p.crowd.tabs, target_ms=p.target_ms, ttl_s=p.ttl_s,
            load_before=facts["load_before"],
            rss_growth_mb=_verdict(facts["triage_before"])["rss_growth_mb"],
            affected_requests=(before["polls_slower"] or 0) + sum(before["errors"].values()),
        )  # fmt: skip
        await self.incident.learn(
            causes=story.root_causes(facts), actions=story.actions(facts),
            lessons=story.lessons(facts), impact=story.impact(facts), summary=story.summary(facts),
        )  # fmt: skip
        after_ok = _verdict(facts["triage_after"])["severity"] in GOOD
        if validation["passed"] and after_ok:
            await self.incident.status(
                Status.RESOLVED, f"validation passed ({validation['success_rate']} %)"
            )
        paths = await self.incident.postmortem(self.out)
        for fmt, path in paths.items():
            self.fig.artefacts[f"postmortem_{fmt}"] = str(path)
        snapshot = await self.incident.snapshot()
        facts["incident"] = snapshot
        self._step("resolve", f"incident #{snapshot['id']} {snapshot['status']}; post-mortem "
                   f"written to {paths['md']} and {paths['html']}")  # fmt: skip

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Play the crisis; the summary. LabError when the lab itself cannot run."""
        await asyncio.to_thread(self.out.mkdir, parents=True, exist_ok=True)
        try:
            await self.incident.connect()  # a bad --db fails now, not after the crisis began
            async with asyncio.timeout(MAX_DEMO_S):
                probe = await self._sick_service()
                await self._detect(probe)
                self.fig.facts["load_before"] = await self._load(probe, "before")
                probe = await self._stabilize()
                await self._verify(probe)
                validation = await self._validate(probe)
                self.fig.facts["validation"] = validation
                if self.crowd is not None:
                    await self.crowd.stop()
                await self._learn(validation)
                summary = self._summary()
                await self._save("summary", "summary.json", summary)
                self.kept_running = self.options.keep_running
                return summary
        except TimeoutError:
            raise LabError(
                f"the demo did not finish within {MAX_DEMO_S:g} s (is the machine overloaded?)."
            ) from None
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self.crowd is not None:
            await self.crowd.stop()
        await self.http.aclose()
        for service in (self.sick, self.fixed):
            if service is not None and not (service is self.fixed and self.kept_running):
                await asyncio.to_thread(service.stop)
        self.incident.close()

    def stop_service(self) -> None:
        """Stop the service left running by ``--keep-running``."""
        if self.fixed is not None:
            self.fixed.stop()

    def _summary(self) -> dict[str, Any]:
        f = self.fig.facts
        before, after = _verdict(f["triage_before"]), _verdict(f["triage_after"])
        validation = f["validation"]
        incident = f["incident"]
        crowd_before, crowd_after = f["crowd_before"], f["crowd_after"]
        rate_before, rate_after = crowd_before["polls_per_s"], crowd_after["polls_per_s"]
        improvement = {key: measure.improvement(f["compare"], key)
                       for key in ("p50", "p95", "p99", "max", "error_rate", "rps")}  # fmt: skip
        expectations = {
            "triage_before_p0_or_p1": before["severity"] in BAD,
            "triage_after_ok_or_p3": after["severity"] in GOOD,
            "p95_improved": _latency_improved(improvement),
            "validation_passed": bool(validation["passed"]),
            "incident_resolved": incident["status"] == "resolved",
        }
        return {
            "report": "demo",
            "crisisctl_version": __version__,
            "profile": self.profile.name,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "finished_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration_s": round(time.monotonic() - self.t0, 1),
            "target_ms": self.profile.target_ms,
            "ttl_s": self.profile.ttl_s,
            "service": {
                "url": self.url,
                "sick_pid": self.sick.pid if self.sick else None,
                "fixed_pid": self.fixed.pid if self.fixed else None,
                "kept_running": self.options.keep_running,
                "guard_token": DEFAULT_TOKEN,
            },
            "triage_before": before,
            "triage_after": after,
            "load_before": _load_figures(f["load_before"]),
            "load_after": _load_figures(f["load_after"]),
            "improvement_pct": improvement,
            "crowd": {
                "users": self.profile.crowd.users,
                "tabs_per_user": self.profile.crowd.tabs,
                "distinct_clients": self.crowd.distinct_clients if self.crowd else None,
                "before": crowd_before,
                "after": crowd_after,
                "polling_reduction_pct": round((1 - rate_after / rate_before) * 100, 1)
                if rate_before
                else None,
            },
            "service_stats_at_restart": f["sick_stats"],
            "validation": {
                "passed": validation["passed"],
                "success_rate": validation["success_rate"],
                # skipped checks are neither passed nor failed: they are listed apart
                "checks": {
                    c["name"]: c["passed"] for c in validation["checks"] if not c["skipped"]
                },
                "skipped": [c["name"] for c in validation["checks"] if c["skipped"]],
            },
            "incident": {**incident, "db": self.incident.db_url},
            "expectations": expectations,
            "passed": all(expectations.values()),
            "artefacts": dict(self.fig.artefacts, summary=str(self.out / "summary.json")),
            "steps": list(self.fig.steps),
        }


def _latency_improved(improvement: dict[str, float | None]) -> bool:
    """p95 got better; or no "before" request was answered in time (no p95 to compare: every
    one timed out on the sick service, as it may on a busy machine) and "after" ones were."""
    p95 = improvement["p95"]
    if p95 is not None:
        return p95 > 0.0
    return (improvement["error_rate"] or 0.0) > 0.0
