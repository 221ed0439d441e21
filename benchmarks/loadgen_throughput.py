"""Load-generator cost side by side: crisisctl's engine vs wrk, hey, Locust and aiohttp.

A bare Starlette hello-world (`benchmarks/apps/overhead_apps.py:bare_app`) runs under uvicorn
(uvloop + httptools, one worker, no access log) pinned to core 1; every generator runs pinned
to core 0 with the same number of connections for the same duration, one after the other,
against the same server. The server is the bottleneck, so what tells the generators apart is
**generator CPU µs per request**: the generator process's own CPU time (user + sys) divided
by the requests it completed. Requests/s are reported too.

How each generator's CPU is taken:

* wrk, hey and ``crisisctl_cli`` (``crisisctl load URL --users N --duration D --processes 1``,
  the CLI as a user runs it): the whole process, start-up included, from `wait4()`'s rusage
  (the target is judged on the CLI); the CLI's req/s is over its process's whole wall time;
* crisisctl (the engine in-process, for information), aiohttp, httpx
  (`benchmarks/apps/loadgen_clients.py`) and Locust: the process's own CPU time over the
  sending window only (the interpreter's start and imports excluded);
  Locust's window runs from "spawning complete" (its stats are reset then, ``--reset-stats``)
  to "test stop". Locust's ``--csv`` files are written periodically and can lag the end of the
  run, so its numbers come from its stats object through event listeners instead.

Latency agreement with wrk is judged at the same, fixed rate (``--rate``, default 2000 req/s).
Debian's wrk has no ``-R``, so wrk is paced by a Lua ``delay()`` (after each response a
connection waits an exponentially distributed pause of mean connections/rate seconds, also
before its first request) and compared with our closed model with the same think-time
distribution: the identical workload. Agreement means |ours/wrk − 1| ≤ 10 % for p50 and p99,
on the median of the per-round ratios (each round runs both back to back on the same server;
the machine drifts between rounds by more than 10 %, and pairing cancels that). Shown for
information: our open model at that rate (evenly spaced arrivals, latency from the actual
send like wrk's), and saturation with the same connections — there latency is the server's
queue (connections ÷ its rate, which differs between the two runs) plus its hiccups, so the
rates are not the same and its p99 swings ×2 from run to run.

Rounds are interleaved (each round runs every generator, starting at a different one, on a
fresh server warmed up by wrk); medians over rounds are reported. The machine is shared: a
run during which something else used > 10 % of either core is "disturbed" and repeated up to
``--retries`` times. The target (issue 3): ≤ 25 µs of generator CPU per request; it is also
given scaled to the issue's reference machine (where wrk measured 14 µs) through wrk's cost here.

The open model's latency is judged against the truth (`benchmarks/apps/latency_truth.py`):
a server with a fixed service time and a freeze of F every T has an analytic latency
distribution at a fixed rate (derived in `benchmarks/apps/freeze_server.py`); ``crisisctl
load --rate`` (the CLI) must measure its p50/p90/p99/p99.9 within ±5 %; wrk's closed-loop
figures on the same server are shown beside (``--truth-rounds``, default 3 rounds of 20 s).

The HTTPS row (``crisisctl_cli_https``, ``wrk_https``, ``hey_https``): the same app served by
uvicorn over TLS (a certificate for 127.0.0.1 from a private CA made with `trustme`), the same
connections and duration; each generator's CPU per request, the CLI's judged against wrk's
over TLS (target: ≤ 1.5 × wrk_https). The CLI verifies the certificate (``--cacert``); wrk and
hey do not verify — verification is paid once per connection, at the handshake, and the
connections are kept alive, so it is not what the row measures.

Run from the project root: ``.venv/bin/python benchmarks/loadgen_throughput.py [--quick]``.
Appends the run to ``benchmarks/results/loadgen_throughput.json`` (a list of every run; the
medians over all stored full runs are printed at the end: the figures to report). Exits 0
whether or not the target is met; 1 when a generator could not be measured. All traffic
goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402
from benchmarks.apps.latency_truth import (  # noqa: E402
    GENERATORS as TRUTH_GENERATORS,
)
from benchmarks.apps.latency_truth import (  # noqa: E402
    TruthSettings,
    crisisctl_cli,
    judge,
    truth_round,
)
from benchmarks.apps.loadgen_clients import LOCUSTFILE  # noqa: E402
from benchmarks.apps.loadgen_tools import (  # noqa: E402
    GeneratorRun,
    Server,
    core_times,
    cpu_model,
    parse_hey,
    parse_json_out,
    parse_wrk,
    run_pinned,
    tool_versions,
)

RESULTS = ROOT / "benchmarks" / "results" / "loadgen_throughput.json"
TARGET_US = 25.0
#: generator CPU µs/request the issue measured on its reference machine
REFERENCE_US = {"wrk": 14.0, "hey": 22.0, "aiohttp": 58.0, "locust": 78.0, "httpx": 500.0}
AGREEMENT = 0.10
MAX_INTERFERENCE = 0.10
GEN_CORE, SERVER_CORE = 0, 1
HOST = "127.0.0.1"  # the only address this benchmark ever talks to

LATENCY_HOW = (
    "Debian's wrk has no -R (fixed rate). fixed_rate_crisisctl_paced (the verdict): wrk paced "
    "by a Lua delay() drawing an exponential pause of mean connections/rate seconds after each "
    "response vs our closed model with the same think-time distribution — the identical "
    "workload at the same rate. Ratios are taken per round (ours ÷ wrk's run of the same round, "
    "back to back on the same server) and their median is judged: the machine drifts between "
    "rounds by more than the ±10 % asked (wrk's own p99 varies ±20 % round to round), which "
    "pairing cancels; the ratio of the medians is shown too. saturated_same_connections "
    "(information): our closed model vs plain wrk, same connections, no pause; the server is "
    "the bottleneck, so latency is its queue (connections ÷ its rate, which differs between "
    "the two runs) plus its hiccups — not the same rate, and its p99 swings ×2 run to run. "
    "fixed_rate_crisisctl_open (information): our open model at --rate with evenly spaced "
    "arrivals, latency from the actual send like wrk's."
)
#: wrk's pacing: an exponential pause (whole ms, wrk's timer unit) after each response
WRK_PACE_LUA = """\
local mean_ms = {mean_ms}
function delay()
  return math.floor(-math.log(1 - math.random()) * mean_ms + 0.5)
end
"""
THROUGHPUT = ("crisisctl_cli", "crisisctl", "wrk", "hey", "locust", "aiohttp")
LATENCY = ("wrk_paced", "crisisctl_paced", "crisisctl_open")
HTTPS = ("crisisctl_cli_https", "wrk_https", "hey_https")
KNOWN = (*THROUGHPUT, "httpx", *LATENCY, *HTTPS)
#: the HTTPS row's target: the CLI's CPU per request over TLS at most this many times wrk's
HTTPS_TARGET_RATIO = 1.5


@dataclass
class Run:
    """One measured generator run (a row of the JSON's ``runs``)."""

    generator: str
    round: int
    attempt: int = 1
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    rps: float = 0.0
    cpu_s: float = 0.0
    cpu_us_per_req: float = 0.0
    #: of cpu_us_per_req, the kernel's share (system calls); None when the generator can't say
    sys_us_per_req: float | None = None
    #: CPU seconds of the whole generator process (start-up included)
    cpu_total_s: float = 0.0
    #: generator CPU seconds per wall second of its window (≈ 1: the generator was the limit)
    gen_util: float = 0.0
    server_cpu_us_per_req: float = 0.0
    server_util: float = 0.0
    #: share of each core used by other processes during the run
    others_gen_core: float = 0.0
    others_server_core: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, Any] | None = None
    disturbed: bool = False
    used: bool = False
    error: str | None = None


def command(gen: str, args: argparse.Namespace, url: str, tmp: Path) -> tuple[list[str], str]:
    """The command line of one generator run and how to read its output."""
    if gen.endswith("_https"):  # the same generator, over TLS (the URL says https://)
        cmd, kind = command(gen.removesuffix("_https"), args, url, tmp)
        if kind == "cli":
            cmd += ["--cacert", str(tmp / "bench-ca.pem")]
        return cmd, kind
    n, d = args.connections, args.duration
    think = round(n / args.rate, 3)
    clients = [sys.executable, "-m", "benchmarks.apps.loadgen_clients"]
    common = ["--url", url, "--connections", str(n), "--duration", str(d)]
    if gen in ("wrk", "wrk_paced"):
        cmd = ["wrk", "-t1", f"-c{n}", f"-d{max(1, round(d))}s", "--latency", url]
        if gen == "wrk_paced":
            script = tmp / "pace.lua"
            script.write_text(WRK_PACE_LUA.format(mean_ms=think * 1000))
            cmd[1:1] = ["-s", str(script)]
        return cmd, "wrk"
    if gen == "crisisctl_cli":
        return [
            *crisisctl_cli(), "load", url, "--users", str(n), "--duration", f"{d:g}s",
            "--processes", "1", "--timeout", "10s", "--out", str(tmp / "cli-report.json"),
        ], "cli"  # fmt: skip
    if gen == "hey":
        return ["hey", "-z", f"{max(1, round(d))}s", "-c", str(n), "-cpus", "1", url], "hey"
    if gen == "locust":
        locustfile = tmp / "locustfile.py"
        locustfile.write_text(LOCUSTFILE.format(think_s=0.0))
        spawn_s = 1  # -r n: every user is up after one second, then the window starts
        return [
            sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
            "-u", str(n), "-r", str(n), "-t", f"{round(d) + spawn_s}s", "--host", url.rstrip("/"),
            "--reset-stats", "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0",
        ], "locust"  # fmt: skip
    if gen == "crisisctl_paced":
        return [*clients, "crisisctl", *common, "--think", str(think), "--exponential"], "json"
    if gen == "crisisctl_open":
        return [*clients, "crisisctl_open", *common, "--rate", str(args.rate)], "json"
    return [*clients, gen, *common], "json"


def measure(gen: str, rnd: int, args: argparse.Namespace, server: Server, tmp: Path) -> Run:
    run = Run(generator=gen, round=rnd)
    url = f"{'https' if server.tls is not None else 'http'}://{HOST}:{server.port}/"
    cmd, kind = command(gen, args, url, tmp)
    locust_out = tmp / "locust.json"
    locust_out.unlink(missing_ok=True)
    env = {"LOADGEN_LOCUST_OUT": str(locust_out)}
    gen0, srv0 = core_times(GEN_CORE), core_times(SERVER_CORE)
    server_cpu0 = server.cpu_seconds()
    try:
        done: GeneratorRun = run_pinned(cmd, GEN_CORE, args.duration + 60, env, cwd=ROOT)
        run.cpu_total_s = done.cpu_s
        server_cpu = server.cpu_seconds() - server_cpu0
        gen_busy, srv_busy = core_times(GEN_CORE) - gen0, core_times(SERVER_CORE) - srv0
        if done.returncode != 0:
            raise RuntimeError(f"exited with {done.returncode}: {done.output.strip()[-800:]}")
        if kind == "wrk":
            out = parse_wrk(done.output)
        elif kind == "hey":
            out = parse_hey(done.output)
        elif kind == "cli":
            out = parse_cli_report(tmp / "cli-report.json", done)
        elif kind == "locust":
            out = parse_json_out(locust_out.read_text() if locust_out.exists() else "")
        else:
            out = parse_json_out(done.output.strip().splitlines()[-1])
        run.requests, run.errors, run.wall_s = out["requests"], out["errors"], out["wall_s"]
        run.p50_ms, run.p99_ms = out.get("p50_ms"), out.get("p99_ms")
        run.cpu_s = out["cpu_s"] if out.get("cpu_s") is not None else done.cpu_s
        run.extra = {k: v for k, v in out.items() if k not in asdict(run)} or None
        if run.requests <= 0 or run.wall_s <= 0:
            raise RuntimeError(f"completed no request: {done.output.strip()[-400:]}")
        run.rps = run.requests / run.wall_s
        run.cpu_us_per_req = run.cpu_s * 1e6 / run.requests
        sys_s = done.sys_s if kind in ("wrk", "hey", "cli") else out.get("sys_s")
        run.sys_us_per_req = None if sys_s is None else sys_s * 1e6 / run.requests
        run.gen_util = run.cpu_s / run.wall_s
        run.server_cpu_us_per_req = server_cpu * 1e6 / run.requests
        run.server_util = server_cpu / run.wall_s
        span = done.wall_s
        run.others_gen_core = max(0.0, gen_busy - done.cpu_s) / span
        run.others_server_core = max(0.0, srv_busy - server_cpu) / span
        run.disturbed = max(run.others_gen_core, run.others_server_core) > MAX_INTERFERENCE
        if run.errors:
            run.error = f"{run.errors} failed requests: run invalid"
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        run.error = str(exc)
    if run.error:
        print(f"  ERROR {gen} round {rnd}: {run.error}", file=sys.stderr)
    return run


def parse_cli_report(path: Path, done: GeneratorRun) -> dict[str, Any]:
    """``crisisctl load --out``'s report, measured as a whole process like wrk and hey: CPU
    and wall time of the process, start-up and report included."""
    import json

    if not path.exists():
        raise RuntimeError(f"crisisctl load wrote no report: {done.output.strip()[-400:]}")
    report = json.loads(path.read_text())
    statuses = {int(k): v for k, v in (report.get("status_counts") or {}).items()}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    errors = sum((report.get("errors") or {}).values()) + report["completed"] - ok
    path.unlink()
    return {
        "requests": ok,
        "errors": errors,
        "wall_s": done.wall_s,
        "cpu_s": done.cpu_s,
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "sending_s": report.get("duration_s"),
        "rps_while_sending": report.get("requests_per_second"),
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[Run], gens: list[str]) -> dict[str, dict[str, Any]]:
    med: dict[str, dict[str, Any]] = {}
    for gen in gens:
        ok = [r for r in runs if r.generator == gen and r.used and r.error is None]
        med[gen] = {
            "valid_rounds": len(ok),
            "disturbed_used": sum(1 for r in ok if r.disturbed),
            "rps": median([r.rps for r in ok]),
            "cpu_us_per_req": median([r.cpu_us_per_req for r in ok]),
            "cpu_us_per_req_min": min((r.cpu_us_per_req for r in ok), default=None),
            "sys_us_per_req": median(
                [r.sys_us_per_req for r in ok if r.sys_us_per_req is not None]
            ),
            "gen_util": median([r.gen_util for r in ok]),
            "server_cpu_us_per_req": median([r.server_cpu_us_per_req for r in ok]),
            "server_util": median([r.server_util for r in ok]),
            "p50_ms": median([r.p50_ms for r in ok if r.p50_ms is not None]),
            "p99_ms": median([r.p99_ms for r in ok if r.p99_ms is not None]),
            "cpu_us_per_req_all_rounds": [round(r.cpu_us_per_req, 2) for r in ok],
        }
    for gen in gens:
        row = med[gen]
        wrk = med.get("wrk_https" if gen.endswith("_https") else "wrk", {})
        for key, ratio in (("cpu_us_per_req", "cpu_ratio_to_wrk"), ("rps", "rps_ratio_to_wrk")):
            row[ratio] = (
                round(row[key] / wrk[key], 3) if row[key] is not None and wrk.get(key) else None
            )
        ref = REFERENCE_US.get(gen)
        row["reference_machine_us"] = ref
    return med


def paired_ratios(runs: list[Run], ours: str, theirs: str, key: str) -> list[float]:
    """ours ÷ theirs for `key`, per round where both generators have a valid run."""
    by_round: dict[int, dict[str, Run]] = {}
    for r in runs:
        if r.used and r.error is None:
            by_round.setdefault(r.round, {})[r.generator] = r
    out = []
    for pair in by_round.values():
        a, b = pair.get(ours), pair.get(theirs)
        if a is not None and b is not None:
            va, vb = getattr(a, key), getattr(b, key)
            if va is not None and vb:
                out.append(round(va / vb, 3))
    return out


def agreement(
    ours: dict[str, Any], theirs: dict[str, Any], paired: dict[str, list[float]]
) -> dict[str, Any]:
    """p50/p99 ratios ours/wrk (median of the per-round ratios, and ratio of the medians);
    passes when both per-round medians are within ±10 %."""
    out: dict[str, Any] = {}
    passes = []
    for p in ("p50_ms", "p99_ms"):
        a, b = ours.get(p), theirs.get(p)
        ratio = a / b if a is not None and b else None
        out[f"ours_{p}"], out[f"wrk_{p}"] = a, b
        per_round = paired.get(p, [])
        judged = median(per_round)
        out[f"{p[:3]}_ratio"] = None if judged is None else round(judged, 3)
        out[f"{p[:3]}_ratio_per_round"] = per_round
        out[f"{p[:3]}_ratio_of_medians"] = None if ratio is None else round(ratio, 3)
        passes.append(None if judged is None else abs(judged - 1) <= AGREEMENT)
    out["rps_ours"], out["rps_wrk"] = ours.get("rps"), theirs.get("rps")
    out["pass"] = None if None in passes else all(passes)
    return out


def verdicts(med: dict[str, dict[str, Any]], runs: list[Run]) -> dict[str, Any]:
    # the CLI process, start-up included, like wrk and hey; the in-process engine if not run
    judged_gen = "crisisctl_cli" if "crisisctl_cli" in med else "crisisctl"
    ours = med.get(judged_gen, {}).get("cpu_us_per_req")
    wrk = med.get("wrk", {}).get("cpu_us_per_req")
    scaled = ours * REFERENCE_US["wrk"] / wrk if ours is not None and wrk else None
    target: dict[str, Any] = {
        "check": f"{judged_gen} cpu_us_per_req <= {TARGET_US}",
        "generator": judged_gen,
        "crisisctl_cpu_us_per_req": ours,
        "pass": None if ours is None else ours <= TARGET_US,
        # wrk costs 14 µs on the issue's machine: our cost in that machine's µs
        "crisisctl_us_scaled_to_reference": None if scaled is None else round(scaled, 2),
        "pass_scaled_to_reference": None if scaled is None else scaled <= TARGET_US,
        # information: the same scaling through each peer's cost (wrk's is the strictest)
        "scaled_to_reference_by_peer": {
            gen: round(ours * REFERENCE_US[gen] / med[gen]["cpu_us_per_req"], 2)
            for gen in ("wrk", "hey", "aiohttp", "locust")
            if ours is not None and med.get(gen, {}).get("cpu_us_per_req")
        },
    }
    latency: dict[str, Any] = {"how": LATENCY_HOW}

    def compare(ours: str, theirs: str) -> dict[str, Any]:
        paired = {p: paired_ratios(runs, ours, theirs, p) for p in ("p50_ms", "p99_ms")}
        return agreement(med[ours], med[theirs], paired)

    if "wrk_paced" in med:
        for gen in ("crisisctl_paced", "crisisctl_open"):
            if gen in med:
                latency[f"fixed_rate_{gen}"] = compare(gen, "wrk_paced")
        if "fixed_rate_crisisctl_open" in latency:
            latency["fixed_rate_crisisctl_open"]["informative"] = True
    if "crisisctl" in med and "wrk" in med:
        latency["saturated_same_connections"] = compare("crisisctl", "wrk")
        latency["saturated_same_connections"]["informative"] = True
    judged = latency.get("fixed_rate_crisisctl_paced", {}).get("pass")
    latency["pass"] = judged
    return {"target": target, "latency_agreement": latency, "https": https_verdict(med)}


def https_verdict(med: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The HTTPS row: the CLI's CPU per request over TLS against wrk's (and hey's)."""
    ours = med.get("crisisctl_cli_https", {}).get("cpu_us_per_req")
    wrk = med.get("wrk_https", {}).get("cpu_us_per_req")
    hey = med.get("hey_https", {}).get("cpu_us_per_req")
    ratio = round(ours / wrk, 3) if ours is not None and wrk else None
    return {
        "check": f"crisisctl_cli_https cpu_us_per_req <= {HTTPS_TARGET_RATIO} x wrk_https",
        "crisisctl_cli_https_cpu_us_per_req": ours,
        "wrk_https_cpu_us_per_req": wrk,
        "hey_https_cpu_us_per_req": hey,
        "ratio_to_wrk": ratio,
        "ratio_to_hey": round(ours / hey, 3) if ours is not None and hey else None,
        "pass": None if ratio is None else ratio <= HTTPS_TARGET_RATIO,
    }


def make_certificate(tmp: Path) -> Path:
    """A private CA (``tmp/bench-ca.pem``, which the CLI is told to trust) and a certificate for
    127.0.0.1 with its key (the returned PEM file, which the TLS server serves)."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "bench-ca.pem"))
    leaf = ca.issue_cert(HOST)
    path = tmp / "bench-cert.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def print_table(med: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'generator':<16} {'req/s':>8} {'CPU µs/req':>11} {'sys µs':>7} {'× wrk':>6} "
        f"{'gen util':>8} {'srv util':>8} {'p50 ms':>7} {'p99 ms':>7} {'ref µs':>7} {'rounds':>6}"
    )
    print(header)
    print("-" * len(header))
    for gen, row in med.items():
        print(
            f"{gen:<16} {fmt(row['rps'], '.0f'):>8} {fmt(row['cpu_us_per_req']):>11} "
            f"{fmt(row['sys_us_per_req']):>7} "
            f"{fmt(row['cpu_ratio_to_wrk'], '.2f'):>6} {fmt(row['gen_util'], '.2f'):>8} "
            f"{fmt(row['server_util'], '.2f'):>8} {fmt(row['p50_ms'], '.2f'):>7} "
            f"{fmt(row['p99_ms'], '.2f'):>7} {fmt(row['reference_machine_us'], '.0f'):>7} "
            f"{row['valid_rounds']:>6}"
        )


def print_truth_round(rnd: int, truth: TruthSettings, one: dict[str, Any]) -> None:
    analytic = truth.analytic_ms()
    print(f"  truth round {rnd}: analytic " + " ".join(f"{k} {v:.1f}" for k, v in analytic.items()))
    for gen, row in one.items():
        if gen == "server":
            print(f"    freeze server: {row} (how late its responses left, all three runs)")
            continue
        pct = row["percentiles_ms"]
        print(
            f"    {gen:<20} "
            + " ".join(f"{k} {fmt(pct[k])} (×{fmt(row['ratio_to_truth'][k], '.3f')})" for k in pct)
        )


def report_medians(stored: list[dict[str, Any]]) -> None:
    """The figures to report: medians over every stored full run (never the best run)."""
    print("\nmedians over every stored full run (the figures docs/benchmarks.md reports):")
    for gen in ("crisisctl_cli", "crisisctl", "wrk", "hey"):
        print_median(
            f"  {gen} CPU µs/request",
            stored,
            lambda run, g=gen: run["medians"][g]["cpu_us_per_req"],
        )
    for k in ("p50", "p90", "p99", "p999"):
        print_median(
            f"  open model {k} ÷ truth",
            stored,
            lambda run, k=k: run["latency_truth"]["crisisctl_cli_open"]["median_ratio_to_truth"][k],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per generator run")
    parser.add_argument("--connections", type=int, default=64, help="connections / users")
    parser.add_argument("--rate", type=float, default=2000.0, help="req/s of the paced runs")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up per server (s)")
    parser.add_argument("--retries", type=int, default=1, help="repeats of a disturbed run")
    parser.add_argument(
        "--generators",
        default=",".join((*THROUGHPUT, *LATENCY, *HTTPS)),
        help=f"comma list from {', '.join(KNOWN)}",
    )
    parser.add_argument(
        "--truth-rounds", type=int, default=3, help="rounds of the latency-truth check (0: none)"
    )
    parser.add_argument("--truth-duration", type=int, default=20, help="seconds per truth run")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.retries = 1, 2.0, 1.0, 0
        args.truth_rounds, args.truth_duration = min(args.truth_rounds, 1), 6
    gens = [g.strip() for g in args.generators.split(",") if g.strip()]
    unknown = [g for g in gens if g not in KNOWN]
    if unknown:
        parser.error(f"unknown generators {unknown}; known: {', '.join(KNOWN)}")
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.rate <= 0:
        parser.error("--rounds, --duration and --connections must be ≥ 1 and --rate > 0")
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        print("error: needs 2 usable cores and taskset (util-linux)", file=sys.stderr)
        return 2
    missing = [
        t for t in ("wrk", "hey") if any(g.startswith(t) for g in gens) and not shutil.which(t)
    ]
    if missing:
        script = ROOT / "scripts" / "ensure-system-packages.sh"
        if subprocess.run(["bash", str(script), *missing], check=False).returncode != 0:
            print(
                f"error: could not install {', '.join(missing)} (Debian packages)", file=sys.stderr
            )
            return 2
    print(
        f"loadgen_throughput: {', '.join(gens)}; {args.rounds} round(s) of {args.duration:.0f} s, "
        f"{args.connections} connections; server on core {SERVER_CORE}, generators on core "
        f"{GEN_CORE}"
    )
    os.sched_setaffinity(0, {GEN_CORE})  # this process waits on the generators' core
    started = time.time()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmpdir:
        tmp = Path(tmpdir)
        tls = make_certificate(tmp) if any(g in HTTPS for g in gens) else None
        for rnd in range(1, args.rounds + 1):
            server = Server(SERVER_CORE)
            tls_server = Server(SERVER_CORE, tls=tls) if tls is not None else None
            try:
                for one in (server, tls_server):
                    if one is None:
                        continue
                    one.wait_ready()
                    if args.warmup > 0:
                        scheme = "https" if one.tls is not None else "http"
                        run_pinned(
                            ["wrk", "-t1", f"-c{args.connections}", f"-d{round(args.warmup)}s",
                             f"{scheme}://{HOST}:{one.port}/"],
                            GEN_CORE, args.warmup + 30, {}, cwd=ROOT,
                        )  # fmt: skip
                shift = (rnd - 1) % len(gens)
                for gen in gens[shift:] + gens[:shift]:
                    target = tls_server if gen in HTTPS and tls_server is not None else server
                    for attempt in range(1, args.retries + 2):
                        time.sleep(0.5)  # let the previous run's connections close
                        run = measure(gen, rnd, args, target, tmp)
                        run.attempt = attempt
                        runs.append(run)
                        state = "INVALID" if run.error else "disturbed" if run.disturbed else "ok"
                        print(
                            f"  round {rnd} {gen:<16} {run.rps:>8.0f} req/s "
                            f"{run.cpu_us_per_req:>7.1f} µs/req  gen {run.gen_util:.2f} "
                            f"srv {run.server_util:.2f}  others {run.others_gen_core:.2f}/"
                            f"{run.others_server_core:.2f}  {state}"
                        )
                        if not run.disturbed or run.error:
                            break
                    run.used = True  # the first undisturbed attempt, else the last one
            finally:
                server.stop()
                if tls_server is not None:
                    tls_server.stop()
        truth = TruthSettings(duration_s=args.truth_duration)
        truth_rounds = []
        for rnd in range(1, args.truth_rounds + 1):
            try:
                one = truth_round(truth, SERVER_CORE, GEN_CORE, tmp, ROOT)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                print(f"  ERROR truth round {rnd}: {exc}", file=sys.stderr)
                truth_rounds.append({"error": str(exc)})
                continue
            truth_rounds.append(one)
            print_truth_round(rnd, truth, one)

    med = summarize(runs, gens)
    print()
    print_table(med)
    result = verdicts(med, runs)
    target = result["target"]
    verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
    print(
        f"\ntarget {target['check']}: {verdict[target['pass']]} "
        f"({fmt(target['crisisctl_cpu_us_per_req'])} µs/request here); scaled to the issue's "
        f"machine by wrk's cost: {fmt(target['crisisctl_us_scaled_to_reference'])} µs "
        f"({verdict[target['pass_scaled_to_reference']]})"
    )
    for name, row in result["latency_agreement"].items():
        if not isinstance(row, dict):
            continue
        print(
            f"latency {name}: p50 {fmt(row['ours_p50_ms'], '.3f')} vs wrk "
            f"{fmt(row['wrk_p50_ms'], '.3f')} ms, p99 {fmt(row['ours_p99_ms'], '.3f')} vs "
            f"{fmt(row['wrk_p99_ms'], '.3f')} ms (medians); per-round ratios: p50 "
            f"×{fmt(row['p50_ratio'], '.2f')} {row['p50_ratio_per_round']}, p99 "
            f"×{fmt(row['p99_ratio'], '.2f')} {row['p99_ratio_per_round']}: "
            + ("information only" if row.get("informative") else verdict[row["pass"]])
        )
    https = result["https"]
    if https["crisisctl_cli_https_cpu_us_per_req"] is not None or https["wrk_https_cpu_us_per_req"]:
        print(
            f"https: crisisctl_cli {fmt(https['crisisctl_cli_https_cpu_us_per_req'])} µs/req, "
            f"wrk {fmt(https['wrk_https_cpu_us_per_req'])}, hey "
            f"{fmt(https['hey_https_cpu_us_per_req'])}: ×{fmt(https['ratio_to_wrk'], '.2f')} wrk "
            f"(target ≤ {HTTPS_TARGET_RATIO:g}×): {verdict[https['pass']]}"
        )
    agreed = verdict[result["latency_agreement"]["pass"]]
    print(f"latency agreement with wrk within ±{AGREEMENT:.0%}: {agreed}")
    good_truth = [r for r in truth_rounds if "error" not in r]
    if good_truth:
        result["latency_truth"] = judge(truth, good_truth)
        row = result["latency_truth"]
        for gen in TRUTH_GENERATORS:
            ratios = row[gen]["median_ratio_to_truth"]
            print(
                f"latency vs the truth, {gen}: "
                + ", ".join(f"{k} ×{fmt(v, '.3f')}" for k, v in ratios.items())
                + (" (within ±5 %)" if row[gen]["within_5pct"] else " (NOT within ±5 %)")
            )
        print(f"open-model latency within ±5 % of the truth: {verdict[row['pass']]}")
    result["latency_truth_settings"] = truth.as_dict()
    result["latency_truth_rounds"] = truth_rounds
    doc = {
        "benchmark": "loadgen_throughput",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "versions": tool_versions(),
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "paced_rate": args.rate,
            "paced_think_s": round(args.connections / args.rate, 3),
            "warmup_s": args.warmup,
            "retries": args.retries,
            "generators": gens,
            "server": "uvicorn --loop uvloop --http httptools --no-access-log, 1 worker, "
            f"benchmarks.apps.overhead_apps:bare_app, core {SERVER_CORE}",
            "generator_core": GEN_CORE,
            "disturbed_if": f"others on either core > {MAX_INTERFERENCE}",
            "reference_machine_us": REFERENCE_US,
        },
        "runs": [asdict(r) for r in runs],
        "medians": med,
        **result,
    }
    stored = append_run(args.output, doc, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored)")
    report_medians(stored)
    return 1 if any(r.used and r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
