"""The open model's latency judged against the truth: `crisisctl load` vs a known distribution.

Part of `benchmarks/loadgen_throughput.py` (issue 14, point 15). The server is
`benchmarks/apps/freeze_server.py`: a fixed service time S, and a freeze of F every T, whose
latency distribution at a fixed arrival rate is known exactly (derived in its docstring).
Each round, on a fresh server pinned to the server core:

1. ``crisisctl load URL --rate λ --duration D --connections C --processes 1 --out FILE``, the
   CLI as a user runs it, pinned to the generator core; its corrected (open-model) latency
   p50/p90/p99/p99.9 from the JSON report is compared with the analytic quantiles;
2. wrk, closed loop (C_wrk connections), shown beside, its p50/p90/p99/p99.9 from a Lua
   ``done()``: once paced to about the same rate by a Lua ``delay()`` (exponential pauses of
   mean C_wrk/λ after each response; Debian's wrk has no ``-R``), once unpaced (as fast as
   the server answers). Neither sends at a fixed rate: a connection stuck in a freeze sends
   nothing else (coordinated omission), so a freeze holds C_wrk requests instead of λF; wrk 4
   then back-fills synthetic samples from the mean interval of a connection's requests
   (``stats_correct``), an estimate that lands near the truth but not on it. The freeze
   server's own lateness (how late its responses left after their due time) is reported too.

D is a whole number of periods, so arrival phases cover the period evenly. Verdict: the
median over rounds of measured ÷ analytic is within ±5 % for each of the four percentiles.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.apps.freeze_server import FreezeModel
from benchmarks.apps.loadgen_tools import run_pinned

__all__ = ["GENERATORS", "PERCENTILES", "TruthSettings", "judge", "truth_round"]

HOST = "127.0.0.1"
TOLERANCE = 0.05
#: percentile label -> quantile
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
GENERATORS = ("crisisctl_cli_open", "wrk_paced_closed", "wrk_closed")
WRK_LUA = """\
local mean_ms = {mean_ms}
if mean_ms > 0 then
  function delay()
    return math.floor(-math.log(1 - math.random()) * mean_ms + 0.5)
  end
end
function done(summary, latency, requests)
  for _, p in ipairs({{50, 90, 99, 99.9}}) do
    io.write(string.format("PCTL %g %d\\n", p, latency:percentile(p)))
  end
end
"""


class TruthSettings:
    """The freeze server's model and the load: rate λ, duration D, connections."""

    def __init__(
        self,
        *,
        service_ms: float = 20.0,
        freeze_ms: float = 200.0,
        period_s: float = 1.0,
        rate: float = 500.0,
        duration_s: int = 20,
        connections: int = 256,
        wrk_connections: int = 64,
    ) -> None:
        self.model = FreezeModel(service_ms / 1000, freeze_ms / 1000, period_s)
        self.rate = rate
        # a whole number of periods: the arrival phases cover the period evenly
        self.duration_s = max(period_s, round(duration_s / period_s) * period_s)
        self.connections = connections
        self.wrk_connections = wrk_connections

    def analytic_ms(self) -> dict[str, float]:
        return {k: round(self.model.quantile(q) * 1000, 3) for k, q in PERCENTILES.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "service_ms": self.model.service_s * 1000,
            "freeze_ms": self.model.freeze_s * 1000,
            "period_s": self.model.period_s,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "connections": self.connections,
            "wrk_connections": self.wrk_connections,
            "analytic_ms": self.analytic_ms(),
        }


def _start_server(s: TruthSettings, core: int, root: Path) -> tuple[subprocess.Popen[str], int]:
    cmd = [
        "taskset", "-c", str(core), sys.executable, "-m", "benchmarks.apps.freeze_server",
        "--service-ms", str(s.model.service_s * 1000), "--freeze-ms",
        str(s.model.freeze_s * 1000), "--period-s", str(s.model.period_s),
        "--max-s", str(4 * s.duration_s + 120),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.match(r"listening (\d+)", line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"the freeze server did not start: {line!r}")
    return proc, int(match.group(1))


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop the freeze server; what it served and how late its responses left (µs)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    tail = proc.stdout.read() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    match = re.search(r"served (\d+) late_us p50 (\d+) p99 (\d+) max (\d+)", tail)
    if match is None:
        return {}
    served, p50, p99, worst = map(int, match.groups())
    return {"served": served, "late_us_p50": p50, "late_us_p99": p99, "late_us_max": worst}


def crisisctl_cli() -> list[str]:
    """The installed ``crisisctl`` command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "crisisctl"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: install the project (make unit) first")
    return [str(exe)]


def _cli_run(s: TruthSettings, url: str, core: int, tmp: Path, root: Path) -> dict[str, Any]:
    out = tmp / "truth-cli.json"
    out.unlink(missing_ok=True)
    cmd = [
        *crisisctl_cli(), "load", url, "--rate", f"{s.rate:g}", "--duration",
        f"{s.duration_s:g}s", "--connections", str(s.connections), "--processes", "1",
        "--timeout", "5s", "--out", str(out),
    ]  # fmt: skip
    done = run_pinned(cmd, core, s.duration_s + 60, {}, cwd=root)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"crisisctl load failed ({done.returncode}): {done.output[-600:]}")
    report = json.loads(out.read_text())
    lat = report["latency_ms"]
    return {
        "percentiles_ms": {k: lat[k] for k in PERCENTILES},
        "uncorrected_ms": {
            k: (report.get("latency_uncorrected_ms") or {}).get(k) for k in PERCENTILES
        },
        "requests": report.get("requests"),
        "completed": report.get("completed"),
        "dropped": report.get("dropped"),
        "late_starts": report.get("late_starts"),
        "errors": {k: v for k, v in (report.get("errors") or {}).items() if v},
        "process_cpu_s": round(done.cpu_s, 3),
        "process_wall_s": round(done.wall_s, 3),
    }


def _wrk_run(
    s: TruthSettings, url: str, core: int, tmp: Path, root: Path, paced: bool
) -> dict[str, Any]:
    script = tmp / "truth-wrk.lua"
    mean_ms = round(s.wrk_connections / s.rate * 1000, 3) if paced else 0
    script.write_text(WRK_LUA.format(mean_ms=mean_ms))
    cmd = [
        "wrk", "-t1", f"-c{s.wrk_connections}", f"-d{round(s.duration_s)}s", "-s", str(script),
        url,
    ]  # fmt: skip
    done = run_pinned(cmd, core, s.duration_s + 60, {}, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.output[-600:]}")
    pct = {
        float(m.group(1)): int(m.group(2)) / 1000.0
        for m in re.finditer(r"^PCTL ([\d.]+) (\d+)$", done.output, re.M)
    }
    total = re.search(r"(\d+) requests in ([\d.]+)s", done.output)
    return {
        "percentiles_ms": {k: pct.get(q * 100) for k, q in PERCENTILES.items()},
        "requests": int(total.group(1)) if total else None,
        "rate": round(int(total.group(1)) / float(total.group(2)), 1) if total else None,
    }


def truth_round(
    s: TruthSettings, server_core: int, gen_core: int, tmp: Path, root: Path
) -> dict[str, Any]:
    """One round: a fresh freeze server, the CLI's open model, then wrk paced."""
    proc, port = _start_server(s, server_core, root)
    url = f"http://{HOST}:{port}/"
    try:
        time.sleep(0.3)
        cli = _cli_run(s, url, gen_core, tmp, root)
        time.sleep(0.5)
        paced = _wrk_run(s, url, gen_core, tmp, root, paced=True)
        time.sleep(0.5)
        unpaced = _wrk_run(s, url, gen_core, tmp, root, paced=False)
    finally:
        server = _stop(proc)
    analytic = s.analytic_ms()
    for run in (cli, paced, unpaced):
        run["ratio_to_truth"] = {
            k: (round(v / analytic[k], 4) if v is not None else None)
            for k, v in run["percentiles_ms"].items()
        }
    return {
        "crisisctl_cli_open": cli,
        "wrk_paced_closed": paced,
        "wrk_closed": unpaced,
        "server": server,
    }


def judge(s: TruthSettings, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of measured ÷ analytic per percentile; pass within ±5 %."""
    out: dict[str, Any] = {"analytic_ms": s.analytic_ms(), "tolerance": TOLERANCE}
    for gen in GENERATORS:
        ratios: dict[str, float | None] = {}
        for k in PERCENTILES:
            vals = [r[gen]["ratio_to_truth"][k] for r in rounds if r[gen]["ratio_to_truth"][k]]
            ratios[k] = round(statistics.median(vals), 4) if vals else None
        within = [v is not None and abs(v - 1) <= TOLERANCE for v in ratios.values()]
        out[gen] = {"median_ratio_to_truth": ratios, "within_5pct": all(within)}
    out["pass"] = out["crisisctl_cli_open"]["within_5pct"]
    return out
