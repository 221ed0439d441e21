"""Who is asking: API tokens, static users (scrypt), signed session cookies and CSRF checks.

* **Passwords**: ``scrypt$N$r$p$salt$hash`` (``hashlib.scrypt``, N=2¹⁴, r=8, p=1, 16-byte salt,
  32-byte hash, base64url); `hash_password` makes one, `verify_password` checks in constant time.
* **Sessions**: a signed cookie, ``crisisctl_session = b64(json{n, r, c, e}).b64(hmac)`` with
  HMAC-SHA256 under a key kept in the state dir (``session.key``, mode 0600), so sessions survive
  a restart and nothing is stored per session. A session names its user, role, CSRF value and
  expiry; it is honoured only while the user is still configured with that role.
* **CSRF** (double submit): the session's CSRF value is also sent as the readable cookie
  ``crisisctl_csrf``; a cookie-authenticated POST/PUT/PATCH/DELETE must echo it in the
  ``X-CSRF-Token`` header. The header is compared (constant time) with the value *inside the
  signed session*, so a cookie planted by a sibling domain does not help an attacker.
* **Bearer tokens** need no CSRF (a browser never adds them on its own).

`Authenticator.identify(headers)` works on raw ASGI headers, so the pure-ASGI SSE endpoint and
the FastAPI routes share it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Final

from crisisctl.server.settings import ServeSettings

__all__ = [
    "ANONYMOUS",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Authenticator",
    "Principal",
    "hash_password",
    "load_or_create_key",
    "verify_password",
]

SESSION_COOKIE: Final = "crisisctl_session"
CSRF_COOKIE: Final = "crisisctl_csrf"
CSRF_HEADER: Final = "x-csrf-token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
KEY_FILE: Final = "session.key"


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in caller: name, role, how it proved it (bearer/session/anonymous), CSRF value."""

    name: str
    role: str
    via: str
    csrf: str = ""

    @property
    def can_change(self) -> bool:
        return self.role == "operator"


ANONYMOUS: Final = Principal("anonymous", "viewer", "anonymous")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A scrypt hash of `password` as ``scrypt$N$r$p$salt$hash``."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded` (False for a malformed hash; constant time)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def load_or_create_key(state_dir: Path) -> bytes:
    """The session signing key of `state_dir` (created once, 32 random bytes, mode 0600)."""
    path = state_dir / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Raw ASGI headers as a dict of lower-case names (the last of a repeated one wins,
    except cookies, which are joined)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "cookie" and name in out:
            out[name] += "; " + value
        else:
            out[name] = value
    return out


def cookies_of(headers: Mapping[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header: no cookies (SimpleCookie raises CookieError)
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


class Authenticator:
    """Checks tokens, passwords and sessions against the serve settings."""

    def __init__(self, settings: ServeSettings, key: bytes) -> None:
        self.settings = settings
        self.key = key
        self.ttl = settings.config.session_ttl
        self.users = {u.name: u for u in settings.config.users}
        self.token_roles = {name: role for name, role in settings.tokens.values()}
        self.anonymous = settings.config.allow_anonymous_viewer

    # -- credentials ---------------------------------------------------------------------------
    def by_token(self, token: str) -> Principal | None:
        """The principal of an API token (every token compared: constant time overall)."""
        found: Principal | None = None
        given = token.encode()
        for value, (name, role) in self.settings.tokens.items():
            if hmac.compare_digest(value.encode(), given):
                found = Principal(name, role, "bearer")
        return found

    def by_password(self, name: str, password: str) -> Principal | None:
        """The principal of a static user's name and password (slow: scrypt; run in a thread)."""
        user = self.users.get(name)
        if user is None:
            verify_password(password, hash_password("x", salt=b"\0" * 16))  # same cost
            return None
        if not verify_password(password, user.password_hash):
            return None
        return Principal(user.name, user.role, "session")

    def _current_role(self, name: str) -> str | None:
        user = self.users.get(name)
        if user is not None:
            return user.role
        return self.token_roles.get(name)

    # -- sessions ------------------------------------------------------------------------------
    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self.key, payload, hashlib.sha256).digest())

    def issue(self, who: Principal, *, now: float | None = None) -> tuple[str, str]:
        """(session cookie value, CSRF value) for `who`."""
        csrf = secrets.token_urlsafe(24)
        expires = int((now if now is not None else time.time()) + self.ttl)
        body = json.dumps({"n": who.name, "r": who.role, "c": csrf, "e": expires}).encode()
        return f"{_b64(body)}.{self._sign(body)}", csrf

    def session(self, value: str, *, now: float | None = None) -> Principal | None:
        """The principal of a session cookie value, or None (forged, expired, user gone)."""
        head, _, signature = value.partition(".")
        try:
            body = _unb64(head)
        except (ValueError, TypeError):
            return None
        # bytes, not str: compare_digest refuses non-ASCII text (a forged cookie may hold any)
        if not signature or not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            return None
        try:
            data = json.loads(body)
            name, role, csrf, expires = data["n"], data["r"], data["c"], float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < (now if now is not None else time.time()):
            return None
        if self._current_role(name) != role:  # removed, or its role changed since
            return None
        return Principal(str(name), str(role), "session", str(csrf))

    # -- one request ---------------------------------------------------------------------------
    def identify(self, headers: Mapping[str, str]) -> Principal | None:
        """Who sent a request with these (lower-cased) headers: bearer token, else session
        cookie, else the anonymous viewer when allowed, else None."""
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return self.by_token(authorization[7:].strip())
        value = cookies_of(headers).get(SESSION_COOKIE)
        if value:
            who = self.session(value)
            if who is not None:
                return who
        return ANONYMOUS if self.anonymous else None

    @staticmethod
    def csrf_ok(who: Principal, method: str, headers: Mapping[str, str]) -> bool:
        """Whether a request by `who` passes the CSRF check (safe methods and bearer always;
        a session's change must echo the CSRF cookie in X-CSRF-Token, equal to its own)."""
        if method.upper() in SAFE_METHODS or who.via != "session":
            return True
        sent = headers.get(CSRF_HEADER, "")
        cookie = cookies_of(headers).get(CSRF_COOKIE, "")
        if not sent or not who.csrf:
            return False
        return hmac.compare_digest(sent.encode(), who.csrf.encode()) and hmac.compare_digest(
            cookie.encode(), who.csrf.encode()
        )
