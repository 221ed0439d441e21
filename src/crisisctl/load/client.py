"""The load engine's HTTP client, which lives in the transport room (`crisisctl.transport.client`).

Re-exported here for the engine's modules; `parse_target` parses a URL for the engine's plain
URL runs (any host, http:// or https:// with the default verifying TLS context).
"""

from __future__ import annotations

from crisisctl.transport.client import (
    BODY_CAP,
    ERROR_KINDS,
    BadResponse,
    ClosedEarly,
    HttpClient,
    HttpConnection,
    RequestError,
    Response,
    Waiter,
    build_request,
    classify_error,
)
from crisisctl.transport.target import Target, parse_url

__all__ = [
    "BODY_CAP",
    "ERROR_KINDS",
    "BadResponse",
    "ClosedEarly",
    "HttpClient",
    "HttpConnection",
    "RequestError",
    "Response",
    "Target",
    "Waiter",
    "build_request",
    "classify_error",
    "parse_target",
]


def parse_target(url: str) -> Target:
    """Parse an ``http://`` or ``https://`` URL (any host); ValueError when it is not one."""
    return parse_url(url, tool="crisisctl load")
