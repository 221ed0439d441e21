"""Deliver a watch notification through apprise, retried with backoff, off the event loop.

apprise is synchronous, so each attempt runs in a worker thread (`asyncio.to_thread`); between
attempts the coroutine sleeps (0.5 s, 1 s, 2 s, … capped at 30 s by default). The outcome says
how many attempts it took and the last error, for the incident's timeline; the URLs themselves
(which often carry tokens: Slack, Telegram, …) never appear in it, only their schemes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass

from crisisctl.incidents.db import StoreError
from crisisctl.incidents.notify import Message, deliver

MAX_BACKOFF_S = 30.0


class NotifyConfigError(ValueError):
    """A notification URL cannot be used (an ``env:NAME`` that is not set); one sentence."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one notification went: delivered or not, after how many attempts, the last error."""

    ok: bool
    attempts: int
    error: str | None
    schemes: tuple[str, ...]


def resolve_urls(urls: Sequence[str]) -> list[str]:
    """The URLs with every ``env:NAME`` replaced by that variable's value."""
    resolved = []
    for url in urls:
        if url.startswith("env:"):
            name = url[4:].strip()
            value = os.environ.get(name, "").strip()
            if not value:
                raise NotifyConfigError(
                    f"the notification URL env:{name} names an unset variable: export {name} "
                    "or remove it from notify.urls."
                )
            resolved.append(value)
        else:
            resolved.append(url)
    return resolved


def schemes(urls: Sequence[str]) -> tuple[str, ...]:
    """Each URL's scheme only (``json``, ``slack``, …): what a timeline may show of them."""
    return tuple(url.split("://", 1)[0] if "://" in url else "?" for url in urls)


async def send(
    message: Message, urls: Sequence[str], *, retries: int, backoff_s: float = 0.5
) -> Delivery:
    """Deliver `message` to every URL, trying `retries` more times on failure."""
    error: str | None = None
    attempts = 0
    for attempt in range(retries + 1):
        attempts = attempt + 1
        try:
            await asyncio.to_thread(deliver, message, list(urls))
        except StoreError as exc:
            error = str(exc)
        except Exception as exc:  # apprise plugins raise anything: keep the loop alive
            error = f"{exc.__class__.__name__}: {exc}"
        else:
            return Delivery(True, attempts, None, schemes(urls))
        if attempt < retries:
            await asyncio.sleep(min(backoff_s * 2**attempt, MAX_BACKOFF_S))
    return Delivery(False, attempts, error, schemes(urls))


__all__ = ["Delivery", "NotifyConfigError", "resolve_urls", "schemes", "send"]
