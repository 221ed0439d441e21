"""One watch responder in its own process (the two-process test runs two at once).

    python watch_respond_worker.py DB_URL SERVICE HOOK_BASE START_EPOCH

Builds a responder whose level 1 calls HOOK_BASE/act and that notifies json://…/hook, waits
until START_EPOCH (so both processes act at the same instant) and feeds it one firing alert.
(This module holds no tests.)
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

from watch_support import Directory, alert, fire

from crisisctl.watch.respond import build_responder
from crisisctl.watch.respond_config import ResponseConfig


async def main(db_url: str, service: str, hook: str, start: float) -> None:
    host = hook.removeprefix("http://")
    cfg = ResponseConfig.model_validate(
        {
            "incidents": {"triage": False},
            "notify": {"urls": [f"json://{host}/hook"], "retries": 0},
            "runbooks": {"P1": [{"level": 1, "actions": [{"webhook": f"{hook}/act"}]}]},
        }
    )
    responder = build_responder(cfg, db_url=db_url, directory=Directory())
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    a = alert(service, now)
    await asyncio.sleep(max(0.0, start - time.time()))
    try:
        await responder.handle([fire(a, now)], [a], now)
    finally:
        await asyncio.wait_for(responder.aclose(), 30)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
