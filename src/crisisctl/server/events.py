"""The event hub: one ring buffer of recent events, fanned out to every open stream.

Ids are ``"<epoch>-<seq>"``: `epoch` (milliseconds since 1970 when the hub's history began)
names one unbroken history, `seq` counts its events from 1. A client that resumes from
``Last-Event-ID`` gets every buffered event after its id; it gets a ``reset`` first (and then
only live events) when its id is of another epoch, unreadable, ahead of the hub, or older than
the oldest buffered event (something it missed is gone): the page then refetches snapshots.

Fan-out is cheap: `publish` encodes an event once (JSON and the SSE wire bytes) and appends
that one ``bytes`` to each subscriber's bounded deque, waking it. A subscriber whose deque is
full (`client_queue` events or `client_bytes`) is dropped (its stream ends); a slow client never
blocks the others nor grows memory. On reconnecting it resumes from the buffer like anyone else
(or gets a reset if the buffer moved on). The buffer is bounded in events (`size`) and in bytes
(`max_bytes`, 64 MiB: a thousand services make fleet events of hundreds of KB); an event is held
once (its wire bytes; the JSON is read back out of them).

Restart: `save` writes the buffer, epoch and seq to ``events.json`` in the state dir
(atomically) and `load` restores them. Only a *clean* save (on shutdown) keeps the epoch: after
a crash the newest events may be missing from the last file, so the hub starts a new epoch and
every resuming client gets a reset rather than a silent gap. A periodic snapshot cannot tell
whether events followed it, so the server writes those as unclean (`clean: false`, kept for
inspection), and rewrites the file as unclean as soon as it has restored it: a crash of the
next run is never mistaken for a clean history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crisisctl.watch.store import save_atomic

__all__ = ["EVENTS_FILE", "Event", "EventHub", "Subscriber", "format_id", "parse_event_id"]

EVENTS_FILE: Final = "events.json"
_ID: Final = re.compile(r"(\d{1,19})-(\d{1,19})")
log = logging.getLogger("crisisctl.server.events")


def parse_event_id(text: str | None) -> tuple[int, int] | None:
    """``"<epoch>-<seq>"`` → (epoch, seq); None for anything else (surrounding blanks allowed)."""
    if text is None:
        return None
    match = _ID.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def format_id(epoch: int, seq: int) -> str:
    return f"{epoch}-{seq}"


@dataclass(frozen=True, slots=True)
class Event:
    """One published event: its seq, id, type and SSE wire bytes (encoded once; the JSON data
    is read back out of them, so an event is held once in memory)."""

    seq: int
    id: str
    type: str
    wire: bytes

    @property
    def data(self) -> str:
        """The event's JSON text (the ``data:`` line of its wire bytes)."""
        start = len(self.id) + len(self.type) + len("id: \nevent: \ndata: ")
        return self.wire[start:-2].decode()

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "data": json.loads(self.data)}


def _wire(event_id: str, kind: str, data: str) -> bytes:
    # data is compact JSON: no newline inside, so one data: line is enough
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def _event(seq: int, event_id: str, kind: str, data: str) -> Event:
    return Event(seq, event_id, kind, _wire(event_id, kind, data))


@dataclass(eq=False)
class Subscriber:
    """One open stream's queue of wire chunks, bounded in events and in bytes."""

    limit: int
    max_bytes: int = 8 * 1024 * 1024
    queued_bytes: int = 0
    chunks: deque[bytes] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: dropped (too slow) or the hub closed: the stream ends after what it holds
    closed: bool = False
    dropped: bool = False

    def offer(self, wire: bytes) -> bool:
        """Queue `wire`; False (and closed) when the queue is full."""
        if len(self.chunks) >= self.limit or self.queued_bytes + len(wire) > self.max_bytes:
            self.dropped = self.closed = True
            self.ready.set()
            return False
        self.chunks.append(wire)
        self.queued_bytes += len(wire)
        self.ready.set()
        return True

    def take(self) -> bytes:
        """Everything queued, as one chunk (b"" when empty)."""
        if not self.chunks:
            return b""
        out = b"".join(self.chunks)
        self.chunks.clear()
        self.queued_bytes = 0
        return out

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class EventHub:
    """The ring buffer and the subscribers (all on one event loop)."""

    def __init__(
        self,
        size: int = 1000,
        client_queue: int = 512,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        client_bytes: int = 8 * 1024 * 1024,
        epoch: int | None = None,
    ) -> None:
        self.size = size
        self.client_queue = client_queue
        #: the buffer's byte budget (a fleet of a thousand services makes large fleet events):
        #: beyond it the oldest events leave the buffer early
        self.max_bytes = max_bytes
        self.client_bytes = client_bytes
        self.buffered_bytes = 0
        self.epoch = epoch if epoch is not None else int(time.time() * 1000)
        self.seq = 0
        self.buffer: deque[Event] = deque(maxlen=size)
        self.subscribers: set[Subscriber] = set()
        self.closed = False
        self.dropped = 0
        #: bumped by every publish (periodic saves skip an unchanged hub)
        self.version = 0
        self._saved_version = -1

    @property
    def last_id(self) -> str:
        return format_id(self.epoch, self.seq)

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, kind: str, data: Any) -> Event:
        """Buffer one event and offer it to every subscriber (encoded once)."""
        self.seq += 1
        self.version += 1
        event_id = format_id(self.epoch, self.seq)
        text = json.dumps(data, separators=(",", ":"), default=str)
        event = _event(self.seq, event_id, kind, text)
        self._buffer(event)
        for sub in list(self.subscribers):
            if not sub.offer(event.wire):
                self.subscribers.discard(sub)
                self.dropped += 1
        return event

    def _buffer(self, event: Event) -> None:
        if len(self.buffer) == self.size:
            self.buffered_bytes -= len(self.buffer[0].wire)
        self.buffer.append(event)
        self.buffered_bytes += len(event.wire)
        while self.buffered_bytes > self.max_bytes and len(self.buffer) > 1:
            self.buffered_bytes -= len(self.buffer.popleft().wire)

    def reset_event(self) -> Event:
        """A ``reset`` carrying the current id (not buffered: it consumes no seq)."""
        return _event(self.seq, self.last_id, "reset", "{}")

    # -- reading -------------------------------------------------------------------------------
    def since(self, last_id: str | None) -> tuple[bool, list[Event]]:
        """(reset needed, the buffered events after `last_id`). No id: nothing to replay."""
        if last_id is None or not last_id.strip():
            return False, []
        parsed = parse_event_id(last_id)
        if parsed is None or parsed[0] != self.epoch or parsed[1] > self.seq:
            return True, []
        seq = parsed[1]
        if seq == self.seq:
            return False, []
        oldest = self.buffer[0].seq if self.buffer else self.seq + 1
        if seq < oldest - 1:  # events after `seq` were dropped from the buffer
            return True, []
        start = seq - oldest + 1  # the buffer holds consecutive seqs
        return False, [self.buffer[i] for i in range(start, len(self.buffer))]

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.client_queue, self.client_bytes)
        if self.closed:
            sub.close()
        else:
            self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def close(self) -> None:
        """End every stream (shutdown): each sends what it holds and finishes."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.close()
        self.subscribers.clear()

    # -- persistence ---------------------------------------------------------------------------
    def document(self, *, clean: bool) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "seq": self.seq,
            "clean": clean,
            "saved_at": time.time(),
            "events": [{"seq": e.seq, "type": e.type, "data": e.data} for e in self.buffer],
        }

    def restore(self, document: dict[str, Any]) -> int:
        """Take a saved document's history (same epoch only when it was a clean save);
        returns how many events came back (0 when a new epoch began)."""
        try:
            epoch, seq = int(document["epoch"]), int(document["seq"])
            rows = [(int(r["seq"]), str(r["type"]), str(r["data"])) for r in document["events"]]
        except (KeyError, TypeError, ValueError):
            return 0
        if document.get("clean") is not True or seq < 0:
            return 0
        self.epoch, self.seq = epoch, seq
        self.buffer.clear()
        self.buffered_bytes = 0
        kept = [r for r in rows if r[0] <= seq][-self.size :]
        expected = seq - len(kept) + 1
        if any(row[0] != expected + i for i, row in enumerate(kept)):
            return 0  # not consecutive: keep the epoch and seq, drop the history
        for row_seq, kind, data in kept:
            self._buffer(_event(row_seq, format_id(epoch, row_seq), kind, data))
        return len(self.buffer)

    def save(self, path: Path, *, clean: bool) -> None:
        """Write the hub atomically (blocking: call it in a thread, or at shutdown)."""
        document = self.document(clean=clean)
        save_atomic(path, json.dumps(document, separators=(",", ":")).encode())
        self._saved_version = self.version

    def needs_save(self) -> bool:
        return self.version != self._saved_version

    def load(self, path: Path) -> int:
        """Restore from `path` (missing or unreadable: a fresh epoch)."""
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable event history %s: %s", path, exc)
            return 0
        return self.restore(document) if isinstance(document, dict) else 0


def wire_of(events: Iterable[Event]) -> bytes:
    return b"".join(e.wire for e in events)
