"""Features kept per terminal until the transaction's label arrives, for the online learner.

A transaction is scored on the partition that owns its terminal; its label arrives days later
on the same partition (labels are routed by terminal too). :class:`PendingFeatures` keeps the
features that were scored, by transaction id, so the label can be joined to exactly what the
model saw, with the notes of its scoring (:meth:`PendingFeatures.note`: customer, ONNX,
River and served score) from which the learner stage measures live quality. Entries expire
``ttl_ms`` after the newest transaction of the terminal (a label that never comes must not
keep state forever). The state is packed arrays, one value per terminal, written once per
batch.

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

__all__ = ["NOTES", "PendingFeatures"]

_HEADER = struct.Struct("<BII")  # format version, entries, features per entry
_VERSION = 2  # 1: without notes (read as unknown)
NOTES = 4  # customer id, ONNX score, River score, served score
_UNKNOWN = (math.nan,) * NOTES


class PendingFeatures:
    """``tx_id -> (tx_time_ms, features, notes)`` for one terminal, oldest first.

    Entries are tuples of numbers, which Python's garbage collector stops tracking: a worker
    keeps every terminal's entries in memory, and lists there made each full collection
    walk hundreds of thousands of objects (pauses of 100-500 ms).
    """

    __slots__ = ("entries", "oldest")

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, tuple[float, ...], tuple[float, ...]]] = {}
        self.oldest: int | None = None  # no entry is older (a bound: removals leave it)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, tx_id: int, tx_time_ms: int, features: Sequence[float]) -> None:
        self.entries[tx_id] = (tx_time_ms, tuple(features), _UNKNOWN)
        if self.oldest is None or tx_time_ms < self.oldest:
            self.oldest = tx_time_ms

    def note(self, tx_id: int, notes: Sequence[float]) -> None:
        """Keep :data:`NOTES` numbers with ``tx_id``'s features (ignored if it is unknown)."""
        entry = self.entries.get(tx_id)
        if entry is not None:
            self.entries[tx_id] = (entry[0], entry[1], tuple(float(v) for v in notes))

    def take(self, tx_id: int) -> tuple[int, list[float], list[float]] | None:
        """``(tx_time_ms, features, notes)`` of ``tx_id`` (removed); notes are NaN if unset."""
        entry = self.entries.pop(tx_id, None)
        return None if entry is None else (entry[0], list(entry[1]), list(entry[2]))

    def pop(self, tx_id: int) -> list[float] | None:
        """The features of ``tx_id`` (removed), or ``None`` if unknown or expired."""
        entry = self.entries.pop(tx_id, None)
        return None if entry is None else list(entry[1])

    def expire(self, now_ms: int, ttl_ms: int) -> int:
        """Drop entries older than ``now_ms - ttl_ms``; returns how many were dropped."""
        cutoff = now_ms - ttl_ms
        if self.oldest is None or self.oldest >= cutoff:
            return 0  # the usual case: nothing that old (no scan)
        old = [tx for tx, (t, _, _) in self.entries.items() if t < cutoff]
        for tx in old:
            del self.entries[tx]
        self.oldest = min((t for t, _, _ in self.entries.values()), default=None)
        return len(old)

    def to_bytes(self) -> bytes:
        # struct, not numpy: a terminal holds a handful of entries, and numpy's per-call cost
        # was most of the scorer's state time.
        n = len(self.entries)
        if not n:
            return _HEADER.pack(_VERSION, 0, 0)
        values = self.entries.values()
        width = len(next(iter(values))[1])
        flat: list[float] = []
        for _, features, _ in values:
            if len(features) != width:
                raise ValueError(f"entries of {len(features)} and {width} features")
            flat += features
        for _, _, notes in values:
            flat += notes
        body = struct.pack(
            f"<{n}q{n}q{n * (width + NOTES)}d",
            *self.entries.keys(),
            *(e[0] for e in values),
            *flat,
        )
        return _HEADER.pack(_VERSION, n, width) + body

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> PendingFeatures:
        """Restore :meth:`to_bytes`; ``None`` or another format version is empty state."""
        pending = cls()
        if not raw or len(raw) < _HEADER.size:
            return pending
        version, n, width = _HEADER.unpack_from(raw)
        if version not in (1, _VERSION) or not n:
            return pending
        notes_n = NOTES if version == _VERSION else 0
        values = struct.unpack_from(f"<{n}q{n}q{n * (width + notes_n)}d", raw, _HEADER.size)
        ids, times = values[:n], values[n : 2 * n]
        at = 2 * n
        rows = [values[at + i * width : at + (i + 1) * width] for i in range(n)]
        if notes_n:
            at += n * width
            notes = [values[at + i * NOTES : at + (i + 1) * NOTES] for i in range(n)]
        else:
            notes = [_UNKNOWN] * n
        pending.entries = dict(zip(ids, zip(times, rows, notes, strict=True), strict=True))
        pending.oldest = min(times)
        return pending
