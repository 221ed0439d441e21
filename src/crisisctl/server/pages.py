"""The console's pages: server-rendered HTML shells and the static files they load.

Each page is a Jinja2 template (``server/templates/``) that names the signed-in person and,
for operators only, renders the buttons that change state; its ES module
(``server/static/js/``) fetches the JSON API and follows the live feed. Nothing here reads the
incident store or the watch: pages hold no figures the API would not give the same person.

Who is signed in comes from the server's authentication (`signed_in`: an object or mapping
with ``name`` and ``role``); a page asked without it redirects to
``/login?next=PATH``. Pages carry a strict Content-Security-Policy (scripts, styles and
connections from this origin only, no inline code), are never cached, and load the chart
library from ``/static/vendor/`` (vendored at build time, never a CDN).

`routes()` is what ``crisisctl.server.app`` mounts: the page routes and ``/static``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from crisisctl import __version__
from crisisctl.guard.modes import EMERGENCY, NORMAL, RECOVERING
from crisisctl.incidents.lifecycle import Status
from crisisctl.server.auth import header_map

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "SignedIn", "routes", "signed_in"]

HERE: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = HERE / "static"
TEMPLATES_DIR: Final = HERE / "templates"
ROLES: Final = frozenset({"operator", "viewer"})

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


#: the modes a person may switch a service to, the likeliest first
SWITCHABLE_MODES: Final = (EMERGENCY, RECOVERING, NORMAL)
#: the statuses a person may set (an incident starts as "detected")
SETTABLE_STATUSES: Final = tuple(str(s) for s in Status if s is not Status.DETECTED)
#: (path, template, page name, title with path parameters, fixed template values)
PAGES: Final[tuple[tuple[str, str, str, str, dict[str, Any]], ...]] = (
    ("/", "fleet.html", "fleet", "Fleet", {}),
    ("/services/{service}", "service.html", "service", "{service}", {"modes": SWITCHABLE_MODES}),
    ("/alerts", "alerts.html", "alerts", "Alerts", {}),
    ("/incidents", "incidents.html", "incidents", "Incidents", {}),
    (
        "/incidents/{incident:int}",
        "incident.html",
        "incident",
        "Incident #{incident}",
        {"statuses": SETTABLE_STATUSES},
    ),
    (
        "/incidents/{incident:int}/reports/{report}",
        "report.html",
        "report",
        "Report {report} of incident #{incident}",
        {},
    ),
)


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The person a page is rendered for."""

    name: str
    role: str
    #: the serve's anonymous viewer (allow_anonymous_viewer): reads without having signed in
    anonymous: bool = False

    @property
    def can_change(self) -> bool:
        return self.role == "operator"


def _field(user: Any, name: str) -> Any:
    if isinstance(user, Mapping):
        return user.get(name)
    return getattr(user, name, None)


def signed_in(request: Request) -> SignedIn | None:
    """The signed-in person: ``request.state.user``, else the serve app's authenticator
    (``app.state.auth.identify``: bearer token, session cookie, or an allowed anonymous
    viewer), else None."""
    user = getattr(request.state, "user", None)
    if user is None and "app" in request.scope:
        auth = getattr(request.app.state, "auth", None)
        if auth is not None:
            user = auth.identify(header_map(request.scope["headers"]))
    if user is None:
        return None
    name, role = _field(user, "name"), _field(user, "role")
    role = getattr(role, "value", role)  # an enum member or its value
    if not isinstance(name, str) or not name or role not in ROLES:
        return None
    return SignedIn(name=name, role=str(role), anonymous=_field(user, "via") == "anonymous")


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = static_url
    env.globals["version"] = __version__
    return env


def static_url(path: str) -> str:
    """The URL of a static file, versioned so a new release is never served from a stale cache."""
    return f"/static/{path}?v={__version__}"


def _render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _page(template: str, page: str, title: str, **fixed: Any) -> Any:
    """A handler that renders `template` for a signed-in person (path parameters included)."""

    async def handler(request: Request) -> Response:
        user = signed_in(request)
        if user is None:
            return _to_login(request)
        params = {key: str(value) for key, value in request.path_params.items()}
        shown = title.format(**params)
        here = quote(request.url.path, safe="")
        return _render(
            template, page=page, title=shown, user=user, params=params, here=here, **fixed
        )

    handler.__name__ = f"page_{page}"
    return handler


def _safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another origin) becomes "/"."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value


async def login(request: Request) -> Response:
    """The sign-in page; someone already signed in goes straight on (an anonymous viewer may
    sign in to act)."""
    next_path = _safe_next(request.query_params.get("next"))
    user = signed_in(request)
    if user is not None and not user.anonymous:
        return RedirectResponse(next_path, status_code=303)
    return _render("login.html", page="login", title="Sign in", user=None, params={})


def routes() -> list[BaseRoute]:
    """The console's page routes and its static files at /static."""
    page_routes: list[BaseRoute] = [Route("/login", login, methods=["GET"], name="page_login")]
    for path, template, page, title, fixed in PAGES:
        handler = _page(template, page, title, **fixed)
        page_routes.append(Route(path, handler, methods=["GET"], name=f"page_{page}"))
    page_routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    return page_routes
