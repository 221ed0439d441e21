"""Switch a running guard's mode through its control endpoint: the one HTTP call behind
`crisisctl guard mode` and watch's ``guard_mode`` runbook action.

`switch_mode` POSTs ``{"mode", "reason", "actor"}`` to ``PREFIX/mode`` with the bearer token
and returns the guard's answer (its new mode state); every failure is a `GuardModeError` whose
text is one sentence that never contains the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import httpx

from crisisctl.transport.resolve import parse_pins, pinned

MODES: Final = ("normal", "emergency", "recovering")


class GuardModeError(Exception):
    """The switch failed; ``str(exc)`` is one sentence, `unreachable` says the guard never
    answered (CLI exit 3) rather than refused or answered badly."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def control_url(url: str, prefix: str, endpoint: str) -> str:
    """`url` may be the service's base URL or already point at the control prefix."""
    if not url.startswith(("http://", "https://")):
        raise GuardModeError(
            f"{url!r} is not an http(s) URL: give the service's base URL, e.g. http://127.0.0.1:8000"
        )
    base = url.rstrip("/")
    for name in ("status", "metrics", "health", "mode"):
        if base.endswith(f"{prefix}/{name}"):
            base = base[: -len(name) - 1]
            break
    if not base.endswith(prefix):
        base += prefix
    return f"{base}/{endpoint}"


def _json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise GuardModeError(
            f"{url} answered HTTP {response.status_code} without JSON; "
            "is the guard installed at this prefix?"
        ) from None
    if not isinstance(data, dict):
        raise GuardModeError(
            f"{url} answered unexpected JSON; is the guard installed at this prefix?"
        )
    return data


def _pinned(url: str, resolve: Sequence[str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(URL to connect to, httpx extensions, headers) honouring the pins in `resolve`."""
    try:
        pins = parse_pins(resolve)
    except ValueError as exc:
        raise GuardModeError(str(exc)) from None
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addr = pinned(pins, parsed.host, port) if pins else None
    if addr is None:
        return url, {}, {}
    host_header = parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    return str(parsed.copy_with(host=addr)), extensions, {"host": host_header}


async def switch_mode(
    url: str,
    mode: str,
    *,
    token: str,
    reason: str = "",
    actor: str = "crisisctl",
    prefix: str = "/_crisis",
    timeout_s: float = 5.0,
    resolve: Sequence[str] = (),
) -> dict[str, Any]:
    """Switch the guard at `url` to `mode`; its JSON answer, or GuardModeError.

    `resolve` holds curl-style ``HOST:PORT:ADDR`` pins: the request connects to ADDR while the
    Host header, SNI and the certificate check keep HOST.
    """
    if mode not in MODES:
        raise GuardModeError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if not token:
        raise GuardModeError(
            "no token given: pass --token or set CRISISCTL_GUARD_TOKEN to the guard's token"
        )
    target = control_url(url, prefix, "mode")
    connect_to, extensions, headers = _pinned(target, resolve)
    headers["authorization"] = f"Bearer {token}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.post(
                connect_to,
                json={"mode": mode, "reason": reason, "actor": actor},
                headers=headers,
                extensions=extensions,
            )
    except httpx.TimeoutException:
        raise GuardModeError(
            f"{target} did not answer within {timeout_s:g} s; is the service overloaded or down?",
            unreachable=True,
        ) from None
    except httpx.HTTPError as exc:
        raise GuardModeError(
            f"could not reach {target} ({exc.__class__.__name__}: {exc}); is the service running?",
            unreachable=True,
        ) from None
    if response.status_code in (401, 403):
        detail = _json(response, target).get("error", "")
        raise GuardModeError(
            f"the guard refused the switch (HTTP {response.status_code}): {detail}"
        )
    if response.status_code != 200:
        raise GuardModeError(
            f"{target} answered HTTP {response.status_code}: {response.text[:200]}"
        )
    return _json(response, target)


__all__ = ["MODES", "GuardModeError", "control_url", "switch_mode"]
