"""One request before a run, so that a target that cannot be used is one sentence, exit 3.

`preflight()` resolves the target's host, connects, does the TLS handshake of an https://
target and sends one ``GET`` of the target's path with ``Connection: close``, reading only the
first bytes of the answer (a TLS 1.3 server refuses a missing client certificate only after
the handshake, at the first read). It raises `TransportError` for a name that does not resolve
and for every TLS failure (unknown CA, name mismatch, expired, client certificate required).
Some servers (Python's asyncio ones among them) drop a connection without a client certificate
without sending TLS's "certificate required" alert: a connection that ends without a byte
right after a good handshake, when no client certificate was given, is reported as one that
may need a client certificate.
anything else — refused, reset, slow, an error status — is left to the command, which reports
it as evidence.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from crisisctl.transport.request import build_request
from crisisctl.transport.resolve import resolve
from crisisctl.transport.target import Target
from crisisctl.transport.tls import TransportError, describe_tls_error

PREFLIGHT_TIMEOUT_S = 5.0


async def preflight(
    target: Target, timeout_s: float = PREFLIGHT_TIMEOUT_S, client_cert: bool = False
) -> None:
    """Check that `target` resolves and that its TLS (if any) is acceptable; see the module
    (`client_cert`: whether the target's context carries a client certificate)."""
    writer: asyncio.StreamWriter | None = None
    dropped = False
    try:
        async with asyncio.timeout(timeout_s):
            address = await resolve(target.connect_host, target.port)
            if target.ssl is None:
                return  # plain http: nothing more to check before the run
            reader, writer = await asyncio.open_connection(address, target.port)
            await writer.start_tls(target.ssl, server_hostname=target.server_hostname)
            writer.write(build_request(target, "GET", headers={"Connection": "close"}))
            await writer.drain()
            try:
                dropped = not await reader.read(1)
            except ConnectionResetError:
                dropped = True
    except socket.gaierror as exc:
        raise TransportError(
            f"the host {target.host} cannot be resolved ({exc.strerror or exc}): check the name "
            "or pin it with --resolve HOST:PORT:ADDR."
        ) from None
    except ssl.SSLError as exc:
        raise TransportError(describe_tls_error(exc, target.host)) from None
    except (OSError, TimeoutError, EOFError):
        return  # refused, reset or slow: the command's own report says so
    finally:
        if writer is not None:
            writer.close()
    if dropped and not client_cert:
        raise TransportError(
            f"{target.host} closed the connection right after the TLS handshake without an "
            "answer: it most likely requires a client certificate; give one with --cert FILE "
            "--key FILE."
        )


def run_preflight(
    target: Target, timeout_s: float = PREFLIGHT_TIMEOUT_S, client_cert: bool = False
) -> None:
    """`preflight` from synchronous code (the CLI, before its own event loop runs)."""
    asyncio.run(preflight(target, timeout_s, client_cert))
