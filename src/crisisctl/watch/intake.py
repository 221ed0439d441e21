"""The Alertmanager intake: ``POST /api/v1/alertmanager`` turns webhook notifications into
incidents through the same response path as the watch rules.

One request, in order: the credential (`intake_auth.IntakeAuth`; 401 without it), the body
(at most ``max_body`` bytes, 413 beyond; Alertmanager's payload version 4, 400 otherwise, one
sentence; at most ``max_alerts`` alerts, 413 beyond), then `Intake.receive`:

1. every alert is stored durably in ``intake_alerts`` (unique on fingerprint + startsAt +
   status: a repeat or an HA peer's copy adds nothing) — `intake_rows.store_batch`;
2. those not booked yet become `Transition`s (firing: first seen; resolved: from firing) handed
   to the responder's ``accept`` — the bookkeeping a watch cycle runs: a firing alert opens or
   joins its service's incident with its generator URL in the timeline's details, a resolved
   one resolves its alert, and the incident follows the watch's resolution logic (mitigated when
   no alert of it fires, resolved after ``resolve_after`` of health);
3. they are marked booked, and only then the answer is 200 (a firing alert a crisisctl silence
   keeps from its incident stays to book: each repeat of it looks again, so it opens its
   incident at the first repeat after the silence ends).

Any storage failure answers 503 (Alertmanager retries; nothing stored is lost, an unfinished
booking is redone on the retry). `intake_routes` gives the routes (plus ``GET /healthz``) for
any Starlette or FastAPI app to mount; `intake_app` wraps them in a Starlette app. Credentials
and request headers are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from crisisctl.incidents.db import Database, StoreError, utcnow
from crisisctl.severity import Severity
from crisisctl.watch.amwebhook import PayloadError, WebhookPayload, parse_payload, received_alerts
from crisisctl.watch.amwebhook import to_alert as alert_of
from crisisctl.watch.intake_auth import IntakeAuth
from crisisctl.watch.intake_rows import mark_processed, silenced, store_batch
from crisisctl.watch.model import AlertState, Transition

__all__ = ["INTAKE_PATH", "AlertSink", "Intake", "IntakeResult", "intake_app", "intake_routes"]

INTAKE_PATH: Final = "/api/v1/alertmanager"
log = logging.getLogger("crisisctl.watch.intake")


class AlertSink(Protocol):
    """Where booked transitions go (`respond.WatchResponder` is one)."""

    async def accept(self, transitions: Sequence[Transition], now: datetime) -> None:
        """Record them durably or raise StoreError."""
        ...


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What one notification did: alerts in it, how many were booked now, and how many of
    its group Alertmanager left out (``truncatedAlerts``)."""

    received: int
    booked: int
    truncated: int = 0


class Intake:
    """Stores and books Alertmanager notifications (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        sink: AlertSink,
        *,
        default_severity: Severity = Severity.P2,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.sink = sink
        self.default_severity = default_severity
        self.clock = clock
        # one notification at a time: the copies an HA pair sends at once are then booked
        # once (the second finds the first's rows done), not raced into two timeline entries
        self._lock = asyncio.Lock()

    async def receive(self, payload: WebhookPayload) -> IntakeResult:
        """Store, book and mark every alert of `payload`; StoreError when the store failed."""
        async with self._lock:
            return await self._receive(payload)

    async def _receive(self, payload: WebhookPayload) -> IntakeResult:
        items = received_alerts(payload)
        now = self.clock()
        todo = await asyncio.to_thread(store_batch, self.db, items, now)
        transitions = []
        for item in todo:
            alert = alert_of(item, self.default_severity, now)
            previous = AlertState.FIRING if alert.state is AlertState.RESOLVED else None
            transitions.append(Transition(alert, previous, now))
        if transitions:
            await self.sink.accept(transitions, now)
        prints = [t.alert.fingerprint for t in transitions if t.alert.state is AlertState.FIRING]
        muted = await asyncio.to_thread(silenced, self.db, prints)
        done = [
            item.dedup_key
            for item, change in zip(todo, transitions, strict=True)
            if change.alert.fingerprint not in muted
        ]
        await asyncio.to_thread(mark_processed, self.db, done, now)
        if payload.truncated_alerts:
            log.warning(
                "alertmanager intake: a notification to receiver %r left out %d alerts of its "
                "group (the webhook's max_alerts): raise max_alerts in Alertmanager's "
                "webhook_configs (and intake.max_alerts) to receive them",
                payload.receiver[:200],
                payload.truncated_alerts,
            )
        return IntakeResult(
            received=len(payload.alerts), booked=len(todo), truncated=payload.truncated_alerts
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def intake_routes(
    intake: Intake,
    auth: IntakeAuth,
    *,
    max_body: int = 1024 * 1024,
    max_alerts: int = 1000,
    path: str = INTAKE_PATH,
) -> list[BaseRoute]:
    """The intake's routes: ``POST path`` and ``GET /healthz`` (mountable unchanged)."""

    async def receive(request: Request) -> Response:
        if not auth.allows(request.headers.get("authorization")):
            response = _error(
                401,
                "this intake needs Alertmanager's credential: set http_config.authorization "
                "(credentials_file) or basic_auth in the webhook receiver.",
            )
            response.headers["WWW-Authenticate"] = (
                'Basic realm="crisisctl"' if auth.basic is not None else "Bearer"
            )
            return response
        try:
            body = await _read_body(request, max_body)
        except _TooLarge:
            return _error(
                413,
                f"the body is over {max_body} bytes: lower max_alerts in Alertmanager's "
                "webhook_configs or raise intake.max_body in the watch file.",
            )
        try:
            payload = parse_payload(body)
        except PayloadError as exc:
            return _error(400, str(exc))
        if len(payload.alerts) > max_alerts:
            return _error(
                413,
                f"the notification holds {len(payload.alerts)} alerts, over {max_alerts}: set "
                "max_alerts in Alertmanager's webhook_configs or raise intake.max_alerts.",
            )
        try:
            result = await intake.receive(payload)
        except StoreError as exc:
            log.error("alertmanager intake: the incident store failed: %s", exc)
            return _error(503, "the incident store failed; nothing was lost, retry later.")
        except Exception:  # a bug: answer 500 so Alertmanager retries; say so loudly
            log.exception("alertmanager intake: booking a notification failed")
            return _error(500, "the intake failed to book the notification; retry later.")
        return JSONResponse(
            {"received": result.received, "booked": result.booked, "truncated": result.truncated}
        )

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route(path, receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]


def intake_app(
    intake: Intake, auth: IntakeAuth, *, max_body: int = 1024 * 1024, max_alerts: int = 1000
) -> Starlette:
    """A Starlette app serving `intake_routes` alone (what ``watch --listen`` runs)."""
    return Starlette(routes=intake_routes(intake, auth, max_body=max_body, max_alerts=max_alerts))
