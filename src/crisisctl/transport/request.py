"""The bytes of one HTTP/1.1 request for a `Target` (keep-alive unless told otherwise)."""

from __future__ import annotations

from collections.abc import Mapping

from crisisctl.transport.target import Target

USER_AGENT = "crisisctl-load/1"


def build_request(
    target: Target,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """One HTTP/1.1 request: Host, User-Agent and Accept, then the target's own headers
    (auth, ``-H``), then `headers`; Content-Length set when there is a body.

    ValueError for a method that is not one or a header value with a line break.
    """
    if not method.isalpha():
        raise ValueError(f"{method!r} is not an HTTP method.")
    merged: dict[str, tuple[str, str]] = {}
    defaults = (("Host", target.host_header), ("User-Agent", USER_AGENT), ("Accept", "*/*"))
    for name, value in (*defaults, *target.headers, *(headers or {}).items()):
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"header {name!r} contains a line break.")
        merged[name.lower()] = (name, value)
    if body is not None:
        merged["content-length"] = ("Content-Length", str(len(body)))
    head = f"{method.upper()} {target.path} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in merged.values())
    return (head + "\r\n").encode("latin-1") + (body or b"")
