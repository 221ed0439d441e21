"""Name pinning (``--resolve HOST:PORT:ADDR``, as curl means it) and async name resolution.

A pin makes connections to HOST:PORT go to ADDR while everything else — the Host header, SNI
and the certificate's name check — still uses HOST. Resolution of names that are not pinned
goes through `loop.getaddrinfo` (a thread of the loop's executor): it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping

#: (host lower-cased, port) -> address to connect to
Pins = Mapping[tuple[str, int], str]


def parse_resolve(text: str) -> tuple[tuple[str, int], str]:
    """One ``HOST:PORT:ADDR`` pin; ValueError (one sentence) when it is not one."""
    host, sep1, rest = text.partition(":")
    port_text, sep2, addr = rest.partition(":")
    addr = addr.strip().removeprefix("[").removesuffix("]")
    usage = (
        f"--resolve {text!r} is not HOST:PORT:ADDR: write e.g. --resolve api.example:443:127.0.0.1."
    )
    if not (sep1 and sep2 and host.strip() and addr):
        raise ValueError(usage)
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(usage) from None
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(
            f"--resolve {text!r}: {addr!r} is not an IP address (a pin names the address itself)."
        ) from None
    return (host.strip().lower().rstrip("."), port), addr


def parse_pins(texts: Iterable[str]) -> dict[tuple[str, int], str]:
    """Every ``--resolve`` pin, the last one winning for a HOST:PORT given twice."""
    return dict(parse_resolve(text) for text in texts)


def pinned(pins: Pins, host: str, port: int) -> str | None:
    """The address `host`:`port` is pinned to, or None."""
    return pins.get((host.lower().rstrip("."), port))


async def resolve(host: str, port: int) -> str:
    """The first address of `host` (an address literal is returned as it is); never blocks
    the event loop. Raises socket.gaierror when the name does not resolve."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])
