"""Features kept per terminal until the transaction's label arrives, for the online learner.

A transaction is scored on the partition that owns its terminal; its label arrives days later
on the same partition (labels are routed by terminal too). :class:`PendingFeatures` keeps the
features that were scored, by transaction id, so the label can be joined to exactly what the
model saw, with the notes of its scoring (:meth:`PendingFeatures.note`: customer, ONNX,
River and served score) from which the learner stage measures live quality. Entries expire
``ttl_ms`` after the newest transaction of the terminal (a label that never comes must not
keep state forever). Each entry is one packed row (:meth:`PendingFeatures.restore` takes one
back), kept packed in memory too. The worker stores every row under its own transaction id
(a payment adds one record, its label or its expiry one tombstone:
:meth:`PendingFeatures.changes`); formats 1-3 of :meth:`PendingFeatures.to_bytes`, one value
a terminal with all its rows, are what earlier releases stored and are still read.

>>> pending = PendingFeatures()
>>> pending.add(7, 1_000, [1.0, 2.0])
>>> pending.note(7, [48.0, 0.9, 0.4, 0.75])
>>> pending.take(7)
(1000, [1.0, 2.0], [48.0, 0.9, 0.4, 0.75])
>>> pending.pop(7) is None
True
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from functools import cache

__all__ = ["NOTES", "PendingFeatures"]

_HEADER = struct.Struct("<BII")  # format version, entries, features per entry
_VERSION = 3  # 1: columns, without notes (read as unknown); 2: columns with notes; 3: rows
NOTES = 4  # customer id, ONNX score, River score, served score
_UNKNOWN = (math.nan,) * NOTES
_TIME = struct.Struct("<q")  # a row's second field
_NOTES = struct.Struct(f"<{NOTES}d")  # a row's last fields


def _width(row: bytes) -> int:
    """How many features a packed row holds."""
    return (len(row) - 16) // 8 - NOTES


@cache
def _row(width: int) -> struct.Struct:
    """One entry: tx id, tx time (ms), ``width`` features, :data:`NOTES` notes."""
    return struct.Struct(f"<qq{width}d{NOTES}d")


class PendingFeatures:
    """``tx_id -> (tx_time_ms, features, notes)`` for one terminal, oldest first.

    Each entry is held as its packed row (bytes): a worker keeps every terminal's entries in
    memory, a row is about a quarter of the size of the same numbers as Python floats in
    tuples, the garbage collector does not track it, and :meth:`to_bytes` only joins rows.
    """

    __slots__ = ("changed", "oldest", "removed", "rows", "width")

    def __init__(self) -> None:
        self.rows: dict[int, bytes] = {}
        self.width: int | None = None  # features per entry, fixed by the first one
        self.oldest: int | None = None  # no entry is older (a bound: removals leave it)
        self.changed: set[int] = set()  # entries added or noted since :meth:`changes`
        self.removed: set[int] = set()  # entries taken or expired since :meth:`changes`

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, tx_id: int, tx_time_ms: int, features: Sequence[float]) -> None:
        width = self._fit(len(features))
        row = _row(width).pack(tx_id, tx_time_ms, *features, *_UNKNOWN)
        self._keep(tx_id, tx_time_ms, row, changed=True)
        self.removed.discard(tx_id)

    def restore(self, row: bytes, changed: bool = False) -> None:
        """Take back a row that :meth:`changes` handed out; a change itself only if
        ``changed`` (a row read from elsewhere, to be stored again)."""
        tx_id, tx_time_ms = _TIME.unpack_from(row)[0], _TIME.unpack_from(row, 8)[0]
        width = _width(row)
        if len(row) != _row(width).size or width < 0:
            raise ValueError(f"a pending row of {len(row)} bytes")
        self._fit(width)
        self._keep(tx_id, tx_time_ms, row, changed)

    def _fit(self, width: int) -> int:
        """Check an entry's number of features against the others' (the first sets it)."""
        if self.width is None or not self.rows:
            self.width = width
        elif width != self.width:
            raise ValueError(f"entries of {width} and {self.width} features")
        return width

    def _keep(self, tx_id: int, tx_time_ms: int, row: bytes, changed: bool) -> None:
        self.rows[tx_id] = row
        if changed:
            self.changed.add(tx_id)
        if self.oldest is None or tx_time_ms < self.oldest:
            self.oldest = tx_time_ms

    def note(self, tx_id: int, notes: Sequence[float]) -> None:
        """Keep :data:`NOTES` numbers with ``tx_id``'s features (ignored if it is unknown)."""
        row = self.rows.get(tx_id)
        if row is not None:
            self.rows[tx_id] = row[: -_NOTES.size] + _NOTES.pack(*notes)
            self.changed.add(tx_id)

    def get(self, tx_id: int) -> tuple[int, list[float], list[float]] | None:
        """``(tx_time_ms, features, notes)`` of ``tx_id``; notes are NaN if unset."""
        row = self.rows.get(tx_id)
        if row is None:
            return None
        width = _width(row)
        values = _row(width).unpack(row)
        return values[1], list(values[2 : 2 + width]), list(values[2 + width :])

    def take(self, tx_id: int) -> tuple[int, list[float], list[float]] | None:
        """:meth:`get`, and the entry is removed."""
        entry = self.get(tx_id)
        if entry is not None:
            del self.rows[tx_id]
            self.changed.discard(tx_id)
            self.removed.add(tx_id)
        return entry

    def pop(self, tx_id: int) -> list[float] | None:
        """The features of ``tx_id`` (removed), or ``None`` if unknown or expired."""
        entry = self.take(tx_id)
        return None if entry is None else entry[1]

    def expire(self, now_ms: int, ttl_ms: int) -> int:
        """Drop entries older than ``now_ms - ttl_ms``; returns how many were dropped."""
        cutoff = now_ms - ttl_ms
        if self.oldest is None or self.oldest >= cutoff:
            return 0  # the usual case: nothing that old (no scan)
        when = _TIME.unpack_from
        old = [tx for tx, row in self.rows.items() if when(row, 8)[0] < cutoff]
        for tx in old:
            del self.rows[tx]
        self.changed.difference_update(old)
        self.removed.update(old)
        self.oldest = min((when(row, 8)[0] for row in self.rows.values()), default=None)
        return len(old)

    def changes(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        """``(tx_id, row)`` of the entries added or changed and the ids of those removed since
        the last call, which starts the next round."""
        rows = self.rows
        changed = [(tx, rows[tx]) for tx in self.changed]
        removed = list(self.removed)
        self.changed, self.removed = set(), set()
        return changed, removed

    def to_bytes(self) -> bytes:
        if not self.rows:
            return _HEADER.pack(_VERSION, 0, 0)
        return _HEADER.pack(_VERSION, len(self.rows), self.width) + b"".join(self.rows.values())

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> PendingFeatures:
        """Restore :meth:`to_bytes` (or an older format); ``None`` or an unknown format
        version is empty state."""
        pending = cls()
        if not raw or len(raw) < _HEADER.size:
            return pending
        version, n, width = _HEADER.unpack_from(raw)
        if version not in (1, 2, _VERSION) or not n:
            return pending
        pending.width = width
        if version == _VERSION:
            size = _row(width).size
            at = _HEADER.size
            if len(raw) < at + n * size:
                raise ValueError(f"pending features of {len(raw)} bytes for {n} rows")
            for i in range(n):  # values of earlier releases: read once, at migration
                pending.restore(raw[at + i * size : at + (i + 1) * size])
            return pending
        notes_n = NOTES if version == 2 else 0
        values = struct.unpack_from(f"<{n}q{n}q{n * (width + notes_n)}d", raw, _HEADER.size)
        ids, times = values[:n], values[n : 2 * n]
        at = 2 * n
        for i in range(n):
            features = values[at + i * width : at + (i + 1) * width]
            pending.add(ids[i], times[i], features)
            if notes_n:
                start = at + n * width + i * NOTES
                pending.note(ids[i], values[start : start + NOTES])
        pending.changed.clear()  # as read, not changed
        return pending
