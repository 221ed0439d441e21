"""Talk to a running guard's control endpoints: the HTTP calls behind `crisisctl guard status`,
`crisisctl guard mode` and watch's ``guard_mode`` runbook action.

Every call goes through the transport room (`crisisctl.transport`): a `Target` carries the TLS
context (``--cacert``, ``--cert/--key``, ``--insecure``), the ``--resolve`` pins and the extra
headers (``-H``, the guard's bearer token), and `probe.http.probe` sends the one request.

* `read_status` GETs ``PREFIX/status`` and returns the guard's status document;
* `post_mode` POSTs ``{"mode", "reason", "actor"}`` to ``PREFIX/mode`` and returns the guard's
  answer (its new mode state);
* `post_invalidate` POSTs ``{"prefix"}`` to ``PREFIX/cache/invalidate`` and returns the
  guard's answer (how many cached responses were dropped);
* `switch_mode` builds the target from a URL, a token and transport options, then `post_mode`
  (what watch calls with a `GuardEndpoint`'s pins).

Every failure is a `GuardModeError` whose text is one sentence that never contains the token
(the token travels only in the request's Authorization header).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from crisisctl.probe.http import ProbeResult, probe
from crisisctl.transport.settings import TransportSpec
from crisisctl.transport.target import Target

MODES: Final = ("normal", "emergency", "recovering")
DEFAULT_PREFIX: Final = "/_crisis"
#: the status document lists every route; keep all of it (probe's default keeps 256 KiB)
STATUS_BODY_CAP: Final = 8 * 1024 * 1024
ENDPOINTS: Final = ("status", "metrics", "health", "mode", "cache/invalidate")


class GuardModeError(Exception):
    """A control call failed; ``str(exc)`` is one sentence, `unreachable` says the guard never
    answered (CLI exit 3: refused, timed out, a certificate or name problem) rather than
    refused or answered badly (exit 2)."""

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
    for name in ENDPOINTS:
        if base.endswith(f"{prefix}/{name}"):
            base = base[: -len(name) - 1]
            break
    if not base.endswith(prefix):
        base += prefix
    return f"{base}/{endpoint}"


def endpoint(target: Target, prefix: str, name: str) -> Target:
    """`target` (any URL of the service) pointed at the control endpoint `name`."""
    path = control_url(f"{target.origin}{target.path}", prefix, name)[len(target.origin) :]
    return dataclasses.replace(target, path=path)


def check_switch(mode: str, token: str) -> None:
    """GuardModeError unless `mode` is a mode and a token was given."""
    if mode not in MODES:
        raise GuardModeError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if not token:
        raise GuardModeError(
            "no token given: pass --token or set CRISISCTL_GUARD_TOKEN to the guard's token"
        )


def _unreachable(result: ProbeResult, target: Target, timeout_s: float) -> GuardModeError:
    """The sentence for a request that got no answer (the guard never answered)."""
    url = target.url
    if result.error == "tls":  # describe_tls_error's sentence: host and what is wrong
        message = result.detail
    elif result.error == "dns":
        message = (
            f"the host {target.host} cannot be resolved: check the name or pin it with "
            "--resolve HOST:PORT:ADDR."
        )
    elif result.error == "timeout":
        message = f"{url} did not answer within {timeout_s:g} s; is the service overloaded or down?"
    else:
        message = (
            f"could not reach {url} ({result.error}: {result.detail}); is the service running?"
        )
    return GuardModeError(message, unreachable=True)


def _json(result: ProbeResult, url: str) -> dict[str, Any]:
    try:
        data = json.loads(result.body)
    except (ValueError, UnicodeDecodeError):
        raise GuardModeError(
            f"{url} answered HTTP {result.status} without JSON; "
            "is the guard installed at this prefix?"
        ) from None
    if not isinstance(data, dict):
        raise GuardModeError(
            f"{url} answered unexpected JSON; is the guard installed at this prefix?"
        )
    return data


def _refusal(result: ProbeResult, url: str) -> str:
    """The guard's own ``error`` text of a refusal (empty when it gave none)."""
    try:
        return str(_json(result, url).get("error", ""))
    except GuardModeError:
        return ""


async def read_status(target: Target, *, prefix: str, timeout_s: float) -> dict[str, Any]:
    """The guard's status document from ``PREFIX/status`` of `target`'s service."""
    status = endpoint(target, prefix, "status")
    result = await probe(status, timeout_s=timeout_s, body_cap=STATUS_BODY_CAP)
    if not result.answered:
        raise _unreachable(result, status, timeout_s)
    if result.status in (401, 403, 429):
        raise GuardModeError(
            f"the guard refused to show its status (HTTP {result.status}): "
            f"{_refusal(result, status.url)}"
        )
    if result.status != 200:
        raise GuardModeError(
            f"{status.url} answered HTTP {result.status}; is the guard installed at {prefix}?"
        )
    return _json(result, status.url)


async def post_mode(
    target: Target,
    mode: str,
    *,
    prefix: str,
    reason: str = "",
    actor: str = "crisisctl",
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Switch the guard of `target`'s service to `mode` (the target's headers carry the
    token); the guard's JSON answer, or GuardModeError."""
    if mode not in MODES:
        raise GuardModeError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    switch = endpoint(target, prefix, "mode")
    body = json.dumps({"mode": mode, "reason": reason, "actor": actor}).encode()
    result = await probe(switch, method="POST", body=body, timeout_s=timeout_s)
    if not result.answered:
        raise _unreachable(result, switch, timeout_s)
    if result.status in (401, 403, 429):
        raise GuardModeError(
            f"the guard refused the switch (HTTP {result.status}): {_refusal(result, switch.url)}"
        )
    if result.status != 200:
        text = result.body[:200].decode("utf-8", "replace")
        raise GuardModeError(f"{switch.url} answered HTTP {result.status}: {text}")
    return _json(result, switch.url)


async def post_invalidate(
    target: Target, key_prefix: str, *, prefix: str, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Drop the cached responses whose key starts with `key_prefix` (a path, e.g.
    ``/api/items``) in the guard of `target`'s service; the guard's JSON answer
    (``{"prefix", "dropped"}``), or GuardModeError."""
    if not key_prefix.startswith("/"):
        raise GuardModeError(f"the prefix {key_prefix!r} must be a path starting with '/'")
    call = endpoint(target, prefix, "cache/invalidate")
    body = json.dumps({"prefix": key_prefix}).encode()
    result = await probe(call, method="POST", body=body, timeout_s=timeout_s)
    if not result.answered:
        raise _unreachable(result, call, timeout_s)
    if result.status in (401, 403, 409, 429, 503):
        raise GuardModeError(
            f"the guard refused the invalidation (HTTP {result.status}): "
            f"{_refusal(result, call.url)}"
        )
    if result.status != 200:
        text = result.body[:200].decode("utf-8", "replace")
        raise GuardModeError(f"{call.url} answered HTTP {result.status}: {text}")
    return _json(result, call.url)


def guard_target(
    url: str,
    *,
    token: str,
    prefix: str = DEFAULT_PREFIX,
    resolve: Sequence[str] = (),
    transport: TransportSpec | None = None,
    headers: Mapping[str, str] | None = None,
    tool: str = "crisisctl",
) -> Target:
    """The `Target` of the guard at `url`: `transport`'s TLS and pins plus the pins in
    `resolve`, `headers`, and the token as ``Authorization: Bearer``; GuardModeError when
    the URL or a pin is unusable."""
    spec = transport or TransportSpec()
    if resolve:
        try:
            spec = TransportSpec(**{**spec.model_dump(), "resolve": [*spec.resolve, *resolve]})
        except ValueError as exc:
            raise GuardModeError(_first_sentence(exc)) from None
    extra = dict(headers or {})
    if token:
        extra["Authorization"] = f"Bearer {token}"
    url = control_url(url, prefix, "mode")
    try:
        return spec.target(url, tool, extra)
    except ValueError as exc:
        raise GuardModeError(str(exc)) from None


def _first_sentence(exc: ValueError) -> str:
    """A pydantic validation error's own sentence (the --resolve validator's), or the text."""
    text = str(exc)
    return text.split("Value error, ", 1)[-1].split("[type=")[0].strip()


async def switch_mode(
    url: str,
    mode: str,
    *,
    token: str,
    reason: str = "",
    actor: str = "crisisctl",
    prefix: str = DEFAULT_PREFIX,
    timeout_s: float = 5.0,
    resolve: Sequence[str] = (),
    transport: TransportSpec | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Switch the guard at `url` to `mode`; its JSON answer, or GuardModeError.

    `resolve` holds curl-style ``HOST:PORT:ADDR`` pins (added to `transport`'s): the request
    connects to ADDR while the Host header, SNI and the certificate check keep HOST.
    """
    check_switch(mode, token)
    target = guard_target(
        url, token=token, prefix=prefix, resolve=resolve, transport=transport, headers=headers
    )
    return await post_mode(
        target, mode, prefix=prefix, reason=reason, actor=actor, timeout_s=timeout_s
    )


__all__ = [
    "MODES",
    "GuardModeError",
    "check_switch",
    "control_url",
    "endpoint",
    "guard_target",
    "post_mode",
    "read_status",
    "switch_mode",
]
