"""Where load may be sent: parse an http:// URL and refuse any host that is not loopback.

Every load, soak or fault run of crisisctl stays on this machine (127.0.0.0/8, ::1,
localhost); this is the one place that decides it, shared by the load engine and the lab.
"""

from __future__ import annotations

import ipaddress
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
    if not is_loopback_host(host):
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
