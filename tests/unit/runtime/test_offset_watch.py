"""The stream's offset watch: a skipped range is read back, in-order streams cost nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.runtime.offsets import OffsetWatch, RecoveredMessage, faust_committed


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


def see(
    watch: OffsetWatch,
    offsets: list[int],
    tp: TP = P0,
    generation: int = 1,
    done: bool = False,
    fast: bool = True,
) -> list[int]:
    """Offsets in the order the batch would handle them (repeats left out); with ``done``
    the whole batch is then noted as handled. As the worker does, the constant-time
    :meth:`OffsetWatch.next_in_line` decides first (unless ``fast`` is off)."""

    async def go() -> list[int]:
        handled: list[Any] = []
        for offset in offsets:
            if fast and watch.next_in_line(tp, offset, generation):
                handled.append(Event(tp, offset))
                continue
            admission = await watch.admit(tp, offset, generation)
            handled += admission.before
            if not admission.skip:
                handled.append(Event(tp, offset))
        if done:
            watch.done(handled)
        return [e.message.offset for e in handled]

    return asyncio.run(go())


@dataclass
class Message:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    message: Message

    def __init__(self, tp: TP, offset: int) -> None:
        self.message = Message(tp.topic, tp.partition, offset)


def test_consecutive_offsets_fetch_nothing() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    assert see(watch, [50, 51], TP("t", 1)) == [50, 51]  # a partition may start anywhere
    assert (kafka.calls, watch.holes, watch.repeats) == ([], 0, 0)


def test_a_record_delivered_twice_is_handled_once(caplog: pytest.LogCaptureFixture) -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [0, 1, 2, 3, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    assert (kafka.calls, watch.repeats) == ([], 3)
    assert "t', partition=0)@1 was delivered again; skipped" in caplog.text


def test_a_seek_back_to_records_never_admitted_delivers_them() -> None:
    """Fetched from 20 first, then from the committed 15: 15..19 are new, 20.. repeats."""
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [20, 21, 15, 16, 17, 18, 19, 20, 21, 22]) == [20, 21, 15, 16, 17, 18, 19, 22]
    assert (kafka.calls, watch.holes, watch.repeats) == ([], 0, 2)


def committed_at(offset: int | None, asked: list[TP] | None = None) -> Any:
    async def committed(tp: TP) -> int | None:
        if asked is not None:
            asked.append(tp)
        return offset

    return committed


def test_a_partition_taken_over_starts_at_the_committed_offset_whatever_comes_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Faust resumes a new partition before it seeks it to the committed offset 15, so
    records from 20 can come first: 15..19 are read back and handled before them; when the
    seek delivers 15.. again, those are repeats. The customer windows of the fraud pipeline
    need this order (the other one made 15..19 late by days)."""
    kafka, asked = Kafka(), []
    watch = OffsetWatch(kafka.refetch, committed_at(15, asked))
    delivered = [20, 21, 15, 16, 17, 18, 19, 20, 21, 22]
    assert see(watch, delivered, done=True) == [15, 16, 17, 18, 19, 20, 21, 22]
    assert "offset 20 came before the committed offset's records" in caplog.text
    assert kafka.calls == [("t", 0, 15, 20)]
    assert (watch.holes, watch.recovered, watch.repeats) == (1, 5, 7)
    assert watch.needs_ack(P0, 15)  # repeats are acked as before
    assert see(watch, [23, 24], done=True) == [23, 24]
    assert asked == [P0]  # once a partition and generation
    # A later generation whose commit lags: what this worker handled is not read back.
    assert see(watch, [30], generation=2) == [25, 26, 27, 28, 29, 30]
    assert kafka.calls[-1] == ("t", 0, 25, 30)
    assert asked == [P0, P0]


def test_records_below_the_committed_offset_are_skipped_and_not_acked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch, committed_at(15))
    assert see(watch, [12, 13, 14, 15, 16]) == [15, 16]
    assert (kafka.calls, watch.below, watch.repeats) == ([], 3, 0)
    assert not watch.needs_ack(P0, 14)
    assert "@12 is below the committed offset 15; skipped" in caplog.text


def test_without_a_committed_offset_the_first_record_starts_the_partition() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch, committed_at(None))
    assert see(watch, [7, 8]) == [7, 8]
    assert kafka.calls == []


def test_handled_batches_stay_repeats_after_a_rebalance_and_admitted_ones_do_not() -> None:
    watch = OffsetWatch(Kafka().refetch)
    assert see(watch, [0, 1, 2], done=True) == [0, 1, 2]
    assert see(watch, [3, 4]) == [3, 4]  # admitted, then the partition was revoked
    # The next generation reads again from the committed offset 1: 1 and 2 were handled
    # (their outputs exist), 3 and 4 were dropped with the revoked partition.
    assert see(watch, [1, 2, 3, 4, 5], generation=2) == [3, 4, 5]


def test_a_skipped_range_is_read_back_before_the_event_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [10, 11, 15, 16]) == [10, 11, 12, 13, 14, 15, 16]
    assert kafka.calls == [("t", 0, 12, 15)]
    assert (watch.holes, watch.recovered) == (1, 3)
    assert "offset 15 came after a jump in offsets; 3 record(s) of 12..14 read back" in caplog.text


def test_a_real_gap_reads_back_only_what_exists() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [38, 39, 45]) == [38, 39, 45]  # 40..44 hold no records
    assert watch.recovered == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 60), max_size=12),  # a stretch of deliveries
            st.booleans(),  # then the batch is handled
            st.booleans(),  # then a rebalance
        ),
        max_size=6,
    )
)
def test_the_constant_time_check_decides_as_admit_does(
    stretches: list[tuple[list[int], bool, bool]],
) -> None:
    """Runs of consecutive offsets, repeats, seeks back and forth, holes, rebalances: with
    or without ``next_in_line`` the same records are handled, in the same order."""
    fast, slow = OffsetWatch(Kafka().refetch), OffsetWatch(Kafka().refetch)
    generation = 1
    for offsets, done, rebalance in stretches:
        # Deliveries are mostly runs: each drawn offset starts a run of three.
        run = [o + i for o in offsets for i in range(3)]
        got = see(fast, run, generation=generation, done=done)
        assert got == see(slow, run, generation=generation, done=done, fast=False)
        generation += rebalance


class _Client:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def committed(self, tp: Any) -> int | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[no-any-return]


class _Thread:
    def __init__(self, answer: Any) -> None:
        self.client = _Client(answer)

    def _ensure_consumer(self) -> _Client:
        return self.client

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)


def _app(answer: Any) -> Any:
    consumer = type("Consumer", (), {"_thread": _Thread(answer)})()
    return type("App", (), {"consumer": consumer})()


@pytest.mark.parametrize(("answer", "offset"), [(15, 15), (None, None), (-1, None)])
def test_the_committed_offset_is_asked_of_the_apps_consumer(answer: Any, offset: Any) -> None:
    assert asyncio.run(faust_committed(_app(answer))(P0)) == offset


def test_a_coordinator_that_cannot_answer_leaves_the_partition_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stream goes on (the check is skipped) instead of its agent dying."""
    assert asyncio.run(faust_committed(_app(ConnectionError("gone")))(P0)) is None
    assert "no committed offset from the coordinator (ConnectionError('gone'))" in caplog.text


class Flaky(Kafka):
    """A broker whose read-back fails ``fails`` times (a timeout), then answers."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails

    async def refetch(
        self, topic: str, partition: int, start: int, end: int
    ) -> list[RecoveredMessage]:
        if self.fails:
            self.fails -= 1
            raise TimeoutError(f"could not read {topic}/{partition}@{start}..{end - 1}")
        return await super().refetch(topic, partition, start, end)


def test_a_read_back_that_times_out_is_tried_again() -> None:
    kafka = Flaky(fails=2)
    watch = OffsetWatch(kafka.refetch, attempts=3, retry_s=0.0)
    assert see(watch, [0, 1, 5]) == [0, 1, 2, 3, 4, 5]


def test_a_read_back_that_keeps_failing_stops_the_worker_instead_of_the_agent() -> None:
    from pipelines.runtime.offsets import RefetchFailed
    from pipelines.runtime.policies import StopWorker

    watch = OffsetWatch(Flaky(fails=5).refetch, attempts=3, retry_s=0.0)
    with pytest.raises(RefetchFailed, match=r"could not read back offsets 2\.\.4 in 3 tries") as e:
        see(watch, [0, 1, 5])
    assert isinstance(e.value, StopWorker)  # the stage stops the worker: nothing skipped


def test_under_exactly_once_jumps_are_commit_markers_and_ranges_stay_whole() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch, read_jumps=False)
    offsets = [o for start in range(0, 300, 3) for o in (start, start + 1)]  # a marker every 3
    assert see(watch, offsets, done=True) == offsets
    assert kafka.calls == []  # nothing read back
    assert watch.admitted[P0].spans == [[0, 298]]
    assert watch.handled[P0].spans == [[0, 298]]
    assert see(watch, [297, 298], generation=2) == []  # handled: repeats after a rebalance


def test_under_exactly_once_markers_join_only_batches_that_were_done() -> None:
    """[0, 1] handled, [3, 4] refused (never done), [6, 7] handled, markers at 2 and 5: the
    handled ranges do not take in the refused batch, which the next generation delivers."""
    watch = OffsetWatch(Kafka().refetch, read_jumps=False)
    assert see(watch, [0, 1], done=True) == [0, 1]
    assert see(watch, [3, 4]) == [3, 4]
    assert see(watch, [6, 7], done=True) == [6, 7]
    assert watch.handled[P0].spans == [[0, 1], [6, 7]]
    assert see(watch, [3, 4], generation=2) == [3, 4]  # not repeats
