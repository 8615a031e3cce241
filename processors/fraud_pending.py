"""Features kept per terminal until the transaction's label arrives, for the online learner.

A transaction is scored on the partition that owns its terminal; its label arrives days later
on the same partition (labels are routed by terminal too). :class:`PendingFeatures` keeps the
features that were scored, by transaction id, so the label can be joined to exactly what the
model saw. Entries expire ``ttl_ms`` after the newest transaction of the terminal (a label
that never comes must not keep state forever). The state is packed arrays, one value per
terminal, written once per batch.

>>> pending = PendingFeatures()
>>> pending.add(7, 1_000, [1.0, 2.0])
>>> pending.pop(7)
[1.0, 2.0]
>>> pending.pop(7) is None
True
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

__all__ = ["PendingFeatures"]

_HEADER = struct.Struct("<BII")  # format version, entries, features per entry
_VERSION = 1


class PendingFeatures:
    """``tx_id -> (tx_time_ms, features)`` for one terminal, oldest first."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, list[float]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, tx_id: int, tx_time_ms: int, features: Sequence[float]) -> None:
        self.entries[tx_id] = (tx_time_ms, list(features))

    def pop(self, tx_id: int) -> list[float] | None:
        """The features of ``tx_id`` (removed), or ``None`` if unknown or expired."""
        entry = self.entries.pop(tx_id, None)
        return None if entry is None else entry[1]

    def expire(self, now_ms: int, ttl_ms: int) -> int:
        """Drop entries older than ``now_ms - ttl_ms``; returns how many were dropped."""
        cutoff = now_ms - ttl_ms
        old = [tx for tx, (t, _) in self.entries.items() if t < cutoff]
        for tx in old:
            del self.entries[tx]
        return len(old)

    def to_bytes(self) -> bytes:
        n = len(self.entries)
        width = len(next(iter(self.entries.values()))[1]) if n else 0
        ids = np.fromiter(self.entries.keys(), dtype="<i8", count=n)
        times = np.fromiter((t for t, _ in self.entries.values()), dtype="<i8", count=n)
        feats = np.array([f for _, f in self.entries.values()], dtype="<f8").reshape(n, width)
        return _HEADER.pack(_VERSION, n, width) + ids.tobytes() + times.tobytes() + feats.tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> PendingFeatures:
        """Restore :meth:`to_bytes`; ``None`` or another format version is empty state."""
        pending = cls()
        if not raw or len(raw) < _HEADER.size:
            return pending
        version, n, width = _HEADER.unpack_from(raw)
        if version != _VERSION:
            return pending
        at = _HEADER.size
        ids = np.frombuffer(raw, dtype="<i8", count=n, offset=at)
        times = np.frombuffer(raw, dtype="<i8", count=n, offset=at + 8 * n)
        feats = np.frombuffer(raw, dtype="<f8", count=n * width, offset=at + 16 * n)
        rows = feats.reshape(n, width).tolist()
        pending.entries = dict(
            zip(ids.tolist(), zip(times.tolist(), rows, strict=True), strict=True)
        )
        return pending
