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

import numpy as np

__all__ = ["NOTES", "PendingFeatures"]

_HEADER = struct.Struct("<BII")  # format version, entries, features per entry
_VERSION = 2  # 1: without notes (read as unknown)
NOTES = 4  # customer id, ONNX score, River score, served score
_UNKNOWN = [math.nan] * NOTES


class PendingFeatures:
    """``tx_id -> (tx_time_ms, features, notes)`` for one terminal, oldest first."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, list[float], list[float]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, tx_id: int, tx_time_ms: int, features: Sequence[float]) -> None:
        self.entries[tx_id] = (tx_time_ms, list(features), _UNKNOWN)

    def note(self, tx_id: int, notes: Sequence[float]) -> None:
        """Keep :data:`NOTES` numbers with ``tx_id``'s features (ignored if it is unknown)."""
        entry = self.entries.get(tx_id)
        if entry is not None:
            self.entries[tx_id] = (entry[0], entry[1], [float(v) for v in notes])

    def take(self, tx_id: int) -> tuple[int, list[float], list[float]] | None:
        """``(tx_time_ms, features, notes)`` of ``tx_id`` (removed); notes are NaN if unset."""
        return self.entries.pop(tx_id, None)

    def pop(self, tx_id: int) -> list[float] | None:
        """The features of ``tx_id`` (removed), or ``None`` if unknown or expired."""
        entry = self.entries.pop(tx_id, None)
        return None if entry is None else entry[1]

    def expire(self, now_ms: int, ttl_ms: int) -> int:
        """Drop entries older than ``now_ms - ttl_ms``; returns how many were dropped."""
        cutoff = now_ms - ttl_ms
        old = [tx for tx, (t, _, _) in self.entries.items() if t < cutoff]
        for tx in old:
            del self.entries[tx]
        return len(old)

    def to_bytes(self) -> bytes:
        n = len(self.entries)
        width = len(next(iter(self.entries.values()))[1]) if n else 0
        ids = np.fromiter(self.entries.keys(), dtype="<i8", count=n)
        times = np.fromiter((e[0] for e in self.entries.values()), dtype="<i8", count=n)
        feats = np.array([e[1] for e in self.entries.values()], dtype="<f8").reshape(n, width)
        notes = np.array([e[2] for e in self.entries.values()], dtype="<f8").reshape(n, NOTES)
        head = _HEADER.pack(_VERSION, n, width)
        return head + ids.tobytes() + times.tobytes() + feats.tobytes() + notes.tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> PendingFeatures:
        """Restore :meth:`to_bytes`; ``None`` or another format version is empty state."""
        pending = cls()
        if not raw or len(raw) < _HEADER.size:
            return pending
        version, n, width = _HEADER.unpack_from(raw)
        if version not in (1, _VERSION):
            return pending
        at = _HEADER.size
        ids = np.frombuffer(raw, dtype="<i8", count=n, offset=at)
        times = np.frombuffer(raw, dtype="<i8", count=n, offset=at + 8 * n)
        feats = np.frombuffer(raw, dtype="<f8", count=n * width, offset=at + 16 * n)
        rows = feats.reshape(n, width).tolist()
        if version == 1:
            notes = [_UNKNOWN] * n
        else:
            at += (16 + 8 * width) * n
            packed = np.frombuffer(raw, dtype="<f8", count=n * NOTES, offset=at)
            notes = packed.reshape(n, NOTES).tolist()
        pending.entries = dict(
            zip(ids.tolist(), zip(times.tolist(), rows, notes, strict=True), strict=True)
        )
        return pending
