"""Generator CPU per request: a plain URL run vs a one-step journey, same server, same users.

Starts uvicorn serving `benchmarks.apps.overhead_apps:bare_app` on 127.0.0.1:18731, then runs
``crisisctl load`` (one process, 8 closed-model users, 4 s) twice each way, alternating, and
prints requests, requests/s and the generator's CPU (user + sys, start-up included) per
request. Run from the repository root: ``.venv/bin/python benchmarks/journey_cost.py``.
Wall-clock figures: run it on a quiet machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

PORT = 18731
USERS, DURATION = "8", "4s"


def run(args: list[str]) -> tuple[int, float, float]:
    """Requests, requests/s and CPU µs per request of one ``crisisctl load`` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [".venv/bin/crisisctl", "load", *args, "--processes", "1", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    data = json.loads(out.stdout)
    return data["requests"], data["requests_per_second"], cpu / data["requests"] * 1e6


def main() -> None:
    server = subprocess.Popen(
        [".venv/bin/uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
         "--port", str(PORT), "--log-level", "warning", "benchmarks.apps.overhead_apps:bare_app"]
    )  # fmt: skip
    time.sleep(2.5)
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "journey.yaml"
        scenario.write_text(
            f"base_url: http://127.0.0.1:{PORT}\n"
            f"model: {{type: closed, users: {USERS}, duration: {DURATION}}}\n"
            "steps:\n  - {name: root, path: /}\n"
        )
        plain = [f"http://127.0.0.1:{PORT}/", "--users", USERS, "--duration", DURATION]
        try:
            for round_ in (1, 2):
                for name, args in (("plain", plain), ("journey", [str(scenario)])):
                    requests, rps, us = run(args)
                    print(
                        f"{name} round {round_}: {requests} requests, {rps:.0f} req/s, "
                        f"{us:.1f} µs CPU/request, load average {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
