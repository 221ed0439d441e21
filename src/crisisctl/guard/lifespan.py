"""The guard's part in the ASGI lifespan: at startup its background ticker starts (and, with
Redis storage, the instance takes the fleet's mode before serving); at shutdown the ticker
stops and the storage's connection closes. The app's own lifespan runs unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crisisctl.guard.types import Message, Receive

if TYPE_CHECKING:
    from crisisctl.guard.middleware import Guard


def lifespan_receive(guard: Guard, receive: Receive) -> Receive:
    """The `receive` the app's lifespan gets: `receive`, watched for startup and shutdown."""

    async def wrapped() -> Message:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            guard._start_ticker()
            if guard.fleet is not None:
                await guard.fleet.ready()  # serve in the fleet's mode from the start
        elif message.get("type") == "lifespan.shutdown":
            await guard.aclose()
        return message

    return wrapped
