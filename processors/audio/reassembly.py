"""Putting one stream's chunks back in sequence order.

Kafka keeps a partition in order, but a producer's retries, a restarted source or a relay
can repeat, swap or lose chunks. :class:`Reassembler` releases chunks in sequence order:
a repeat is dropped (``duplicate``), a chunk that arrives early waits in a buffer of
``capacity`` chunks for the ones before it, and when the buffer is full the missing chunks
are given up and replaced by silence of the next chunk's length, counted as a gap. A chunk
that arrives after its place was filled with silence, or that precedes the first chunk
seen, is ``late`` and dropped.

>>> import numpy as np
>>> r = Reassembler(capacity=1)
>>> [len(x) for x in r.push(0, np.ones(3, np.float32)).samples]
[3]
>>> out = r.push(2, np.ones(3, np.float32))   # 1 is missing: wait
>>> out.samples, r.push(3, np.ones(3, np.float32)).gap_chunks  # buffer full: fill 1
([], 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from processors.audio.windows import compact_samples, samples_of

__all__ = ["Reassembler", "Released"]

Samples = npt.NDArray[np.float32]


@dataclass
class Released:
    """What one ``push`` let through, in order, and what it dropped or filled."""

    samples: list[Samples] = field(default_factory=list)
    first_seq: int | None = None  # sequence number of the first released chunk
    gap_chunks: int = 0
    duplicate: bool = False
    late: bool = False


class Reassembler:
    """In-order release of one stream's chunks with a bounded reorder buffer."""

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.first_seq: int | None = None
        self.next_seq: int | None = None
        self.filled: set[int] = set()  # recent sequence numbers replaced by silence
        self.pending: dict[int, Samples] = {}
        self.gap_chunks = 0
        self.duplicates = 0
        self.late = 0

    def push(self, seq: int, samples: Samples) -> Released:
        """Add chunk ``seq``; return the chunks (and silence) now ready, in order."""
        out = Released()
        if self.next_seq is None or self.first_seq is None:
            self.first_seq = self.next_seq = seq
        if seq < self.next_seq and (seq in self.filled or seq < self.first_seq):
            self.late += 1
            out.late = True
            return out
        if seq < self.next_seq or seq in self.pending:
            self.duplicates += 1
            out.duplicate = True
            return out
        self.pending[seq] = samples
        self._release(out)
        while len(self.pending) > self.capacity:
            first = min(self.pending)
            missing = first - self.next_seq
            filler = np.zeros(len(self.pending[first]), dtype=np.float32)
            for _ in range(missing):
                self.filled.add(self.next_seq)
                self._emit(out, self.next_seq, filler)
            if len(self.filled) > 4096:
                self.filled = {s for s in self.filled if s >= self.next_seq - 1024}
            out.gap_chunks += missing
            self.gap_chunks += missing
            self._release(out)
        return out

    def state(self) -> dict[str, Any]:
        """Position, buffered chunks and counters as data (sequence numbers are u64: lists)."""
        seqs = sorted(self.pending)
        return {
            "first_seq": self.first_seq,
            "next_seq": self.next_seq,
            "filled": sorted(self.filled),
            "pending_seqs": seqs,
            "pending": [compact_samples(self.pending[s]) for s in seqs],
            "counts": [self.gap_chunks, self.duplicates, self.late],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`state` (this reassembler's ``capacity`` stays)."""
        first, after = state["first_seq"], state["next_seq"]
        self.first_seq = None if first is None else int(first)
        self.next_seq = None if after is None else int(after)
        self.filled = {int(s) for s in state["filled"]}
        chunks = [samples_of(np.asarray(x)) for x in state["pending"]]
        self.pending = dict(zip((int(s) for s in state["pending_seqs"]), chunks, strict=True))
        self.gap_chunks, self.duplicates, self.late = (int(n) for n in state["counts"])

    def resume_at(self, seq: int) -> int:
        """Go on at chunk ``seq``, past a hole of chunks another run analysed: the chunks
        buffered before ``seq`` are dropped (they were released there), nothing is filled.
        Returns how many sequence numbers were skipped."""
        if self.next_seq is None or seq <= self.next_seq:
            raise ValueError(f"chunk {seq} is not past the next expected {self.next_seq}")
        skipped = seq - self.next_seq
        self.pending = {s: x for s, x in self.pending.items() if s > seq}
        self.next_seq = seq
        return skipped

    def _release(self, out: Released) -> None:
        assert self.next_seq is not None
        while self.next_seq in self.pending:
            self._emit(out, self.next_seq, self.pending.pop(self.next_seq))

    def _emit(self, out: Released, seq: int, samples: Samples) -> None:
        if out.first_seq is None:
            out.first_seq = seq
        out.samples.append(samples)
        self.next_seq = seq + 1
