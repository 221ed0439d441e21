"""The Alertmanager intake's credential check, and the refusal to listen without one.

Alertmanager's ``http_config`` sends either ``Authorization: Bearer <credentials>``
(``authorization: {credentials_file: …}``; the file's content, trimmed) or
``Authorization: Basic base64(user:password)`` (``basic_auth``). `IntakeAuth.allows` compares
in constant time (`hmac.compare_digest`, user and password both compared whatever the first
gave). Secure by default: `intake_auth` refuses an intake without a credential unless the watch
file says ``allow_unauthenticated: true`` AND the listener is loopback-only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass, field

from crisisctl.watch.config import resolve_secret
from crisisctl.watch.config_sources import IntakeSpec

__all__ = ["IntakeAuth", "IntakeConfigError", "intake_auth", "is_loopback"]


class IntakeConfigError(ValueError):
    """The intake cannot start as configured (one sentence: what to write instead)."""


@dataclass(frozen=True)
class IntakeAuth:
    """The one credential the intake accepts (secrets resolved; never in a repr or a log)."""

    bearer: str | None = field(default=None, repr=False)
    basic: tuple[str, str] | None = field(default=None, repr=False)
    #: no credential: every request is accepted (loopback listeners only, see `intake_auth`)
    unauthenticated: bool = False

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the credential."""
        if self.bearer is None and self.basic is None:
            return self.unauthenticated
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()
        if self.bearer is not None:
            same = hmac.compare_digest(value.encode(), self.bearer.encode())
            return same and scheme.lower() == "bearer"
        assert self.basic is not None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        same_user = hmac.compare_digest(user.encode(), self.basic[0].encode())
        same_password = hmac.compare_digest(password.encode(), self.basic[1].encode())
        return same_user and same_password and scheme.lower() == "basic"


def is_loopback(host: str) -> bool:
    """Whether `host` (a listen address) accepts loopback connections only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def intake_auth(spec: IntakeSpec | None, host: str) -> IntakeAuth:
    """The intake's credential from the watch file's ``intake:`` (``env:NAME`` resolved);
    IntakeConfigError when it has none and may not go without (see the module docstring)."""
    spec = spec or IntakeSpec()
    if spec.bearer is not None:
        return IntakeAuth(bearer=resolve_secret(spec.bearer).strip())
    if spec.basic is not None:
        return IntakeAuth(basic=(spec.basic.user, resolve_secret(spec.basic.password)))
    if not spec.allow_unauthenticated:
        raise IntakeConfigError(
            "the Alertmanager intake has no credential: give intake: {bearer: env:NAME} or "
            "intake: {basic: {user: NAME, password: env:NAME}} in the watch file (or, on a "
            "loopback listener only, intake: {allow_unauthenticated: true})."
        )
    if not is_loopback(host):
        raise IntakeConfigError(
            f"the Alertmanager intake may go without a credential only on a loopback listener, "
            f"not on {host}: listen on 127.0.0.1 or give intake: {{bearer: env:NAME}}."
        )
    return IntakeAuth(unauthenticated=True)
