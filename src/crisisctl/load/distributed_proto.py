"""What coordinator and workers of a distributed run share through Redis: keys, messages,
the Redis clock, and a Redis URL that never shows its password.

Keys (all under ``crisisctl:dist:``, in the database of the URL):

- ``workers`` (sorted set) and ``worker:<id>`` (JSON, expires `HEARTBEAT_TTL_MS` after the
  worker's last heartbeat): who is there, idle or busy; a worker whose key expired is gone.
- ``worker:<id>:claim``: the run that claimed the worker (SET NX: one coordinator per worker).
- ``worker:<id>:inbox`` (list): the assignment (run id, share, scenario), popped by the
  worker; it expires after `INBOX_TTL_S` so an assignment nobody read does not stay.
- ``run:<run>:events`` (stream): every worker's messages, in order — accepted, ready, one
  tick per second (its histogram), done (its result with histograms) or error.
- ``run:<run>:go:<index>`` (list): the start instant on the Redis clock, one per worker.
- ``run:<run>:halt``: set when the run must stop (abort, Ctrl-C, error).
- ``run:<run>:alive``: the coordinator's heartbeat; a worker whose coordinator is gone stops.

Every run key is deleted by the coordinator at the end and expires on its own otherwise.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from crisisctl.load.distributed_shares import ClockSample, estimate_offset

__all__ = [
    "HEARTBEAT_S",
    "HEARTBEAT_TTL_MS",
    "INBOX_TTL_S",
    "Keys",
    "connect",
    "decode",
    "decode_assignment",
    "encode",
    "measure_offset",
    "redact_url",
]

#: a worker's heartbeat period, and how long its registration lives without one
HEARTBEAT_S = 0.5
HEARTBEAT_TTL_MS = 2000
#: an unread assignment (it carries the scenario's headers) expires this soon
INBOX_TTL_S = 30
#: every run key expires this long after the run's limit, even if the coordinator died
RUN_TTL_PAD_S = 60
PREFIX = "crisisctl:dist:"


class Keys:
    """The key names of one worker or one run."""

    workers = PREFIX + "workers"

    @staticmethod
    def worker(worker: str) -> str:
        return f"{PREFIX}worker:{worker}"

    @staticmethod
    def claim(worker: str) -> str:
        return f"{PREFIX}worker:{worker}:claim"

    @staticmethod
    def inbox(worker: str) -> str:
        return f"{PREFIX}worker:{worker}:inbox"

    @staticmethod
    def events(run: str) -> str:
        return f"{PREFIX}run:{run}:events"

    @staticmethod
    def go(run: str, index: int) -> str:
        return f"{PREFIX}run:{run}:go:{index}"

    @staticmethod
    def halt(run: str) -> str:
        return f"{PREFIX}run:{run}:halt"

    @staticmethod
    def alive(run: str) -> str:
        return f"{PREFIX}run:{run}:alive"


def redact_url(url: str) -> str:
    """`url` with its password (and a lone user name used as one) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    user = parts.username if parts.password is not None else None
    netloc = f"{user}:***@{netloc}" if user else f"***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def connect(url: str, what: str) -> redis.Redis:
    """A client for `url`, pinged; ValueError (one sentence, password redacted) otherwise."""
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise ValueError(f"{what} must be a redis:// or rediss:// URL, not {redact_url(url)!r}.")
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=5.0, health_check_interval=0
        )
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        kind = type(exc).__name__
        raise ValueError(
            f"could not reach Redis at {redact_url(url)} ({kind}); check {what} and that the "
            "server is running and reachable."
        ) from None
    return client


def server_time(client: redis.Redis) -> float:
    """The Redis server's clock, in seconds."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def measure_offset(client: redis.Redis, samples: int = 7) -> tuple[float, float]:
    """(offset, uncertainty) of the Redis clock minus this host's monotonic clock."""
    taken = []
    for _ in range(samples):
        sent = time.monotonic()
        server = server_time(client)
        taken.append(ClockSample(sent, server, time.monotonic()))
    return estimate_offset(taken)


def encode(kind: str, index: int, **data: Any) -> dict[str, str]:
    """A stream entry: its kind, the worker's index and a JSON body."""
    return {"kind": kind, "index": str(index), "data": json.dumps(data, separators=(",", ":"))}


def decode(fields: dict[bytes, bytes]) -> tuple[str, int, dict[str, Any]]:
    """Inverse of `encode`; ValueError on a foreign entry."""
    try:
        kind = fields[b"kind"].decode()
        index = int(fields[b"index"])
        data = json.loads(fields[b"data"])
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"a stream entry that is not a worker message ({exc!r}).") from None
    if not isinstance(data, dict):
        raise ValueError("a stream entry whose body is not an object.")
    return kind, index, data


def decode_assignment(raw: bytes) -> dict[str, Any]:
    """A worker's assignment (run, index, count, scenario); ValueError on anything else."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        for key in ("run", "index", "count", "scenario"):
            data[key]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"an assignment this worker cannot read ({exc!r}).") from None
    return data
