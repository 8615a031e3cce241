"""The packed form both windows are stored in: a header (format version, number of events),
then each column's 64-bit items, little-endian; a terminal's early labels (format 2) follow
their count."""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any, Final

__all__ = ["COUNT", "EARLY_VERSION", "FORMAT_VERSION", "HEADER", "from_le", "to_le", "unpack"]

FORMAT_VERSION: Final = 1
EARLY_VERSION: Final = 2  # a terminal window with labels waiting for their payments
HEADER = struct.Struct("<BI")  # format version, number of events
COUNT = struct.Struct("<I")
_LITTLE: Final = sys.byteorder == "little"


def to_le(values: array[Any]) -> bytes:
    """The array's items as little-endian bytes (a copy of its memory on most machines)."""
    if _LITTLE:
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def from_le(typecode: str, raw: bytes, start: int, count: int) -> array[Any]:
    """``count`` little-endian 8-byte items of ``raw`` from ``start``, as an array."""
    values = array(typecode)
    values.frombytes(raw[start : start + 8 * count])
    if not _LITTLE:
        values.byteswap()
    return values


def unpack(raw: bytes, width: int, early: bool = False) -> tuple[int, int, int]:
    """Events and early labels in a packed state, checking the version and the length;
    early labels (24 bytes each) only where ``early`` allows them (terminal windows)."""
    if len(raw) < HEADER.size:
        raise ValueError("window state too short")
    version, count = HEADER.unpack_from(raw)
    size = HEADER.size + count * width
    if version == FORMAT_VERSION and len(raw) == size:
        return count, 0, HEADER.size
    if early and version == EARLY_VERSION and len(raw) >= size + COUNT.size:
        (waiting,) = COUNT.unpack_from(raw, size)
        if len(raw) == size + COUNT.size + 24 * waiting:
            return count, waiting, HEADER.size
    raise ValueError(f"not a version {FORMAT_VERSION} window state of {width}-byte events")
