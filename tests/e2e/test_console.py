"""The console in a real browser, what a person sees and does: Debian's Chromium (driven by
Playwright for Python, never a downloaded browser) against a real `crisisctl serve` watching a
real guarded app under load (fixtures in conftest.py, started once for the module).

The fleet page shows the server's figures; a mode switch from the page reaches the guard and the
timeline; a viewer sees no button and the server refuses its changes; stored reports show their
charts; the alerts page lists what fires. Each test opens its own browser context. The pages run
under their strict Content-Security-Policy, so the tests read them through locators and
`page.evaluate`, never through string-eval helpers. Screenshots are kept under
tests/e2e/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from console_support import (
    GUARD_TOKEN,
    SERVICE,
    api,
    context_for,
    open_incident,
    screenshot,
    wait_for,
)
from guard_servers import GuardServer
from playwright.sync_api import Browser, Page
from playwright.sync_api import expect as expect_that
from serve_support import OPERATOR_TOKEN, VIEWER_TOKEN, ServeProcess

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database

AXE = Path(__file__).resolve().parents[2] / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
#: ~25-30 s for the module (one guarded app, one serve, one browser)
pytestmark = pytest.mark.slow


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


# -- accessibility ------------------------------------------------------------------------------
AXE_RUN = """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
    .map((v) => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map((n) => n.html).join(" | ")}`)"""


def test_every_page_passes_axe_s_accessibility_rules(browser: Browser, serve: ServeProcess) -> None:
    assert AXE.is_file(), f"{AXE} is missing: run `make vendor` (scripts/vendor-frontend.sh)"
    incident = open_incident(serve, "api accessibility")
    checks = {  # each page, and what shows that its module has rendered
        "/": f'tr[data-service="{SERVICE}"] .spark canvas',
        f"/services/{SERVICE}": "#chart-rss canvas",
        "/alerts": "#alert-rows tr",
        "/incidents": "#incident-rows tr",
        f"/incidents/{incident}": "#timeline li",
    }
    # axe is injected as an inline script: this context alone sets the pages' CSP aside
    context = context_for(browser, serve, OPERATOR_TOKEN, bypass_csp=True)
    page = context.new_page()
    found: dict[str, list[str]] = {}
    for path, rendered in checks.items():
        page.goto(path)
        expect_that(page.locator(rendered).first).to_be_attached()
        page.add_script_tag(content=AXE.read_text())
        found[path] = page.evaluate(AXE_RUN)
    signed_out = context_for(browser, serve, None, bypass_csp=True).new_page()
    signed_out.goto("/login")
    signed_out.add_script_tag(content=AXE.read_text())
    found["/login"] = signed_out.evaluate(AXE_RUN)
    signed_out.context.close()
    assert found == {path: [] for path in found}
    context.close()
