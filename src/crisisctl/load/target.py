"""Where load may be sent: parse an http:// URL and refuse any host that is not loopback.

Every load, soak or fault run of crisisctl stays on this machine (127.0.0.0/8, ::1,
localhost); this is the one place that decides it, shared by the load engine and the lab.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """True for localhost and for loopback IPv4/IPv6 literals."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: TEMPORARY (branch `distributed`, until the transport branch lifts the loopback-only rule):
#: the distributed-load integration test sets this in the environment of the processes it
#: starts inside its own network namespaces, so they may target the namespaces' 10.x
#: addresses. Nothing else sets it; the lead reconciles it with the transport branch.
ALLOW_ANY_HOST_ENV = "CRISISCTL_TEST_ALLOW_ANY_HOST"


def host_allowed(host: str) -> bool:
    """The one refusal rule: loopback only (or any host under `ALLOW_ANY_HOST_ENV`, tests)."""
    return is_loopback_host(host) or os.environ.get(ALLOW_ANY_HOST_ENV) == "1"


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed loopback URL: where to connect and what to put in the request line."""

    host: str
    port: int
    connect_host: str
    path: str
    host_header: str


def check_loopback_url(url: str, tool: str = "crisisctl") -> Target:
    """Parse an ``http://`` URL and raise ValueError unless its host is loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{tool} only speaks plain http://, not {url!r}.")
    host = parts.hostname or ""
    if not host_allowed(host):
        raise ValueError(
            f"{tool} only sends to loopback hosts (127.0.0.0/8, ::1, localhost), "
            f"so it refuses {url!r}."
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"the URL {url!r} has an invalid port.") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    # "localhost" is pinned to 127.0.0.1 so name resolution can never pick another address.
    connect_host = "127.0.0.1" if host.lower().rstrip(".") == "localhost" else host
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header = f"{host_header}:{port}"
    return Target(host, port, connect_host, path, host_header)
