"""The series store's state file: a store snapshot as compact binary, and back.

Version 2 (written): a header, then a zlib stream (level 1: fast; the regular times and
repeated values make it about 2½ times smaller) of each series' key and its tiers' raw
columns, all little-endian::

    b"CRISISCTL-WATCH\\0"  version u16  saved_at f64  series u32  then, compressed:
    per series:  key_len u32  key (UTF-8 JSON: [name, [[label, value], ...]])
                 offset f64  has_raw_last u8  raw_last f64  tiers u8
    per tier:    step f64  base f64  points u32  means u8
                 times (u32 × points)  last (f64 × points)
                 [mean (f32 × points)  count (u16 × points)]   when means is 1

Version 1 (read only): the JSON document earlier versions wrote to ``watch-state.json``
(``{"saved_at", "store": {"version": 1, "series": [...]}}``, arrays as base64 of float64
times and values, float32 means and uint16 counts); its series are converted on restore.

Anything else is refused with `StateFileError` (one sentence saying what the file is not).
`pack` and `unpack` are pure and may run in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Mapping
from typing import Any, Final

from crisisctl.watch.model import SeriesKey
from crisisctl.watch.store import SavedSeries, SavedTier

__all__ = ["MAGIC", "VERSION", "StateFileError", "encode_json", "pack", "unpack"]

MAGIC: Final = b"CRISISCTL-WATCH\x00"
VERSION: Final = 2
_HEADER = struct.Struct("<16sHdI")
_SERIES = struct.Struct("<dBdB")
_TIER = struct.Struct("<ddIB")
_LITTLE: Final = sys.byteorder == "little"


class StateFileError(ValueError):
    """The state file is not one this version can read."""


def _bytes(column: array[Any]) -> bytes:
    if _LITTLE:
        return column.tobytes()
    copy = array(column.typecode, column)
    copy.byteswap()
    return copy.tobytes()


def _column(typecode: str, data: bytes) -> array[Any]:
    column = array(typecode)
    column.frombytes(data)
    if not _LITTLE:
        column.byteswap()
    return column


def pack(saved: list[SavedSeries], saved_at: float) -> bytes:
    """A snapshot as version-2 bytes."""
    parts: list[bytes] = []
    for one in saved:
        key = json.dumps([one.key.name, [list(p) for p in one.key.labels]]).encode()
        parts.append(struct.pack("<I", len(key)))
        parts.append(key)
        raw_last = one.raw_last
        parts.append(
            _SERIES.pack(one.offset, raw_last is not None, raw_last or 0.0, len(one.tiers))
        )
        for step, base, columns in one.tiers:
            points = len(columns[0]) if columns else 0
            parts.append(_TIER.pack(step, base, points, len(columns) == 4))
            parts.extend(_bytes(c) for c in columns)
    body = zlib.compress(b"".join(parts), 1)
    return _HEADER.pack(MAGIC, VERSION, saved_at, len(saved)) + body


def _unpack_v2(data: bytes) -> tuple[list[SavedSeries], float]:
    _, _, saved_at, count = _HEADER.unpack_from(data, 0)
    data = zlib.decompress(data[_HEADER.size :])
    at = 0
    out = []
    for _ in range(count):
        (key_len,) = struct.unpack_from("<I", data, at)
        at += 4
        name, labels = json.loads(data[at : at + key_len])
        at += key_len
        offset, has_last, raw_last, tiers = _SERIES.unpack_from(data, at)
        at += _SERIES.size
        saved_tiers = []
        for _ in range(tiers):
            step, base, points, means = _TIER.unpack_from(data, at)
            at += _TIER.size
            widths = (("I", 4), ("d", 8), ("f", 4), ("H", 2)) if means else (("I", 4), ("d", 8))
            columns = []
            for typecode, width in widths:
                end = at + width * points
                if end > len(data):
                    raise struct.error("truncated")
                columns.append(_column(typecode, data[at:end]))
                at = end
            saved_tiers.append(SavedTier(step, base, tuple(columns)))
        key = SeriesKey(str(name), tuple((str(k), str(v)) for k, v in labels))
        out.append(SavedSeries(key, offset, raw_last if has_last else None, saved_tiers))
    return out, saved_at


def _v1_tier(step: float, columns: list[str]) -> SavedTier:
    times = _column("d", base64.b64decode(columns[0]))
    last = _column("d", base64.b64decode(columns[1]))
    if step:
        stamps = array("I", (int(t // step) for t in times))
        base = 0.0
    else:
        base = float(math.floor(times[0])) if times else 0.0
        stamps = array("I", (round((t - base) * 1000.0) for t in times))
    if step and len(columns) == 4:
        mean = _column("f", base64.b64decode(columns[2]))
        count = _column("H", base64.b64decode(columns[3]))
        return SavedTier(step, base, (stamps, last, mean, count))
    return SavedTier(step, base, (stamps, last))


def _unpack_v1(document: Mapping[str, Any]) -> tuple[list[SavedSeries], float]:
    store = document.get("store") or {}
    if store.get("version") != 1:
        raise StateFileError("its series store is not version 1 or 2")
    out = []
    for name, labels, tiers, *counter in store.get("series", []):
        key = SeriesKey(str(name), tuple((str(k), str(v)) for k, v in labels))
        offset, raw_last = (float(counter[0][0]), counter[0][1]) if counter else (0.0, None)
        saved = [_v1_tier(float(step), list(columns)) for step, *columns in tiers]
        out.append(SavedSeries(key, offset, raw_last, saved))
    return out, float(document.get("saved_at") or 0.0)


def unpack(data: bytes) -> tuple[list[SavedSeries], float]:
    """The series and save time of a version-2 (or version-1 JSON) state file."""
    try:
        if data.startswith(MAGIC):
            (version,) = struct.unpack_from("<H", data, len(MAGIC))
            if version != VERSION:
                raise StateFileError(
                    f"it is version {version} of the state file and this crisisctl reads "
                    f"versions 1 and {VERSION}"
                )
            return _unpack_v2(data)
        if data.lstrip().startswith(b"{"):
            document = json.loads(data)
            if isinstance(document, dict):
                return _unpack_v1(document)
    except StateFileError:
        raise
    except (
        struct.error,
        zlib.error,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        binascii.Error,
    ) as exc:
        raise StateFileError(f"it is damaged ({type(exc).__name__}: {exc})") from None
    raise StateFileError("it is not a crisisctl watch state file")


def encode_json(document: Mapping[str, Any]) -> bytes:
    """A small document (the alerts) as compact JSON bytes."""
    return json.dumps(document, separators=(",", ":")).encode()
