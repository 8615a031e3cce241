"""Which offsets of a partition a worker has handled: admission, read-back, commits.

:class:`OffsetWatch` admits each record once (a repeat after a seek is skipped, a stretch a
seek jumped over is read back first), :func:`kafka_refetch` reads such a stretch,
:func:`faust_committed` asks the group's committed offset and :class:`CommitBarrier` keeps
Faust's periodic commit out of a batch in flight. The ingestion path
(:mod:`pipelines.runtime.ingress`) uses them; what they need of Faust's consumer goes through
:mod:`pipelines.runtime.compat`.

:class:`CommitBarrier` commits at batch boundaries instead. Under ``exactly_once`` a commit
ends the Kafka transactions; one that fell in the middle of a batch would commit half of the
batch's outputs with none of its offsets, and a crash then would repeat them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from pipelines.runtime import compat
from pipelines.settings import Settings

__all__ = [
    "CommitBarrier",
    "OffsetWatch",
    "RecoveredEvent",
    "RecoveredMessage",
    "faust_committed",
    "file_gap",
    "kafka_refetch",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveredMessage:
    """A record read again from Kafka, shaped like the Faust message fields steps use."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class RecoveredEvent:
    """An event the stream skipped, put back into its batch (never acked: Faust counts its
    offset as done already, see :class:`OffsetWatch`)."""

    message: RecoveredMessage


Refetch = Callable[[str, int, int, int], Awaitable[list[RecoveredMessage]]]
Committed = Callable[[Any], Awaitable[int | None]]


class OffsetWatch:
    """Puts back records that a stream skipped, before anything past them is acked.

    Within a partition of plain records offsets are consecutive, yet Faust can deliver a
    partition with a hole, e.g. when it seeks stream partitions to their committed offsets
    after a table recovery while records fetched before the seek are still flowing (seen
    here after ``kill -9`` and a restart from an empty state directory). Faust then files the
    hole as a "gap" (as if it held transaction markers) and commits past it, which would lose
    those records. On a jump the watch reads the missing offsets from Kafka (``refetch``) and
    returns them, to be handled in the same batch just before the event after the hole; a
    real gap (markers, compaction) simply reads back nothing. The hole is logged.

    A partition's first record in a generation is compared with the group's committed offset
    (``committed``, asked once a partition and generation): everything from there on is this
    worker's to handle, in order. Faust resumes a newly assigned partition before it seeks it
    to the committed offset, and records fetched in between can come first: a worker taking a
    partition over mid-stream handled the records after a stretch before the stretch itself
    (seen in the two-worker rebalance test: 282 payments, then late by days for their
    customers' windows). The watch reads that stretch back first; when the seek delivers it
    again, it is a repeat. A record below the committed offset is skipped (the partition's
    previous owner handled it) and not acked (:meth:`needs_ack`).

    The same seek can also deliver a record twice: fetched at the partition's position, then
    again from the committed offset. A record this generation already admitted into a batch,
    or that a handled batch held (kept across rebalances: its state change and outputs
    exist), is such a repeat: :meth:`admit` says to skip it. Offsets are compared exactly
    (as ranges), so a seek back to records never admitted delivers them (without
    ``committed``, after the records that came first).
    """

    def __init__(self, refetch: Refetch, committed: Committed | None = None) -> None:
        self.refetch = refetch
        self.committed = committed
        self.start: dict[Any, int | None] = {}  # committed offsets, this generation
        self.last: dict[Any, int] = {}  # the stream's previous offset, this generation
        self.admitted: dict[Any, Ranges] = {}  # this generation
        self.handled: dict[Any, Ranges] = {}
        self.generation: Any = None
        self.holes = 0
        self.recovered = 0
        self.repeats = 0
        self.below = 0

    def _seen(self, tp: Any, offset: int) -> bool:
        admitted, handled = self.admitted.get(tp), self.handled.get(tp)
        return bool(
            (admitted is not None and offset in admitted)
            or (handled is not None and offset in handled)
        )

    def next_in_line(self, tp: Any, offset: int, generation: Any = None) -> bool:
        """Admit ``offset`` if it simply follows the last one (the usual case, checked in
        constant time); ``False``: not decided here, ask :meth:`admit`."""
        if generation != self.generation or self.last.get(tp) != offset - 1:
            return False
        admitted = self.admitted.get(tp)
        if admitted is None or not admitted.spans or admitted.spans[-1][1] != offset - 1:
            return False  # the previous one was a repeat, or admitted out of order
        handled = self.handled.get(tp)
        if handled is not None and handled.spans and handled.spans[-1][1] >= offset:
            return False  # a seek back into handled records
        admitted.spans[-1][1] = offset
        self.last[tp] = offset
        return True

    async def admit(
        self, tp: Any, offset: int, generation: Any = None
    ) -> list[RecoveredEvent] | None:
        """Events to handle before the one at ``offset`` (usually none); ``None``: skip it."""
        if generation != self.generation:
            self.generation = generation
            self.last.clear()
            self.admitted.clear()
            self.start.clear()
        last = self.last.get(tp)
        first = last is None
        if first and self.committed is not None:
            if tp not in self.start:
                self.start[tp] = await self.committed(tp)
            start = self.start[tp]
            if start is not None:
                if offset < start:
                    self._below(tp, offset, start)
                    return None
                last = start - 1  # the records from the committed offset on come first
        self.last[tp] = offset
        if self._seen(tp, offset):
            self._repeat(tp, offset)
            return None
        admitted = _ranges(self.admitted, tp)
        admitted.add(offset)
        if last is None or offset <= last + 1:
            return []
        self.holes += 1
        records = await self.refetch(tp.topic, tp.partition, last + 1, offset)
        records = [r for r in records if not self._seen(tp, r.offset)]
        for r in records:
            admitted.add(r.offset)
        self.recovered += len(records)
        how = (
            "came before the committed offset's records"
            if first
            else "came after a jump in offsets"
        )
        log.warning(
            "%s: offset %d %s; %d record(s) of %d..%d read back from Kafka first",
            tp,
            offset,
            how,
            len(records),
            last + 1,
            offset - 1,
        )
        return [RecoveredEvent(r) for r in records]

    def _repeat(self, tp: Any, offset: int) -> None:
        self.repeats += 1
        if self.repeats == 1 or self.repeats % 1000 == 0:
            log.warning(
                "%s@%d was delivered again; skipped (%d repeated record(s) so far)",
                tp,
                offset,
                self.repeats,
            )

    def _below(self, tp: Any, offset: int, start: int) -> None:
        self.below += 1
        if self.below == 1 or self.below % 1000 == 0:
            log.warning(
                "%s@%d is below the committed offset %d; skipped (%d record(s) so far)",
                tp,
                offset,
                start,
                self.below,
            )

    def needs_ack(self, tp: Any, offset: int) -> bool:
        """Whether a record :meth:`admit` skipped is to be acked: a repeat is, a record below
        the committed offset is not (an ack of it could move the commit back)."""
        start = self.start.get(tp)
        return start is None or offset >= start

    def done(self, events: Sequence[Any]) -> None:
        """Note a batch as handled (its outputs delivered)."""
        for event in events:
            _ranges(self.handled, event.message.tp).add(event.message.offset)


def _ranges(by_tp: dict[Any, Ranges], tp: Any) -> Ranges:
    ranges = by_tp.get(tp)
    if ranges is None:
        ranges = by_tp[tp] = Ranges()
    return ranges


class Ranges:
    """A set of offsets kept as sorted, disjoint ``[first, last]`` ranges (usually one)."""

    def __init__(self) -> None:
        self.spans: list[list[int]] = []

    def __contains__(self, offset: int) -> bool:
        # The newest range is the likeliest.
        return any(first <= offset <= last for first, last in reversed(self.spans))

    def add(self, offset: int) -> None:
        spans = self.spans
        if spans and spans[-1][1] + 1 == offset:  # the usual case: the next offset
            spans[-1][1] = offset
            return
        if offset in self:
            return
        spans.append([offset, offset])
        spans.sort()
        merged = [spans[0]]
        for first, last in spans[1:]:
            if first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self.spans = merged


def kafka_refetch(settings: Settings) -> Refetch:
    """A :data:`Refetch` that reads ``[start, end)`` of a partition with its own consumer."""

    async def refetch(topic: str, partition: int, start: int, end: int) -> list[RecoveredMessage]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from pipelines.kafka.admin import client_config

        isolation = (
            "read_committed"
            if settings.processing_guarantee == "exactly_once"
            else "read_uncommitted"
        )
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            **client_config(settings), enable_auto_commit=False, isolation_level=isolation
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            found: list[RecoveredMessage] = []
            deadline = time.monotonic() + 60
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read {topic}/{partition}@{start}..{end - 1}")
                batch = await consumer.getmany(tp, timeout_ms=500)
                for r in batch.get(tp, []):
                    if r.offset < end:
                        found.append(RecoveredMessage(topic, partition, r.offset, r.key, r.value))
            return found
        finally:
            await consumer.stop()

    return refetch


def faust_committed(app: faust.App) -> Committed:
    """A :data:`Committed`: the app's consumer group's committed offset of a partition, asked
    of the group coordinator by the app's own consumer (in its thread). If the coordinator
    cannot say (an error, or no answer in 30 s), ``None``: the partition starts where the
    fetch does, as without the check, and the worker goes on."""

    async def committed(tp: Any) -> int | None:
        consumer: Any = app.consumer
        try:
            return await asyncio.wait_for(compat.group_committed(consumer, tp), 30)
        except Exception as exc:  # a missing answer must not stop the stream
            log.warning("%s: no committed offset from the coordinator (%r); not checked", tp, exc)
            return None

    return committed


async def file_gap(consumer: Any, recovered: Sequence[RecoveredEvent]) -> None:
    """Tell Faust's commit bookkeeping that records read back are done once the batch that
    holds them is (they are never acked: they are not Faust's messages)."""
    if recovered:
        first, last = recovered[0].message, recovered[-1].message
        await compat.add_gap(consumer, first.tp, first.offset, last.offset)


class CommitBarrier:
    """Holds Faust's consumer commits while a batch is handled; commits between batches.

    Faust lets one commit run at a time: ``Consumer.commit`` waits for the one in progress
    and then skips. Holding that slot (:func:`~pipelines.runtime.compat.claim_commit`) for the
    span of a batch makes a periodic commit that fires meanwhile wait and skip;
    :meth:`commit_if_due` then commits once the batch is acked, at most every ``interval``
    seconds, so commits cannot starve under load.
    """

    def __init__(self, consumer: Any, interval: float) -> None:
        self.consumer = consumer
        self.interval = interval
        self.last_commit = time.monotonic()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        while (running := compat.running_commit(self.consumer)) is not None:
            await asyncio.wait([running])  # a commit in progress finishes first
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        compat.claim_commit(self.consumer, held)
        try:
            yield
        finally:
            compat.release_commit(self.consumer, held)
            held.set_result(None)

    async def commit_if_due(self) -> None:
        if time.monotonic() - self.last_commit >= self.interval:
            self.last_commit = time.monotonic()
            await self.consumer.commit()
