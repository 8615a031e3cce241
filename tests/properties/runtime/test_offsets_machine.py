"""Stateful properties of the offset bookkeeping (:mod:`pipelines.runtime.offsets`).

:class:`Ranges` is checked against a set of ints. :class:`OffsetWatch` is checked against a
model of partition logs, driven as the ingestion loop (:func:`pipelines.runtime.ingress.bulk_run`)
drives it: ``next_in_line`` first, else ``admit``; ``needs_ack`` for what ``admit`` skips;
``done`` once a batch's outputs were delivered. Deliveries come in order, after seeks back
(repeats), after jumps (holes Faust files as gaps) and from wherever the consumer was when a
rebalance started a generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeVar

from faust.types import TP
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pipelines.runtime.offsets import OffsetWatch, RecoveredEvent, RecoveredMessage
from pipelines.runtime.ranges import Ranges

# The "streamwise" profile (tests/conftest.py) is the parent: no deadline, no too_slow check.
MACHINE = settings(max_examples=100, stateful_step_count=30)

T = TypeVar("T")


# -- Ranges against a set -------------------------------------------------------------------


class RangesMachine(RuleBasedStateMachine):
    """Offsets added near the ones held (the usual case: the next one), and far away."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges = Ranges()
        self.model: set[int] = set()

    def _add(self, offset: int) -> None:
        self.ranges.add(offset)
        self.model.add(offset)

    @rule(offset=st.integers(0, 120))
    def add_anywhere_near_zero(self, offset: int) -> None:
        self._add(offset)

    @rule(offset=st.integers(0, 2**62))
    def add_far_away(self, offset: int) -> None:
        self._add(offset)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), delta=st.integers(-3, 3))
    def add_near_one_held(self, data: st.DataObject, delta: int) -> None:
        base = data.draw(st.sampled_from(sorted(self.model)), label="base")
        self._add(max(0, base + delta))

    @precondition(lambda self: self.model)
    @rule()
    def add_the_next(self) -> None:
        self._add(max(self.model) + 1)

    @invariant()
    def spans_are_sorted_disjoint_and_merged(self) -> None:
        spans = self.ranges.spans
        assert all(first <= last for first, last in spans), spans
        # Sorted, and a gap of at least one offset between neighbours (else they would merge).
        assert all(a[1] + 1 < b[0] for a, b in pairwise(spans)), spans

    @invariant()
    def spans_hold_exactly_the_set(self) -> None:
        spans = self.ranges.spans
        assert sum(last - first + 1 for first, last in spans) == len(self.model)
        assert {o for first, last in spans for o in range(first, last + 1)} == self.model

    @invariant()
    def membership_is_the_sets(self) -> None:
        probes = set(range(-2, 125)) | {o + d for o in self.model for d in range(-2, 3)}
        wrong = [o for o in sorted(probes) if (o in self.ranges) != (o in self.model)]
        assert not wrong, (wrong, self.ranges.spans)


def test_ranges_hold_the_same_offsets_as_a_set() -> None:
    run_state_machine_as_test(RangesMachine, settings=MACHINE)


# -- OffsetWatch against partition logs -----------------------------------------------------

TPS = (TP("t", 0), TP("t", 1), TP("u", 0))
END = 40  # a log holds offsets 0..END-1; a few hold transaction markers, not records
PARTITION = st.integers(0, len(TPS) - 1)  # which of the machine's partitions


def record(tp: TP, offset: int) -> RecoveredMessage:
    return RecoveredMessage(tp.topic, tp.partition, offset, b"k%d" % offset, b"v%d" % offset)


@dataclass(frozen=True)
class Delivered:
    """The event the ingestion loop makes of a record the stream delivered."""

    message: RecoveredMessage


@dataclass
class Log:
    """The model of one partition, as this worker sees it."""

    tp: TP
    records: frozenset[int]  # offsets that hold a record (the others: transaction markers)
    committed: int | None  # the group's committed offset (None: nothing committed yet)
    position: int  # the consumer's: the next record delivered is the first at or after it
    handled: set[int] = field(default_factory=set)  # in a batch noted done (any generation)
    # This generation:
    answer: int | None = None  # what ``committed`` says (None: no commit, or no answer)
    admitted: set[int] = field(default_factory=set)  # an event, or read back before one
    base: int | None = None  # where its stretch starts: the answer, else the first delivered
    top: int | None = None  # the highest offset delivered at or above ``base``
    asked: int = 0  # calls of ``committed``

    def start_generation(self, answer: int | None, position: int) -> None:
        self.answer, self.position = answer, position
        self.admitted, self.base, self.top, self.asked = set(), answer, None, 0

    def next_record(self) -> int | None:
        return next((o for o in range(self.position, END) if o in self.records), None)


def chance(numerator: int, denominator: int) -> st.SearchStrategy[bool]:
    return st.integers(1, denominator).map(lambda i: i <= numerator)


class WatchMachine(RuleBasedStateMachine):
    """One worker's watch over three partitions: every batch is delivered, the group
    coordinator always answers, and committed offsets only move forward (whoever commits)."""

    partitions: tuple[TP, ...] = TPS
    failures = False  # see FailingWatchMachine
    read_jumps = True  # see ExactlyOnceWatchMachine

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.logs: dict[TP, Log] = {}
        self.generation = 1
        self.batch: list[Any] = []  # admitted since the last batch was finished (or refused)
        self.delivered = 0  # records delivered this generation
        self.watch = OffsetWatch(self.refetch, self.committed, read_jumps=self.read_jumps)

    def teardown(self) -> None:
        self.loop.close()

    def run(self, coroutine: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coroutine)

    async def refetch(
        self, topic: str, partition: int, start: int, end: int
    ) -> list[RecoveredMessage]:
        log = self.logs[TP(topic, partition)]
        assert 0 <= start < end <= END, (start, end)
        return [record(log.tp, o) for o in range(start, end) if o in log.records]

    async def committed(self, tp: Any) -> int | None:
        log = self.logs[tp]
        log.asked += 1
        return log.answer

    # -- the logs and the first generation

    def commits(self) -> st.SearchStrategy[int | None]:
        """The group's committed offset at the first generation."""
        some = st.integers(0, 8)
        return st.none() | some if self.failures else some

    @initialize(data=st.data())
    def logs_and_first_generation(self, data: st.DataObject) -> None:
        for tp in self.partitions:
            markers = data.draw(st.sets(st.integers(0, END - 1), max_size=4), label=f"{tp} markers")
            committed = data.draw(self.commits(), label=f"{tp} committed")
            log = self.logs[tp] = Log(tp, frozenset(range(END)) - markers, committed, 0)
            self.start_generation(data, log)

    def start_generation(self, data: st.DataObject, log: Log) -> None:
        """The coordinator's answer, and where the consumer delivers from: Faust resumes a
        partition before it seeks it to the committed offset, so records from wherever the
        consumer was can come first."""
        fails = self.failures and data.draw(chance(1, 2), label=f"{log.tp} no answer")
        answer = None if fails else log.committed
        seeked = log.committed if log.committed is not None else 0
        # Where it sought, where it was, a record it handled before (a stretch delivered
        # again), anywhere.
        places = st.sampled_from([seeked, log.position, *sorted(log.handled)])
        position = data.draw(places | st.integers(0, END), label=f"{log.tp} position")
        log.start_generation(answer, position)

    # -- deliveries

    def deliver_one(self, log: Log, offset: int, fast: bool) -> None:
        tp = log.tp
        self.delivered += 1
        seen = offset in log.admitted or offset in log.handled
        below = log.answer is not None and offset < log.answer
        events: list[Any] = []
        if fast and self.watch.next_in_line(tp, offset, self.generation):
            events.append(Delivered(record(tp, offset)))
        else:
            admission = self.run(self.watch.admit(tp, offset, self.generation))
            assert all(isinstance(e, RecoveredEvent) for e in admission.before), admission
            for event in admission.before:
                assert event.message == record(tp, event.message.offset), event
            events.extend(admission.before)
            if admission.skip:
                assert seen or below, f"{tp}@{offset} skipped: neither a repeat nor below"
                assert not (below and events), f"{tp}@{offset}: below, yet {events} read back"
                # A repeat is acked; a record below the committed offset is not.
                assert self.watch.needs_ack(tp, offset) is not below, (tp, offset, log.answer)
            else:
                assert not seen, f"{tp}@{offset} admitted again"
                assert not below, f"{tp}@{offset} admitted below the committed offset"
                events.append(Delivered(record(tp, offset)))
        if events:
            self.admitted(log, offset, events)
        self.reached(log, offset, below)

    def admitted(self, log: Log, offset: int, events: list[Any]) -> None:
        """What the watch put in the batch for the delivery of ``offset``: records read
        back (in log order, below it), then the delivered record itself unless skipped."""
        tp = log.tp
        offsets = [e.message.offset for e in events]
        assert offsets == sorted(set(offsets)), offsets  # in log order, the event last
        assert offsets[-1] <= offset, (offsets, offset)
        assert all(e.message.tp == tp for e in events), events
        again = [o for o in offsets if o in log.admitted or o in log.handled]
        assert not again, f"{tp}: {again} read back again (admitted or handled before)"
        assert set(offsets) <= log.records, offsets
        if log.answer is not None:
            assert offsets[0] >= log.answer, (offsets, log.answer)
        log.admitted.update(offsets)
        self.batch.extend(events)

    def reached(self, log: Log, offset: int, below: bool) -> None:
        if below:
            return
        if log.base is None:
            log.base = offset  # no committed offset: the first record starts the partition
        log.top = offset if log.top is None else max(log.top, offset)

    def log(self, which: int) -> Log:
        return self.logs[self.partitions[which % len(self.partitions)]]

    @rule(which=PARTITION, count=st.integers(1, 6), fast=st.booleans())
    def deliver(self, which: int, count: int, fast: bool) -> None:
        """The stream delivers the next records in order."""
        log = self.log(which)
        for _ in range(count):
            offset = log.next_record()
            if offset is None:
                return  # the end of the log
            log.position = offset + 1
            self.deliver_one(log, offset, fast)

    @precondition(lambda self: self.read_jumps)
    @rule(which=PARTITION, data=st.data())
    def jump(self, which: int, data: st.DataObject) -> None:
        """A hole: the stream goes on past records it never delivered, maybe to one handled
        before (a stretch delivered again)."""
        log = self.log(which)
        ahead = sorted(o for o in log.handled if o > log.position)
        to = st.integers(log.position + 1, log.position + 12)
        to = st.sampled_from(ahead) | to if ahead else to
        log.position = min(END, data.draw(to, label="to"))

    @rule(which=PARTITION, data=st.data())
    def seek_back(self, which: int, data: st.DataObject) -> None:
        """A seek back: records delivered before come again (repeats), or ones never
        delivered. Faust seeks no lower than the committed offset within a generation."""
        log = self.log(which)
        lowest = min(log.answer or 0, log.position)
        log.position = data.draw(st.integers(lowest, log.position), label="to")

    # -- batches and rebalances

    @precondition(lambda self: self.batch)
    @rule()
    def finish_batch(self) -> None:
        """The batch's outputs were delivered: it is handled."""
        self.watch.done(self.batch)
        for event in self.batch:
            self.logs[event.message.tp].handled.add(event.message.offset)
        self.batch = []

    @precondition(lambda self: self.failures and self.batch)
    @rule()
    def refuse_batch(self) -> None:
        """The batch's delivery was refused: admitted this generation, never handled."""
        self.batch = []

    def moved_commit(self, log: Log) -> st.SearchStrategy[int | None]:
        """Where the group's committed offset is after a rebalance: as it was, at the end of
        a stretch this worker handled (it committed), or further on (another worker took the
        partition for a while, handled and committed)."""
        low = log.committed if log.committed is not None else 0
        ends = sorted({o + 1 for o in log.handled if o + 1 not in log.handled and o + 1 > low})
        moved = st.sampled_from(ends) | st.integers(low, END) if ends else st.integers(low, END)
        return st.just(log.committed) | moved

    @precondition(lambda self: self.delivered)  # (else generations of nothing, mostly)
    @rule(data=st.data())
    def rebalance(self, data: st.DataObject) -> None:
        """A new generation. Faust waits for the batch in flight first."""
        if self.batch:
            if self.failures and data.draw(st.booleans(), label="refused"):
                self.refuse_batch()
            else:
                self.finish_batch()
        self.generation += 1
        self.delivered = 0
        for log in self.logs.values():
            log.committed = data.draw(self.moved_commit(log), label=f"{log.tp} committed")
            self.start_generation(data, log)

    # -- what the watch promises

    @invariant()
    def every_record_up_to_the_highest_delivered_was_admitted_or_handled(self) -> None:
        """From the committed offset (else the first record delivered) up to the highest one
        delivered, every record of the log is this generation's, or was handled before."""
        for log in self.logs.values():
            if log.base is None or log.top is None:
                continue
            missing = [
                o
                for o in range(log.base, log.top + 1)
                if o in log.records and o not in log.admitted and o not in log.handled
            ]
            assert not missing, (
                f"{log.tp}: {missing} neither admitted this generation nor handled, yet "
                f"{log.top} was delivered (from {log.base}; handled {sorted(log.handled)})"
            )

    @invariant()
    def only_handled_records_and_markers_are_noted_handled(self) -> None:
        for log in self.logs.values():
            ranges = self.watch.handled.get(log.tp)
            noted = {o for lo, hi in ranges.spans for o in range(lo, hi + 1)} if ranges else set()
            wrong = sorted(noted & log.records - log.handled)
            assert not wrong, f"{log.tp}: {wrong} noted handled, never in a batch done"

    @invariant()
    def the_committed_offset_is_asked_once_a_partition_and_generation(self) -> None:
        assert all(log.asked <= 1 for log in self.logs.values())


class FailingWatchMachine(WatchMachine):
    """As :class:`WatchMachine`, and: a group that has committed nothing yet, a coordinator
    that does not answer (``faust_committed`` then says ``None``: the partition starts where
    the fetch does), and batches whose delivery was refused (admitted, never handled)."""

    partitions: tuple[TP, ...] = TPS[
        :1
    ]  # what the failure needs happens on one partition: found sooner
    failures = True


class ExactlyOnceWatchMachine(FailingWatchMachine):
    """As :class:`FailingWatchMachine`, with the watch of ``exactly_once``: offsets jump only
    over transaction markers (bridged, not read back), and no other hole opens within a
    generation (a seek still can)."""

    partitions = TPS[:2]
    read_jumps = False


def test_the_watch_admits_each_record_once_in_order() -> None:
    run_state_machine_as_test(WatchMachine, settings=MACHINE)


def test_the_watch_admits_each_record_once_in_order_through_failures() -> None:
    """Derandomized: the examples in which the faults reduced below (a repeat that hid a
    hole, a refused batch noted handled) were found, the same on every run."""
    found = settings(
        MACHINE,
        max_examples=600,  # found in about 1 example of 100
        stateful_step_count=50,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
    )
    run_state_machine_as_test(FailingWatchMachine, settings=found)


def test_under_exactly_once_the_watch_admits_each_record_once_in_order() -> None:
    run_state_machine_as_test(ExactlyOnceWatchMachine, settings=MACHINE)


# -- the failures found, reduced ------------------------------------------------------------

P0 = TP("t", 0)


class OneLog:
    """``P0`` with records at offsets 0..99; ``answer`` is what ``committed`` says now."""

    def __init__(self) -> None:
        self.answer: int | None = None
        self.reads: list[tuple[int, int]] = []
        self.watch = OffsetWatch(self.refetch, self.committed)

    async def refetch(
        self, topic: str, partition: int, start: int, end: int
    ) -> list[RecoveredMessage]:
        self.reads.append((start, end))
        return [record(P0, o) for o in range(start, end)]

    async def committed(self, tp: Any) -> int | None:
        return self.answer

    def batch(self, generation: int, offsets: list[int], done: bool) -> list[int]:
        """What a batch of ``offsets`` delivered in ``generation`` handles, in order; with
        ``done`` its outputs were delivered, else refused."""

        async def go() -> list[Any]:
            batch: list[Any] = []
            for offset in offsets:
                admission = await self.watch.admit(P0, offset, generation)
                batch += admission.before
                if not admission.skip:
                    batch.append(Delivered(record(P0, offset)))
            return batch

        batch = asyncio.run(go())
        if done:
            self.watch.done(batch)
        return [e.message.offset for e in batch]


def test_after_an_unanswered_generation_the_committed_stretch_comes_first() -> None:
    """Generation 1: the coordinator does not answer, the stream starts at 1 (as documented,
    0 is then not read back) and batch [1] is handled. Generation 2 (the group's committed
    offset still 0): Faust delivers 1 before its seek; 1 is a repeat, skipped, yet 0 before
    it is read back (it was once not)."""
    log = OneLog()  # generation 1: no answer
    assert log.batch(1, [1], done=True) == [1]
    log.answer = 0
    assert log.batch(2, [1, 2], done=True) == [0, 2]
    assert log.reads == [(0, 1)]


def test_a_hole_that_ends_on_a_repeat_is_read_back() -> None:
    """Generation 1 (committed 0): batch [0] is refused, batch [1] is handled. Generation 2
    (committed still 0): the stream delivers 1 (a repeat: handled) and 2; 0 was neither
    admitted this generation nor handled: it is read back before 1 is skipped."""
    log = OneLog()
    log.answer = 0
    assert log.batch(1, [0], done=False) == [0]  # refused
    assert log.batch(1, [1], done=True) == [1]
    assert log.batch(2, [1, 2], done=True) == [0, 2]
    assert log.reads == [(0, 1)]


def test_a_refused_batch_between_handled_ones_is_not_noted_handled() -> None:
    """Generation 1 (committed 0): [0] handled, [1] refused, [2] handled. Generation 2
    (committed 1): 1 was never handled, so it is admitted, not skipped as a repeat."""
    log = OneLog()
    log.answer = 0
    assert log.batch(1, [0], done=True) == [0]
    assert log.batch(1, [1], done=False) == [1]  # refused
    assert log.batch(1, [2], done=True) == [2]
    log.answer = 1
    assert log.batch(2, [1], done=True) == [1]  # not a repeat
