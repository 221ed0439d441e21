"""The console's live feed in a real browser: one stream for many tabs and its handover, the
poll schedule, the fallback to polling (no EventSource, or a stream that holds events back) and
its pause while hidden, and the resume after a server restart. Debian's Chromium against a real
`crisisctl serve` and guarded app (fixtures in conftest.py, started once for the module).
"""

from __future__ import annotations

import math
import time
from urllib.parse import urlsplit

import pytest
from console_support import (
    api,
    connections_become,
    context_for,
    live,
    open_incident,
    screenshot,
    sse_connections,
    wait_for,
)
from playwright.sync_api import Browser, Page
from playwright.sync_api import expect as expect_that
from serve_support import OPERATOR_TOKEN, ServeProcess

#: ~45 s for the module (one guarded app, one serve, one browser)
pytestmark = pytest.mark.slow


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
    page.wait_for_timeout(min(due + 1.0, 8.0) * 1000)  # (Playwright delivers request events)
    assert [t for t in polls if t > hidden_at] == [], "a hidden page must not poll"
    assert live(page)["paused"] is True

    shown_at = time.monotonic()
    page.evaluate(SHOW)
    wait_for(
        "a poll at once when shown",
        lambda: live(page) and [t for t in polls if t > shown_at],  # live(): events delivered
        1.5,
        0.05,
    )
    assert live(page)["paused"] is False
    context.close()


def test_a_hidden_polling_leader_keeps_polling_while_another_tab_is_shown(
    browser: Browser, serve: ServeProcess
) -> None:
    context = context_for(browser, serve, OPERATOR_TOKEN, init_script=NO_EVENTSOURCE)
    pages = [context.new_page() for _ in range(2)]
    polls: list[float] = []
    for page in pages:
        page.on(
            "request",
            lambda r: (
                polls.append(time.monotonic())
                if urlsplit(r.url).path == "/api/events/poll"
                else None
            ),
        )
        page.goto("/alerts")
    leader = wait_for(
        "a polling leader",
        lambda: next((p for p in pages if live(p).get("mode") == "poll"), None),
        5,
    )
    follower = next(p for p in pages if p is not leader)
    due = wait_for("the next poll is scheduled", lambda: live(leader).get("nextPollMs"), 5) / 1000
    leader.evaluate(HIDE)
    hidden_at = time.monotonic()
    # the follower is shown and says so: the hidden leader polls on, for both tabs
    wait_for(
        "a poll while the follower is shown",
        lambda: live(leader) and [t for t in polls if t > hidden_at],  # live(): events delivered
        due + 2,
    )
    assert live(leader)["paused"] is False
    assert live(follower)["role"] == "follower"
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
    # the events that opened the stream may reload the incident 250 ms later (incident.js
    # `soon`): that load must be over before the server stops, or the browser retries the
    # request the stopping server left unanswered on the restarted one, after the note
    wait_for("the incident's timeline", lambda: page.locator("#timeline li").count() > 0, 5)
    time.sleep(0.5)

    def blocked(url: str) -> bool:
        # the stream, its stall probe's poll endpoint and the incident's own reload: only the
        # resumed stream may bring the note (`#activity` shows stream events only)
        path = urlsplit(url).path
        return path in ("/api/events", "/api/events/poll", f"/api/incidents/{incident}")

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
