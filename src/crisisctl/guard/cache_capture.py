"""The origin side of the response cache: one origin call's response, passed on and captured.

`ResponseCapture` is the ``send`` the cache layer hands the app on a miss or a background
refresh. It forwards the response to the client (adding ``X-Cache: miss``), or nothing when
there is no client (a background refresh) or when it swallows a 5xx so that the layer can
answer with a stale entry instead. While the response passes it buffers the body, up to the
rule's `max_body_bytes` (past it buffering stops for good and nothing is stored), and when
the last chunk arrives it builds the entry, if RFC 9111 and the rule allow storing it
(cache_policy.response_verdict), and awaits `save(entry)` *before* that last chunk leaves:
whoever reads the answer and asks again, here or on another instance sharing the store,
finds the entry. Stored headers lose the hop-by-hop ones; Content-Length is the body's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from crisisctl.guard.cache_policy import HOP_BY_HOP, StoreVerdict, response_verdict
from crisisctl.guard.cache_store import Entry
from crisisctl.guard.config import CacheRule
from crisisctl.guard.types import Message, Send

__all__ = ["ResponseCapture"]


class ResponseCapture:
    """The send of one origin call: forwards to the client (or not), buffers the body."""

    def __init__(
        self,
        send: Send | None,
        rule: CacheRule,
        swallow_5xx: bool,
        save: Callable[[Entry], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.client_send = send
        self.save = save
        self.clock = clock
        self.rule = rule
        self.swallow_5xx = swallow_5xx
        self.started = False
        self.swallowed = False
        self.complete = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.verdict: StoreVerdict | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.buffering = True

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            if self.swallow_5xx and self.status >= 500:
                self.swallowed = True
                return
            self.verdict = response_verdict(self.status, self.headers, self.rule)
            self.buffering = self.verdict.store
            if self.client_send is not None:
                out = dict(message)
                out["headers"] = [*self.headers, (b"x-cache", b"miss")]
                await self.client_send(out)
            return
        if kind == "http.response.body":
            if self.swallowed:
                return
            body = message.get("body", b"")
            if self.buffering and body:
                self.size += len(body)
                if self.size > self.rule.max_body_bytes:
                    self.buffering = False
                    self.chunks = []
                else:
                    self.chunks.append(bytes(body))
            if not message.get("more_body", False):
                self.complete = True
                entry = self.entry(self.clock())
                if entry is not None:
                    # stored before the last chunk leaves: whoever reads this answer and asks
                    # again (here or on another instance sharing the store) finds the entry
                    await self.save(entry)
            if self.client_send is not None:
                await self.client_send(message)
            return
        if self.client_send is not None and not self.swallowed:
            await self.client_send(message)  # trailers, pathsend, …: passed on as they are

    def entry(self, now: float) -> Entry | None:
        """The response as an entry, when it may be stored and arrived whole."""
        verdict = self.verdict
        if verdict is None or not verdict.store or not self.buffering or not self.complete:
            return None
        body = b"".join(self.chunks)
        headers = [
            (k, v) for k, v in self.headers if k.lower() not in HOP_BY_HOP
        ]  # stored without the hop-by-hop headers; the length is the buffered body's
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        return Entry(
            status=self.status,
            headers=tuple(headers),
            body=body,
            stored_at=now,
            lifetime_s=verdict.lifetime_s,
            initial_age_s=verdict.initial_age_s,
            stale_while_revalidate_s=verdict.stale_while_revalidate_s,
            stale_if_error_s=verdict.stale_if_error_s,
            vary=verdict.vary,
        )
