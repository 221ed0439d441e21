"""The guard's part in the ASGI lifespan: at startup its background ticker starts (and, with
Redis storage, the instance takes the fleet's mode before serving); at shutdown the ticker
stops and the storage's connection closes. The app's own lifespan runs unchanged.

At startup, with a memory budget, the in-process cache's sweep of expired entries joins the
budget's cleanup hooks (guard/policy_set.py `drop_expired`). The guard's operation quotas
(guard/operations.py), when it has any, go into the lifespan state, which servers copy into
every request's scope: the app reaches them with ``operations_of(request)`` (or
``request.state.crisisctl_operations``) without importing the guard instance; so does its
memory policy (``memory_of(request)``, guard/periodic.py: periodic cleanup hooks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crisisctl.guard.types import Message, Receive, Scope

if TYPE_CHECKING:
    from crisisctl.guard.middleware import Guard

#: = guard/operations.py OPERATIONS_STATE_KEY (not imported: this module stays light)
OPERATIONS_STATE_KEY = "crisisctl_operations"
#: = guard/periodic.py MEMORY_STATE_KEY
MEMORY_STATE_KEY = "crisisctl_memory"


def lifespan_receive(guard: Guard, receive: Receive, scope: Scope | None = None) -> Receive:
    """The `receive` the app's lifespan gets: `receive`, watched for startup and shutdown."""

    async def wrapped() -> Message:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            state = scope.get("state") if scope is not None else None
            if isinstance(state, dict):
                if guard.operations is not None:
                    state[OPERATIONS_STATE_KEY] = guard.operations
                state[MEMORY_STATE_KEY] = guard.memory
            if guard.policy_set is not None and guard.memory.config.enabled:
                guard.policy_set.add_memory_hooks(guard.memory)
            guard._start_ticker()
            if guard.fleet is not None:
                await guard.fleet.ready()  # serve in the fleet's mode from the start
        elif message.get("type") == "lifespan.shutdown":
            await guard.aclose()
        return message

    return wrapped
