"""The console in a real browser: Debian's Chromium (driven by Playwright for Python, never a
downloaded browser) against a real `crisisctl serve` watching a real guarded app under load.

One guarded uvicorn app (bounded loopback traffic from a thread), one serve process (watch
interval 0.5 s, pings every second) and one browser are started once for the module; each test
opens its own browser context (its own cookies, tabs and storage). The pages run under their
strict Content-Security-Policy, so the tests read the page through locators and
`page.evaluate`, never through string-eval helpers.

Screenshots are kept under tests/e2e/artifacts/ (git-ignored) as the run's evidence.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from guard_servers import GuardServer, guard_servers
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from playwright.sync_api import expect as expect_that
from serve_support import OPERATOR_TOKEN, VIEWER_TOKEN, ServeProcess, bearer

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
#: ~50 s for the module (one guarded app, one serve, one browser)
pytestmark = pytest.mark.slow


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


def context_for(
    browser: Browser, serve: ServeProcess, token: str | None, *, init_script: str | None = None
) -> BrowserContext:
    """A browser context signed in with `token` (POST /api/session sets its cookies)."""
    context = browser.new_context(base_url=serve.url, viewport={"width": 1400, "height": 900})
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


# -- the fleet ----------------------------------------------------------------------------------
def page_figures(page: Page) -> dict[str, Any]:
    row = page.locator(f'tr[data-service="{SERVICE}"]')
    figures: dict[str, Any] = {
        "generated_at": page.locator("#fleet-updated").get_attribute("data-generated-at"),
    }
    for field in ("rate_rps", "error_ratio", "latency", "instances", "shed"):
        raw = row.locator(f'[data-field="{field}"]').get_attribute("data-value")
        figures[field] = json.loads(raw or "null")
    figures["severity"] = row.locator('[data-field="severity"]').get_attribute("data-value")
    return figures


def test_the_fleet_page_shows_the_real_figures_of_a_guarded_app_under_load(
    browser: Browser, serve: ServeProcess
) -> None:
    context = context_for(browser, serve, None)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/")  # not signed in: the sign-in form, then back
    assert urlsplit(page.url).path == "/login"
    page.fill("#token", OPERATOR_TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{serve.url}/")
    row = page.locator(f'tr[data-service="{SERVICE}"]')
    expect_that(row).to_be_visible()

    def matched() -> tuple[dict[str, Any], dict[str, Any]] | None:
        shown = page_figures(page)
        with api(serve) as client:
            fleet = client.get("/api/fleet").json()
        if fleet["generated_at"] != shown["generated_at"]:
            return None  # a cycle ran between the two reads: read both again
        service = next(s for s in fleet["services"] if s["name"] == SERVICE)
        return (service, shown) if (service["rate_rps"] or 0) > 0 else None

    service, shown = wait_for("the page and /api/fleet at the same cycle, under load", matched, 15)
    assert shown["rate_rps"] == service["rate_rps"] > 0
    assert shown["error_ratio"] == service["error_ratio"]
    assert shown["latency"] == {k: service[k] for k in ("p50_ms", "p95_ms", "p99_ms")}
    assert shown["latency"]["p95_ms"] is not None and shown["latency"]["p95_ms"] > 0
    assert shown["instances"] == service["instances"]
    assert shown["severity"] == service["severity"]
    assert shown["shed"] == service["shed"]
    assert row.locator('[data-field="severity"] .badge').inner_text() == service["severity"]
    assert "normal" in row.locator('[data-field="instances"]').inner_text()
    expect_that(row.locator(".spark canvas")).to_have_count(2)  # the sparklines are drawn
    assert GUARD_TOKEN not in page.content()
    screenshot(page, "fleet.png")
    assert errors == []
    context.close()


def test_the_poll_schedule_starts_at_5s_grows_by_1_2_to_30s_with_jitter(
    browser: Browser, serve: ServeProcess
) -> None:
    context = context_for(browser, serve, OPERATOR_TOKEN)
    page = context.new_page()
    page.goto("/alerts")
    delays = page.evaluate(
        """async () => {
            const { pollDelay } = await import("/static/js/live.js");
            const at = (r) => [...Array(14).keys()].map((n) => pollDelay(n, () => r));
            return { mid: at(0.5), low: at(0), high: at(0.999999) };
        }"""
    )

    def schedule(jitter: float) -> list[int]:  # JavaScript's Math.round: half up
        return [
            math.floor(min(30000.0, min(30000.0, 5000 * 1.2**n) * (1 + jitter)) + 0.5)
            for n in range(14)
        ]

    assert delays["mid"] == schedule(0.0)
    assert delays["mid"][:4] == [5000, 6000, 7200, 8640] and delays["mid"][-1] == 30000
    assert delays["low"] == schedule(-0.15) and delays["low"][0] == 4250
    assert delays["high"] == schedule(0.15 * (2 * 0.999999 - 1)) and max(delays["high"]) == 30000
    context.close()


# -- many tabs ----------------------------------------------------------------------------------
def leaders(pages: list[Page]) -> list[Page]:
    return [p for p in pages if live(p).get("role") == "leader"]


def one_open_leader(pages: list[Page]) -> Page | None:
    found = leaders(pages)
    if len(found) == 1 and live(found[0]).get("state") == "open":
        return found[0]
    return None


@pytest.mark.parametrize(
    ("election", "tabs", "init_script"),
    [
        ("web locks", 8, None),
        # no Web Locks: the localStorage lease elects the leader
        ("lease", 4, "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined})"),
    ],
)
def test_many_tabs_hold_one_stream_and_a_closed_leader_hands_over_within_2s(
    browser: Browser, serve: ServeProcess, election: str, tabs: int, init_script: str | None
) -> None:
    # the earlier tests' tabs are closed, but the server notices a closed stream a moment later
    connections_become(serve, 0, "no stream left from earlier tests")
    context = context_for(browser, serve, OPERATOR_TOKEN, init_script=init_script)
    pages = [context.new_page() for _ in range(tabs)]
    for page in pages:
        page.goto("/alerts")
    leader = wait_for(
        f"{election}: one leader with an open stream", lambda: one_open_leader(pages), 10
    )
    connections_become(serve, 1, f"{tabs} tabs")
    # a stray goodbye (a closing leader's may or may not get out) elects nobody while it leads
    pages[-1].evaluate(
        "() => new BroadcastChannel('crisisctl-events').postMessage({kind: 'leader-gone'})"
    )
    time.sleep(1.0)  # the followers settle; still one stream
    assert sse_connections(serve) == 1
    assert len(leaders(pages)) == 1
    followers = [p for p in pages if p is not leader]
    assert all(live(p)["mode"] == "shared" for p in followers)
    # every tab gets the events the leader receives
    received = [live(p)["received"] for p in followers]
    wait_for(
        "the followers receive events",
        lambda: all(live(p)["received"] > n for p, n in zip(followers, received, strict=True)),
        5,
    )

    closed_at = time.monotonic()
    leader.close(run_before_unload=True)  # as a person closes a tab: pagehide runs
    successor = wait_for("another tab leads", lambda: one_open_leader(followers), 5, step=0.05)
    handover_s = time.monotonic() - closed_at
    assert handover_s <= 2.0, f"{election}: the handover took {handover_s:.2f} s"
    assert successor in followers
    connections_become(serve, 1, "after the handover")
    time.sleep(1.0)  # nobody else claims it meanwhile
    assert leaders(followers) == [successor] and sse_connections(serve) == 1
    context.close()
    connections_become(serve, 0, "after closing every tab")


# -- acting from the page ----------------------------------------------------------------------
def test_switching_to_emergency_from_the_page_changes_the_guard_and_writes_the_timeline(
    browser: Browser, serve: ServeProcess, guard: GuardServer
) -> None:
    incident = open_incident(serve, "api slows down (mode switch)")
    context = context_for(browser, serve, OPERATOR_TOKEN)
    page = context.new_page()
    page.goto(f"/services/{SERVICE}")
    page.select_option("#mode", "emergency")
    page.fill("#reason", "shedding to protect checkout")
    page.click("#mode-form button[type=submit]")
    expect_that(page.locator("#mode-result")).to_contain_text("Switched to emergency")
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            status = client.get(f"{guard.url}/_crisis/status").json()
        assert status["mode"]["mode"] == "emergency"
        expect_that(page.locator('#instance-rows [data-field="mode"]')).to_have_text(
            "emergency", timeout=5000
        )
        db = open_database(serve.db_url)
        try:
            events = store.list_events(db, incident)
        finally:
            db.close()
        switched = [e for e in events if "shedding to protect checkout" in e.text]
        assert switched and switched[-1].author == "alice", [e.to_dict() for e in events]
        screenshot(page, "service.png")
    finally:
        with api(serve) as client:
            client.post(f"/api/services/{SERVICE}/mode", json={"mode": "normal", "reason": "test"})
        context.close()


def test_a_viewer_sees_no_button_and_the_server_refuses_its_changes(
    browser: Browser, serve: ServeProcess, guard: GuardServer
) -> None:
    incident = open_incident(serve, "api errors (viewer)")
    context = context_for(browser, serve, VIEWER_TOKEN)
    page = context.new_page()
    page.goto(f"/services/{SERVICE}")
    expect_that(page.locator("#instance-rows tr")).to_have_count(1)
    assert page.locator("#mode-form, #triage-button").count() == 0
    page.goto(f"/incidents/{incident}")
    expect_that(page.locator("#timeline li").first).to_be_visible()
    assert page.locator("main button, main form").count() == 0
    assert page.locator("header button").all_inner_texts() == ["Sign out"]
    answers = page.evaluate(
        """async ([service, incident]) => {
            const csrf = document.cookie.split("; ").find((c) => c.startsWith("crisisctl_csrf="));
            const token = decodeURIComponent(csrf.split("=")[1]);
            const post = async (path, body) => (await fetch(path, {
                method: "POST", credentials: "same-origin",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
                body: JSON.stringify(body)})).status;
            return {
                csrf: token.length,
                mode: await post(`/api/services/${service}/mode`, {mode: "emergency", reason: "x"}),
                triage: await post(`/api/services/${service}/triage`, {}),
                ack: await post(`/api/incidents/${incident}/ack`, {}),
                note: await post(`/api/incidents/${incident}/note`, {text: "x"}),
                status: await post(`/api/incidents/${incident}/status`, {status: "mitigated"}),
                escalate: await post(`/api/incidents/${incident}/escalate`, {}),
                resolve: await post(`/api/incidents/${incident}/resolve`, {}),
            };
        }""",
        [SERVICE, incident],
    )
    assert answers.pop("csrf") > 0
    assert answers == dict.fromkeys(answers, 403)
    with httpx.Client(trust_env=False, timeout=5) as client:
        assert client.get(f"{guard.url}/_crisis/status").json()["mode"]["mode"] == "normal"
    with api(serve) as client:
        detail = client.get(f"/api/incidents/{incident}").json()
    assert detail["status"] == "detected" and detail["escalation_level"] == 1
    # signing out ends the session: the pages send the person back to sign in
    page.click("#sign-out button")
    page.wait_for_url(f"{serve.url}/login")
    page.goto("/alerts")
    assert urlsplit(page.url).path == "/login"
    context.close()


# -- when push fails ----------------------------------------------------------------------------
NO_EVENTSOURCE = "delete window.EventSource"
HIDE = """() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
    delete document.hidden;
    delete document.visibilityState;
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_without_eventsource_the_page_polls_and_pauses_while_hidden(
    browser: Browser, serve: ServeProcess
) -> None:
    incident = open_incident(serve, "api timeouts (polling)")
    context = context_for(browser, serve, OPERATOR_TOKEN, init_script=NO_EVENTSOURCE)
    page = context.new_page()
    polls: list[float] = []
    page.on(
        "request",
        lambda r: (
            polls.append(time.monotonic()) if urlsplit(r.url).path == "/api/events/poll" else None
        ),
    )
    page.goto(f"/incidents/{incident}")
    wait_for("the page polls", lambda: live(page).get("mode") == "poll" and polls, 5)
    assert live(page)["role"] == "leader"
    with api(serve) as client:
        note = client.post(f"/api/incidents/{incident}/note", json={"text": "polled note"})
        assert note.status_code in (200, 201), note.text
    # the first poll ran at once; the next is due within 5 s × 1.15 (events reset the backoff)
    expect_that(page.locator("#timeline")).to_contain_text("polled note", timeout=8000)
    assert live(page)["idlePolls"] == 0

    page.evaluate(HIDE)
    hidden_at = time.monotonic()
    state = live(page)
    assert state["paused"] is True
    due = (state["nextPollMs"] or 0) / 1000.0
    time.sleep(min(due + 1.0, 8.0))
    assert [t for t in polls if t > hidden_at] == [], "a hidden page must not poll"
    assert live(page)["paused"] is True

    shown_at = time.monotonic()
    page.evaluate(SHOW)
    wait_for("a poll at once when shown", lambda: [t for t in polls if t > shown_at], 1.5, 0.05)
    assert live(page)["paused"] is False
    context.close()


# -- a server restart ---------------------------------------------------------------------------
def test_after_a_server_restart_the_page_shows_the_events_it_missed(
    browser: Browser, serve: ServeProcess
) -> None:
    incident = open_incident(serve, "api restarts (resume)")
    context = context_for(browser, serve, OPERATOR_TOKEN)
    page = context.new_page()
    page.goto(f"/incidents/{incident}")
    wait_for("an open stream", lambda: live(page).get("state") == "open", 5)
    wait_for("an event id to resume from", lambda: live(page).get("lastEventId"), 5)

    def blocked(url: str) -> bool:
        return urlsplit(url).path == "/api/events"

    # the page may not reconnect until the server has produced what it is to miss
    page.route(blocked, lambda route: route.abort())
    assert serve.stop() < 10.0
    serve.start()
    with api(serve) as client:
        answer = client.post(f"/api/incidents/{incident}/note", json={"text": "missed while away"})
        assert answer.status_code in (200, 201), answer.text
    time.sleep(0.5)
    assert "missed while away" not in page.locator("#timeline").inner_text()
    page.unroute(blocked)
    # EventSource reconnects with Last-Event-ID; the server replays the note from its buffer
    expect_that(page.locator("#timeline")).to_contain_text("missed while away", timeout=10000)
    expect_that(page.locator("#activity")).to_contain_text("missed while away")
    assert live(page)["mode"] == "sse"
    screenshot(page, "incident.png")
    context.close()


# -- reports ------------------------------------------------------------------------------------
def test_load_and_validation_reports_stored_on_an_incident_are_shown_with_their_charts(
    browser: Browser, serve: ServeProcess
) -> None:
    incident = open_incident(serve, "api capacity (report)")
    report = {
        "report": "load",
        "model": "open",
        "url": "http://127.0.0.1:9/checkout",
        "duration_s": 30.0,
        "requests": 3000,
        "requests_per_second": 100.0,
        "latency_ms": {"p50": 12.0, "p95": 48.5, "p99": 90.0},
        "per_second": [
            {"second": i, "requests": 100, "errors": i % 3, "p50_ms": 12.0, "p95_ms": 40.0 + i}
            for i in range(30)
        ],
    }
    db = open_database(serve.db_url)
    try:
        event = store.attach_report(db, incident, report, label="after")
    finally:
        db.close()
    context = context_for(browser, serve, VIEWER_TOKEN)  # reading needs no operator
    page = context.new_page()
    page.goto(f"/incidents/{incident}")
    link = page.locator(f'#reports a[href="/incidents/{incident}/reports/{event.id}"]')
    expect_that(link).to_be_visible()
    link.click()
    page.wait_for_url(f"{serve.url}/incidents/{incident}/reports/{event.id}")
    expect_that(page.locator("#report-title")).to_contain_text("load report (after)")
    expect_that(page.locator("#report-facts")).to_contain_text("48.5 ms")
    expect_that(page.locator("#report-charts canvas")).to_have_count(2)
    screenshot(page, "report.png")

    validation = {
        "report": "validate",
        "url": "http://127.0.0.1:9/",
        "passed": False,
        "success_rate": 85.7,
        "required_rate": 90.0,
        "checks": [{"name": "baseline", "passed": True}, {"name": "spike", "passed": False}],
    }
    db = open_database(serve.db_url)
    try:
        checked = store.attach_report(db, incident, validation)
    finally:
        db.close()
    page.goto(f"/incidents/{incident}/reports/{checked.id}")
    expect_that(page.locator("#report-facts")).to_contain_text("failed")
    expect_that(page.locator("#report-charts tbody tr")).to_have_count(2)
    expect_that(page.locator('#report-charts tr:has-text("spike") td').nth(1)).to_have_text(
        "failed"
    )
    context.close()


def test_a_stream_that_brings_nothing_while_the_server_has_events_falls_back_to_polling(
    browser: Browser, serve: ServeProcess
) -> None:
    incident = open_incident(serve, "api behind a buffering proxy")
    context = context_for(
        browser, serve, OPERATOR_TOKEN, init_script="window.crisisctlLiveOptions = {stallMs: 1500}"
    )
    page = context.new_page()
    # a proxy that buffers the stream: the request is accepted and nothing ever comes through
    page.route(lambda url: urlsplit(url).path == "/api/events", lambda route: None)
    page.goto(f"/incidents/{incident}")
    wait_for("the stream is opened", lambda: live(page).get("mode") == "sse", 5)
    # the first quiet spell only notes where the server is; events after it must arrive
    wait_for("a point to judge from", lambda: live(page).get("lastEventId"), 5)
    assert live(page)["mode"] == "sse"
    with api(serve) as client:
        note = client.post(f"/api/incidents/{incident}/note", json={"text": "held by the proxy"})
        assert note.status_code in (200, 201), note.text
    # the next quiet spell finds events the stream did not bring: the feed polls and gets them
    expect_that(page.locator("#timeline")).to_contain_text("held by the proxy", timeout=10000)
    state = live(page)
    assert state["mode"] == "poll" and "holds back" in state["reason"]
    context.close()


# -- alerts -------------------------------------------------------------------------------------
def test_the_alerts_page_lists_what_fires(browser: Browser, serve: ServeProcess) -> None:
    context = context_for(browser, serve, VIEWER_TOKEN)
    page = context.new_page()
    page.goto("/alerts")
    row = page.locator('#alert-rows tr:has-text("serving")')
    expect_that(row).to_have_count(1)
    expect_that(row).to_contain_text(SERVICE)
    expect_that(row.locator(".badge")).to_have_text("P3")
    with api(serve) as client:
        firing = client.get("/api/alerts").json()
    assert [a["rule"] for a in firing] == ["serving"]
    context.close()
