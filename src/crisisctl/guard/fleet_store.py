"""The fleet's state in Redis: its keys, the Lua scripts that change them, the record format.

Keys and channel (T = ``{P:fleet}`` with P the guard's `storage_prefix`; one hash tag, so one
Redis Cluster slot, and every script below runs on a cluster too):

    T:mode        JSON of the switch in force: switch_id, mode, previous, actor, reason,
                  source, at_us (the Redis server's clock, µs since the epoch)
    T:seq         the last switch id (INCR: ids are the fleet's order of switches)
    T:history     the last HISTORY_LEN switches as JSON, newest first
    T:instances   sorted set: instance id (host:pid:random) -> server time (ms) of its heartbeat
    T:applied     hash: instance id -> id of the switch that instance has applied
    T:switches    pub/sub channel: a switch's JSON, published once it is stored

A record is JSON; `at_us` is a string (Lua's cjson would print 16 digits as 1.7e+15).
guard/fleet.py runs the protocol on top of this.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from crisisctl.guard.modes import MODES, ModeChange, utc_iso

__all__ = [
    "BEAT_SCRIPT",
    "CONFIRM_SCRIPT",
    "SWITCH_SCRIPT",
    "FleetKeys",
    "as_text",
    "fleet_keys",
    "instance_id",
    "parse_record",
]

log = logging.getLogger("crisisctl.guard")

# Store one switch. KEYS: mode, seq, history, instances, applied.
# ARGV: mode, actor, reason, source, expect (-1: store whatever is in force), history length,
# instance id. With expect ≥ 0 nothing is written unless the switch in force has that id.
# Returns {1, record} when stored, {0, record in force or ''} when not.
SWITCH_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local raw = redis.call('GET', KEYS[1])
local current_id, previous = 0, 'normal'
if raw then
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' then
    current_id = tonumber(rec.switch_id) or 0
    previous = rec.mode or 'normal'
  end
end
local expect = tonumber(ARGV[5])
if expect >= 0 and current_id ~= expect then return {0, raw or ''} end
local id = redis.call('INCR', KEYS[2])
if id <= current_id then
  id = current_id + 1
  redis.call('SET', KEYS[2], id)
end
local record = cjson.encode({switch_id = id, mode = ARGV[1], previous = previous,
  actor = ARGV[2], reason = ARGV[3], source = ARGV[4], at_us = string.format('%d', now_us)})
redis.call('SET', KEYS[1], record)
redis.call('LPUSH', KEYS[3], record)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('ZADD', KEYS[4], math.floor(now_us / 1000), ARGV[7])
redis.call('HSET', KEYS[5], ARGV[7], id)
return {1, record}
"""

# Heartbeat and re-read. KEYS: mode, history, instances, applied.
# ARGV: instance id, id of the switch it has applied, ttl ms, send history (0/1), history length.
# Prunes instances silent for ttl. The history comes along when asked or when the record is
# newer than the instance's switch (it is behind and will adopt it).
# Returns {record or '', server time µs, live instances, history (newest first)}.
BEAT_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now_ms - tonumber(ARGV[3])))
for i = 1, #stale do
  redis.call('ZREM', KEYS[3], stale[i])
  redis.call('HDEL', KEYS[4], stale[i])
end
local live = redis.call('ZCARD', KEYS[3])
local raw = redis.call('GET', KEYS[1])
local want = ARGV[4] == '1'
if raw and not want then
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and (tonumber(rec.switch_id) or 0) > tonumber(ARGV[2]) then
    want = true
  end
end
local history = {}
if want then history = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[5]) - 1) end
return {raw or '', string.format('%d', now_us), live, history}
"""

# How many live instances have applied a switch. KEYS: instances, applied.
# ARGV: switch id, ttl ms. Returns {confirmed, live}.
CONFIRM_SCRIPT = """
local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now_ms - tonumber(ARGV[2]), '+inf')
local confirmed = 0
for i = 1, #live do
  local applied = tonumber(redis.call('HGET', KEYS[2], live[i]))
  if applied and applied >= tonumber(ARGV[1]) then confirmed = confirmed + 1 end
end
return {confirmed, #live}
"""


@dataclass(frozen=True, slots=True)
class FleetKeys:
    """The Redis keys and channel of one fleet (see the module docstring)."""

    mode: str
    seq: str
    history: str
    instances: str
    applied: str
    channel: str


def fleet_keys(prefix: str) -> FleetKeys:
    """The keys of the fleet under `prefix`, all with the hash tag ``{prefix:fleet}``."""
    tag = f"{{{prefix}:fleet}}"
    return FleetKeys(
        mode=f"{tag}:mode",
        seq=f"{tag}:seq",
        history=f"{tag}:history",
        instances=f"{tag}:instances",
        applied=f"{tag}:applied",
        channel=f"{tag}:switches",
    )


def instance_id() -> str:
    """This process's name in the fleet: host:pid:random (unique across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_record(raw: Any) -> tuple[ModeChange, int] | None:
    """(switch, at_us) from a stored record's JSON; None for an empty or unusable record."""
    raw_text = as_text(raw) if raw is not None else ""
    if not raw_text:
        return None
    try:
        data = json.loads(raw_text)
        at_us = int(str(data["at_us"]))
        change = ModeChange(
            at=utc_iso(at_us / 1_000_000),
            previous=str(data.get("previous") or "normal"),
            mode=str(data["mode"]),
            actor=str(data.get("actor") or "unknown"),
            reason=str(data.get("reason") or ""),
            source=str(data.get("source") or "fleet"),
            switch_id=int(data["switch_id"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable fleet mode record: %.200s", raw_text)
        return None
    if change.mode not in MODES or change.switch_id <= 0:
        log.warning("ignoring a fleet mode record with mode %r", change.mode)
        return None
    return change, at_us
