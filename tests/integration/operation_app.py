"""A Starlette service behind `Guard()` whose scans run in the background under an operation
quota (run by uvicorn; configured by CRISISCTL_TEST_OPERATIONS, a `GuardConfig` dict).

    POST /api/jobs?hold=S    202 at once; the job runs S seconds in the background, holding the
                             "job" slot the guard took at admission (`operation_of`)
    GET  /api/export?hold=S  holds an "export" slot of the client (`operations_of(request)`,
                             from the lifespan state) for S seconds; 429 when refused
    GET  /health             200 (readiness)
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crisisctl.guard import Guard, GuardConfig, OperationRefused, operation_of, operations_of

settings: dict[str, Any] = json.loads(os.environ.get("CRISISCTL_TEST_OPERATIONS", "{}"))


async def start_job(request: Request) -> JSONResponse:
    operation = operation_of(request)
    if operation is None:
        return JSONResponse({"error": "no operation slot"}, status_code=500)
    hold = float(request.query_params.get("hold", "0"))
    operation.hold_until(asyncio.create_task(asyncio.sleep(hold)))
    return JSONResponse({"started": True}, status_code=202)


async def export(request: Request) -> JSONResponse:
    operations = operations_of(request)
    if operations is None:
        return JSONResponse({"error": "no operations in the lifespan state"}, status_code=500)
    client = request.client.host if request.client else "?"
    try:
        async with operations.hold("export", key=client):
            await asyncio.sleep(float(request.query_params.get("hold", "0")))
    except OperationRefused as refused:
        return JSONResponse({"refused": refused.reason}, status_code=429)
    return JSONResponse({"exported": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


service = Starlette(
    routes=[
        Route("/api/jobs", start_job, methods=["POST"]),
        Route("/api/export", export),
        Route("/health", health),
    ]
)
app = Guard(service, GuardConfig.from_dict(settings))
