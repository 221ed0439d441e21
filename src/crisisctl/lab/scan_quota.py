"""The demo's proof that the fixed service's scan cap is the guard's operation quota.

`show(url, cap)` starts ``cap + 1`` scans at once against the fixed service: ``cap`` are
admitted (202) and hold the quota's slots until their scans end, so the last one is refused by
the guard at admission (429, reason ``operation_quota``, ``Retry-After``). It then waits for the
admitted scans to end, so the demo's next steps find the quota free. The requests come from a
loopback address of their own (127.0.0.9 where the host can bind it), so the per-client rate
limits of the demo's other requests are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any, Final

import httpx

from crisisctl.lab.process import LabError
from crisisctl.lab.scanner import SCAN_OPERATION

SOURCE_ADDRESS: Final = "127.0.0.9"
WAIT_S: Final = 20.0


def _source_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((SOURCE_ADDRESS, 0))
        except OSError:
            return "127.0.0.1"
    return SOURCE_ADDRESS


async def _held(http: httpx.AsyncClient, url: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        status = (await http.get(f"{url}/_crisis/status")).json()
        held: int = status["policies"]["operations"]["quotas"][SCAN_OPERATION]["held_here"]
        return held
    return None


async def show(url: str, cap: int) -> dict[str, Any]:
    """Start `cap` + 1 scans at once; what the guard answered (statuses, the refusal)."""
    transport = httpx.AsyncHTTPTransport(local_address=_source_address())
    async with httpx.AsyncClient(transport=transport, timeout=10.0, trust_env=False) as http:
        answers = await asyncio.gather(
            *[
                http.post(f"{url}/api/scans", json={"name": f"quota check {i + 1}"})
                for i in range(cap + 1)
            ]
        )
        statuses = sorted(a.status_code for a in answers)
        refused = next((a for a in answers if a.status_code == 429), None)
        body: dict[str, Any] = {}
        if refused is not None:
            with contextlib.suppress(ValueError):
                body = refused.json()
        deadline = time.monotonic() + WAIT_S
        while (held := await _held(http, url)) != 0:
            if time.monotonic() > deadline:
                raise LabError(
                    f"the quota check's scans still held {held} slots after {WAIT_S:g} s."
                )
            await asyncio.sleep(0.1)
    shown = ", ".join(str(s) for s in statuses)
    if refused is not None and body.get("reason") == "operation_quota":
        message = (
            f"the guard's operation quota refused an excess scan: {cap + 1} scans at once → "
            f"{shown} ('{body.get('operation')}' quota of {cap} running scans, Retry-After "
            f"{refused.headers.get('retry-after')} s); the {cap} admitted scans held their "
            "slots until they ended"
        )
    else:
        message = f"the guard's operation quota refused no scan: {cap + 1} scans at once → {shown}"
    return {
        "statuses": statuses,
        "refused": refused is not None and body.get("reason") == "operation_quota",
        "retry_after": refused.headers.get("retry-after") if refused is not None else None,
        "message": message,
    }
