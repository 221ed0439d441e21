"""The console's pages (crisisctl.server.pages) on their own: sign-in redirects, what a viewer
sees, headers, and markup that loads nothing from another origin and runs no inline code.

The pages are mounted in a bare Starlette app whose one middleware puts the person named by
an ``x-test-user: name:role`` header on ``request.state.user`` — the contract with the serve
app's authentication. The live API is exercised by tests/e2e/test_console.py.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from crisisctl.server import pages
from crisisctl.server.pages import CONTENT_SECURITY_POLICY, _safe_next, signed_in

PAGES = ("/", "/services/api", "/alerts", "/incidents", "/incidents/7", "/incidents/7/reports/42")
OPERATOR = {"x-test-user": "ada:operator"}
VIEWER = {"x-test-user": "vic:viewer"}


class AsUser:
    """Puts ``x-test-user: name:role`` on request.state.user, as the serve app's auth does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(b"x-test-user")
            if raw:
                name, role, *via = raw.decode().split(":")
                user = {"name": name, "role": role, "via": via[0] if via else "token"}
                scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


class Client:
    """GETs against the pages app in process (httpx over ASGI, redirects not followed)."""

    def __init__(self) -> None:
        self.app = AsUser(Starlette(routes=pages.routes()))

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def fetch() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://console") as c:
                return await c.get(path, headers=headers)

        return asyncio.run(fetch())


@pytest.fixture(scope="module")
def client() -> Client:
    return Client()


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


@pytest.mark.parametrize("path", PAGES)
def test_a_page_asked_without_a_session_redirects_to_sign_in_and_back(
    client: Client, path: str
) -> None:
    answer = client.get(path + "?x=1")
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith("/login?next=")
    assert unquote(location.removeprefix("/login?next=")) == path + "?x=1"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_strict_accessible_and_loads_nothing_from_another_origin(
    client: Client, path: str
) -> None:
    answer = client.get(path, headers=OPERATOR)
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["cache-control"] == "no-store"
    tags = parse(answer.text)
    assert not tags.script_text, "no inline script"
    for tag, attrs in tags.tags:
        assert "style" not in attrs, f"inline style on <{tag}>"
        assert not any(name.startswith("on") for name in attrs), f"inline handler on <{tag}>"
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http:", "https:", "//")), f"<{tag} {name}={value}>"
    html_tag = re.search(r"<html[^>]*>", answer.text)
    assert html_tag is not None and 'lang="en"' in html_tag.group(0)
    assert '<main id="main">' in answer.text and 'href="#main"' in answer.text
    assert 'data-user="ada"' in answer.text and 'data-role="operator"' in answer.text


def test_operators_get_the_buttons_that_change_state(client: Client) -> None:
    service = client.get("/services/api", headers=OPERATOR).text
    assert 'id="mode-form"' in service and 'id="triage-button"' in service
    assert '<option value="emergency">' in service
    incident = client.get("/incidents/7", headers=OPERATOR).text
    for control in ("ack-button", "escalate-button", "note-form", "status-form", "resolve-form"):
        assert f'id="{control}"' in incident


def test_viewers_get_no_button_that_changes_state(client: Client) -> None:
    service = client.get("/services/api", headers=VIEWER).text
    incident = client.get("/incidents/7", headers=VIEWER).text
    assert 'data-role="viewer"' in service
    for html in (service, incident):
        assert "<button" in html  # sign out only
        assert re.findall(r"<button[^>]*>([^<]*)</button>", html) == ["Sign out"]
        assert "<select" not in html or 'id="mode"' not in html


def test_text_from_the_path_is_escaped(client: Client) -> None:
    answer = client.get("/services/%3Cb%20x%3D%22y%22%3Eapi", headers=OPERATOR)
    assert answer.status_code == 200
    assert '<b x="y">' not in answer.text
    assert "&lt;b x=&#34;y&#34;&gt;api" in answer.text


def test_the_sign_in_page_needs_no_session_and_a_signed_in_person_goes_on(
    client: Client,
) -> None:
    login = client.get("/login")
    assert login.status_code == 200 and 'id="login-form"' in login.text
    assert 'type="password"' in login.text and "data-role" not in login.text
    onward = client.get("/login?next=%2Fincidents%2F7", headers=OPERATOR)
    assert onward.status_code == 303 and onward.headers["location"] == "/incidents/7"
    away = client.get("/login?next=%2F%2Fevil.example%2Fx", headers=OPERATOR)
    assert away.headers["location"] == "/"


def test_an_anonymous_viewer_reads_and_may_still_sign_in(client: Client) -> None:
    anonymous = {"x-test-user": "anonymous:viewer:anonymous"}
    page = client.get("/incidents/7", headers=anonymous)
    assert page.status_code == 200
    assert 'href="/login?next=%2Fincidents%2F7"' in page.text and "Sign out" not in page.text
    assert "<button" not in page.text
    login = client.get("/login?next=%2Fincidents%2F7", headers=anonymous)
    assert login.status_code == 200 and 'id="login-form"' in login.text


def test_an_unknown_role_is_not_signed_in(client: Client) -> None:
    answer = client.get("/", headers={"x-test-user": "root:admin"})
    assert answer.status_code == 303


def test_static_files_are_served_under_static(client: Client) -> None:
    live = client.get("/static/js/live.js")
    assert live.status_code == 200
    assert "javascript" in live.headers["content-type"]
    assert "export function pollDelay" in live.text
    assert client.get("/static/console.css").status_code == 200


@given(st.text(max_size=40))
def test_after_sign_in_the_page_goes_only_to_a_path_on_this_site(value: str) -> None:
    target = _safe_next(value)
    assert target.startswith("/")
    assert not target.startswith(("//", "/\\"))
    assert target == value or target == "/"


def test_signed_in_reads_objects_mappings_and_enum_roles() -> None:
    class Role:
        value = "viewer"

    class User:
        name = "bo"
        role = Role()

    def request(user: object) -> Request:
        return Request({"type": "http", "state": {"user": user}, "headers": []})

    assert signed_in(request(User())) == pages.SignedIn("bo", "viewer")
    assert signed_in(request({"name": "ada", "role": "operator"})) == pages.SignedIn(
        "ada", "operator"
    )
    assert signed_in(request({"name": "", "role": "operator"})) is None
    assert signed_in(request(None)) is None
