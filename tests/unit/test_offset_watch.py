"""The stream's offset watch: a skipped range is read back, in-order streams cost nothing."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from pipelines.batching import OffsetWatch, RecoveredMessage


class Kafka:
    """A partition whose offsets 0..99 hold records, except 40..44 (transaction markers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    async def refetch(
        self, topic: str, partition: int, start: int, end: int
    ) -> list[RecoveredMessage]:
        self.calls.append((topic, partition, start, end))
        return [
            RecoveredMessage(topic, partition, o, b"k", b"v%d" % o)
            for o in range(start, end)
            if not 40 <= o < 45
        ]


P0 = TP("t", 0)


def see(watch: OffsetWatch, offsets: list[int], tp: TP = P0) -> list[int]:
    """Offsets in the order the batch would handle them."""

    async def go() -> list[int]:
        handled: list[int] = []
        for offset in offsets:
            handled += [e.message.offset for e in await watch.check(tp, offset)]
            handled.append(offset)
        return handled

    return asyncio.run(go())


def test_consecutive_offsets_and_rereads_fetch_nothing() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [0, 1, 2, 3, 1, 2, 3, 4]) == [0, 1, 2, 3, 1, 2, 3, 4]
    assert see(watch, [50, 51], TP("t", 1)) == [50, 51]  # a partition may start anywhere
    assert (kafka.calls, watch.holes) == ([], 0)


def test_a_skipped_range_is_read_back_before_the_event_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [10, 11, 15, 16]) == [10, 11, 12, 13, 14, 15, 16]
    assert kafka.calls == [("t", 0, 12, 15)]
    assert (watch.holes, watch.recovered) == (1, 3)
    assert "offsets 12..14 never reached the stream; read 3 record(s) back" in caplog.text


def test_a_real_gap_reads_back_only_what_exists() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [38, 39, 45]) == [38, 39, 45]  # 40..44 hold no records
    assert watch.recovered == 0
