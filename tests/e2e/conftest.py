"""Fixtures of the console's browser tests, one set per test module: a guarded uvicorn app under
bounded loopback traffic, a `crisisctl serve` watching it (interval 0.5 s, pings every second,
one fixed-severity alert that fires) and Debian's Chromium driven by Playwright.

The tests reuse the integration tests' real-server helpers (guard_servers, serve_support):
their folder is put on the import path here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from console_support import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    GUARD_TOKEN,
    SERVICE,
    Traffic,
)
from guard_servers import GuardServer, guard_servers  # noqa: E402
from playwright.sync_api import Browser, Playwright, sync_playwright  # noqa: E402
from serve_support import ServeProcess  # noqa: E402


@pytest.fixture(scope="module")
def guard() -> Iterator[GuardServer]:
    with guard_servers({"token": GUARD_TOKEN}) as (server,), Traffic(server):
        yield server


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, guard: GuardServer) -> Iterator[ServeProcess]:
    watch = f"""\
interval: 0.5s
services:
  {SERVICE}:
    guards: ["{guard.url}"]
    token: env:CONSOLE_TEST_GUARD_TOKEN
rules:
  - {{name: serving, kind: threshold, metric: guard_requests_total, above: 1, severity: P3}}
incidents: {{triage: false, open_at: P2}}
"""
    process = ServeProcess(
        tmp_path_factory.mktemp("console"),
        watch,
        "events: {ping: 1s}\n",
        env={"CONSOLE_TEST_GUARD_TOKEN": GUARD_TOKEN},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: run `bash scripts/ensure-system-packages.sh chromium` "
        "(`make services` does)"
    )
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()
