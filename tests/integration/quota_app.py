"""A scanning service behind `QuotaLayer` alone, for the quota tests (run by uvicorn).

Configured by CRISISCTL_TEST_QUOTA (JSON): a `GuardConfig` dict (routes with quotas, tiers,
default_tier, storage, storage_prefix, quota_lease_s) plus ``api_keys`` ({key: tier}) for an
`ApiKeyTable` key function. A request carrying ``x-break: 1`` makes the key function raise.

    POST /api/scans?hold=S   works S seconds (asyncio.sleep), answers {"key", "tier"}
    GET  /health             200 (readiness)
    GET  /quota              the policy's status document (`QuotaPolicy.describe`)
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qs

from crisisctl.guard.config import GuardConfig
from crisisctl.guard.quota import CLIENT_SCOPE_KEY, QuotaLayer, QuotaPolicy
from crisisctl.guard.quota_store import open_quota_store
from crisisctl.guard.tiers import ApiKeyTable, TierTable
from crisisctl.guard.types import Receive, Scope, Send

settings: dict[str, Any] = json.loads(os.environ.get("CRISISCTL_TEST_QUOTA", "{}"))
api_keys = ApiKeyTable(settings.pop("api_keys", {}))
config = GuardConfig.from_dict(settings)


def key_func(scope: Scope) -> str | tuple[str, str]:
    if (b"x-break", b"1") in scope.get("headers", ()):
        raise LookupError("the token's claims could not be read")
    return api_keys(scope)


async def scans(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await app.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope.get("query_string", b"").decode())
    if scope["path"] == "/api/scans":
        await asyncio.sleep(float(query.get("hold", ["0"])[0]))
        identity = scope.get(CLIENT_SCOPE_KEY)
        body = json.dumps(
            {"key": identity.key if identity else None, "tier": identity.tier if identity else None}
        ).encode()
    elif scope["path"] == "/quota":
        body = json.dumps(policy.describe()).encode()
    else:
        body = b"{}"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


store = open_quota_store(
    config.storage,
    lease_s=config.quota_lease_s,
    prefix=config.storage_prefix,
    timeout_s=max(config.storage_timeout_s, 1.0),
)
policy = QuotaPolicy(
    config.routes,
    store,
    tiers=TierTable(config.tiers, config.default_tier, key_func=key_func),
    emergency=lambda: os.environ.get("QUOTA_TEST_EMERGENCY") == "1",
    emergency_factor=config.emergency.concurrency_factor,
)
app = QuotaLayer(scans, policy)
