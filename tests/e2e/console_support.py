"""Helpers of the console's browser tests: Debian's Chromium, a signed-in browser context, the
page's live-feed state, the serve API as an operator, the server's stream count, screenshots.

(This module holds no tests; the fixtures that start the guarded app, serve and the browser
are in conftest.py.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from guard_servers import GuardServer
from playwright.sync_api import Browser, BrowserContext, Page
from serve_support import OPERATOR_TOKEN, ServeProcess, bearer

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database
from crisisctl.severity import Severity

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
GUARD_TOKEN = "console-guard-control-token"
SERVICE = "api"
#: the traffic thread stops by itself after this long, whatever happens to the test
TRAFFIC_MAX_S = 180.0
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float, step: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(step)


class Traffic:
    """Bounded loopback load on the guarded app (a thread): fast and slower requests."""

    def __init__(self, server: GuardServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + TRAFFIC_MAX_S
        paths = ("/ok", "/slow?s=0.02", "/ok", "/slow?s=0.05")
        with httpx.Client(base_url=self.server.url, trust_env=False, timeout=2.0) as client:
            n = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(paths[n % len(paths)])
                n += 1
                time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def context_for(
    browser: Browser,
    serve: ServeProcess,
    token: str | None,
    *,
    init_script: str | None = None,
    bypass_csp: bool = False,
) -> BrowserContext:
    """A browser context signed in with `token` (POST /api/session sets its cookies)."""
    context = browser.new_context(
        base_url=serve.url, viewport={"width": 1400, "height": 900}, bypass_csp=bypass_csp
    )
    if init_script:
        context.add_init_script(init_script)
    if token is not None:
        answer = context.request.post("/api/session", data={"token": token})
        assert answer.status == 204, answer.text()
    return context


def live(page: Page) -> dict[str, Any]:
    """The page's live feed state (window.crisisctlLive.snapshot())."""
    state: dict[str, Any] = page.evaluate(
        "() => window.crisisctlLive ? window.crisisctlLive.snapshot() : {}"
    )
    return state


def api(serve: ServeProcess, token: str = OPERATOR_TOKEN) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers=bearer(token), trust_env=False, timeout=10)


def open_incident(serve: ServeProcess, title: str) -> int:
    db = open_database(serve.db_url)
    try:
        record = store.open_incident(
            db, title=title, severity=Severity.P2, service=SERVICE, dedup_key=None
        )
    finally:
        db.close()
    return record.id


def sse_connections(serve: ServeProcess) -> int:
    with api(serve) as client:
        return int(client.get("/api/debug/connections").json()["sse_connections"])


def connections_become(serve: ServeProcess, n: int, what: str, timeout: float = 5.0) -> None:
    """Wait until the server holds exactly `n` event streams (AssertionError with the count)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        seen.append(sse_connections(serve))
        if seen[-1] == n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {n} stream(s) expected, the server counted {seen[-5:]}")
        time.sleep(0.1)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
