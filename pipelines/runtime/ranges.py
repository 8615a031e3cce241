"""Sets of offsets kept as ranges: what :class:`~pipelines.runtime.offsets.OffsetWatch`
admitted and handled of a partition (offsets mostly come in long consecutive runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Ranges", "missing", "ranges_of"]


class Ranges:
    """A set of offsets kept as sorted, disjoint ``[first, last]`` ranges (usually one)."""

    def __init__(self) -> None:
        self.spans: list[list[int]] = []

    def __contains__(self, offset: int) -> bool:
        # The newest range is the likeliest.
        return any(first <= offset <= last for first, last in reversed(self.spans))

    def bridge(self, last: int, offset: int) -> None:
        """Add ``offset`` and the offsets between it and ``last`` (held already)."""
        spans = self.spans
        if spans and spans[-1][0] <= last <= spans[-1][1] and spans[-1][1] < offset:
            spans[-1][1] = offset
        else:
            self.add_span(last + 1, offset)

    def add_span(self, first: int, last: int) -> None:
        """Add every offset from ``first`` to ``last``."""
        spans = self.spans
        if spans and spans[-1][0] <= first <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], last)
            return
        spans.append([first, last])
        self._merge()

    def _merge(self) -> None:
        spans = self.spans
        spans.sort()
        merged = [spans[0]]
        for first, last in spans[1:]:
            if first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self.spans = merged

    def add(self, offset: int) -> None:
        spans = self.spans
        if spans and spans[-1][1] + 1 == offset:  # the usual case: the next offset
            spans[-1][1] = offset
            return
        if offset in self:
            return
        spans.append([offset, offset])
        self._merge()


def ranges_of(by_tp: dict[Any, Ranges], tp: Any) -> Ranges:
    """``by_tp[tp]``, a new empty one if there is none."""
    ranges = by_tp.get(tp)
    if ranges is None:
        ranges = by_tp[tp] = Ranges()
    return ranges


def missing(held: Sequence[Ranges | None], first: int, last: int) -> tuple[int, int] | None:
    """The lowest and highest offsets of ``[first, last]`` none of ``held`` holds (``None``:
    they hold all of them)."""
    spans = sorted(
        (max(lo, first), min(hi, last))
        for ranges in held
        if ranges is not None
        for lo, hi in ranges.spans
        if lo <= last and hi >= first
    )
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if merged and merged[0][0] == first:
        first = merged[0][1] + 1
    if merged and merged[-1][1] == last:
        last = merged[-1][0] - 1
    return None if first > last else (first, last)
