"""Reassembly of a stream's chunks: order, duplicates, gaps and late arrivals."""

from __future__ import annotations

import numpy as np

from processors.audio.reassembly import Reassembler


def chunk(seq: int, n: int = 4) -> np.ndarray:
    return np.full(n, seq + 1, dtype=np.float32)


def feed(r: Reassembler, seqs: list[int]) -> list[float]:
    """Push ``seqs``; return the first sample of every released chunk (0 = silence)."""
    out: list[float] = []
    for seq in seqs:
        out += [float(s[0]) for s in r.push(seq, chunk(seq)).samples]
    return out


def test_in_order_chunks_pass_straight_through() -> None:
    r = Reassembler(capacity=4)
    assert feed(r, [5, 6, 7]) == [6.0, 7.0, 8.0]  # a stream may start at any sequence number
    assert (r.gap_chunks, r.duplicates, r.late) == (0, 0, 0)


def test_swapped_chunks_within_the_buffer_come_out_in_order() -> None:
    r = Reassembler(capacity=4)
    assert feed(r, [0, 2, 3, 1, 4]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert r.gap_chunks == 0


def test_duplicates_are_dropped_whether_released_or_waiting() -> None:
    r = Reassembler(capacity=4)
    assert feed(r, [0, 1, 1, 3, 3, 0, 2]) == [1.0, 2.0, 3.0, 4.0]
    assert r.duplicates == 3


def test_a_gap_is_filled_with_silence_when_the_buffer_overflows() -> None:
    r = Reassembler(capacity=2)
    assert feed(r, [0, 3, 4]) == [1.0]  # 1 and 2 missing: wait
    released = r.push(5, chunk(5))
    assert [float(s[0]) for s in released.samples] == [0.0, 0.0, 4.0, 5.0, 6.0]
    assert released.gap_chunks == 2
    assert released.first_seq == 1
    assert all(len(s) == 4 for s in released.samples)
    assert r.gap_chunks == 2


def test_a_chunk_arriving_after_its_gap_was_filled_is_late() -> None:
    r = Reassembler(capacity=1)
    feed(r, [0, 2, 3])  # 1 is given up
    out = r.push(1, chunk(1))
    assert out.late
    assert not out.samples
    assert r.late == 1
    assert r.push(-1, chunk(-1)).late  # before the stream's first chunk


def test_zero_capacity_never_waits() -> None:
    r = Reassembler(capacity=0)
    assert feed(r, [0, 2]) == [1.0, 0.0, 3.0]
    assert r.gap_chunks == 1
