"""Where requests go: parse an ``http://`` or ``https://`` URL into a `Target` (any host).

`parse_url` accepts any host; a ``--resolve`` pin (see `resolve`) changes only the address
connected to. `check_loopback_url` keeps the old, stricter rule for the commands that must stay
on this machine (the lab's ``demo``).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from crisisctl.transport.resolve import Pins, pinned

DEFAULT_PORTS = {"http": 80, "https": 443}


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
    """A parsed URL: where to connect, how (TLS or not), and what to put in the request line.

    `connect_host` is the address (or name, resolved at connect time) connections go to;
    `host` is the URL's own host, used for the Host header, SNI and the certificate check.
    `headers` are added to every request built for this target (auth, ``-H``).
    """

    host: str
    port: int
    connect_host: str
    path: str
    host_header: str
    scheme: str = "http"
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def is_tls(self) -> bool:
        """Whether connections speak TLS (an ``https://`` target)."""
        return self.ssl is not None

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` as the user wrote it (for reports)."""
        return f"{self.scheme}://{self.host_header}"

    @property
    def url(self) -> str:
        """The whole URL of this target (for reports)."""
        return self.origin + self.path


def parse_url(
    url: str,
    tool: str = "crisisctl",
    *,
    pins: Pins | None = None,
    tls: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> Target:
    """Parse an ``http://`` or ``https://`` URL (any host); ValueError (one sentence) otherwise.

    An ``https://`` target needs `tls` (a context from `crisisctl.transport.tls`); without one
    a default verifying context is made.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{tool} speaks http:// and https://, not {url!r}.")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"the URL {url!r} has no host.")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"the URL {url!r} has an invalid port.") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    pin = pinned(pins or {}, host, port)
    if pin is not None:
        connect_host = pin
    elif host.lower().rstrip(".") == "localhost":
        # "localhost" is pinned to 127.0.0.1 so name resolution can never pick another address
        connect_host = "127.0.0.1"
    else:
        connect_host = host
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header = f"{host_header}:{port}"
    context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    if parts.scheme == "https":
        if tls is None:
            from crisisctl.transport.tls import TlsOptions, make_context

            tls = make_context(TlsOptions())
        context = tls
        server_hostname = host
    extra = tuple((headers or {}).items())
    return Target(
        host, port, connect_host, path, host_header, parts.scheme, context, server_hostname, extra
    )


def check_loopback_url(url: str, tool: str = "crisisctl") -> Target:
    """Parse an ``http://`` URL and raise ValueError unless its host is loopback (the lab)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{tool} only speaks plain http://, not {url!r}.")
    if not is_loopback_host(parts.hostname or ""):
        raise ValueError(
            f"{tool} only sends to loopback hosts (127.0.0.0/8, ::1, localhost), "
            f"so it refuses {url!r}."
        )
    return parse_url(url, tool)
