"""The console's pages (a minimal stand-in: the ``console`` branch replaces this module whole).

`routes()` gives ``/login`` (a sign-in form posting to ``/api/session``) and ``/`` (redirects to
``/login`` when not signed in; otherwise a bare page that shows the live event stream).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from crisisctl.server.auth import Authenticator, header_map

__all__ = ["routes"]

_LOGIN = """<!doctype html><meta charset="utf-8"><title>crisisctl — sign in</title>
<form id="f"><input name="token" type="password" placeholder="token">
<button>Sign in</button></form><p id="e"></p>
<script>
document.getElementById("f").onsubmit = async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/session", {method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({token: ev.target.token.value})});
  if (r.status === 204) location.href = "/"; else
    document.getElementById("e").textContent = (await r.json()).error;
};
</script>"""

_HOME = """<!doctype html><meta charset="utf-8"><title>crisisctl</title>
<h1>crisisctl serve</h1><pre id="log"></pre>
<script>
const es = new EventSource("/api/events");
for (const t of ["fleet", "alert", "incident", "timeline", "reset"])
  es.addEventListener(t, (e) => {
    document.getElementById("log").textContent += e.lastEventId + " " + t + "\\n";
  });
</script>"""


async def login(request: Request) -> Response:
    return HTMLResponse(_LOGIN)


async def home(request: Request) -> Response:
    auth: Authenticator = request.app.state.auth
    if auth.identify(header_map(request.scope["headers"])) is None:
        return RedirectResponse("/login", status_code=303)
    return HTMLResponse(_HOME)


def routes() -> list[BaseRoute]:
    return [Route("/login", login), Route("/", home)]
