"""Which offsets of a partition a worker has handled: admission and read-back.

:class:`OffsetWatch` admits each record once (a repeat after a seek is skipped, a stretch a
seek jumped over is read back first), :func:`kafka_refetch` reads such a stretch and
:func:`faust_committed` asks the group's committed offset. The ingestion path
(:mod:`pipelines.runtime.ingress`) uses them; what they need of Faust's consumer goes through
:mod:`pipelines.runtime.compat`. (Under ``exactly_once`` offsets are committed in each
batch's transactions: :mod:`pipelines.runtime.transactions`.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from pipelines.runtime import compat
from pipelines.runtime.policies import StopWorker
from pipelines.runtime.ranges import Ranges, missing, ranges_of
from pipelines.settings import Settings

__all__ = [
    "Admission",
    "OffsetWatch",
    "RecoveredEvent",
    "RecoveredMessage",
    "RefetchFailed",
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


class RefetchFailed(StopWorker):
    """Records a partition skipped could not be read back: the worker must stop."""


@dataclass(frozen=True)
class Admission:
    """What :meth:`OffsetWatch.admit` says of a delivered record: handle ``before`` first
    (records read back), then the record itself, unless ``skip`` (a repeat, or below the
    committed offset). A repeat can come with records: a hole before it is read back all
    the same, or acking the repeat would commit past the hole."""

    before: tuple[RecoveredEvent, ...] = ()
    skip: bool = False


_TAKE = Admission()
_SKIP = Admission(skip=True)


Refetch = Callable[[str, int, int, int], Awaitable[list[RecoveredMessage]]]
Committed = Callable[[Any], Awaitable[int | None]]


class OffsetWatch:
    """Puts back records that a stream skipped, before anything past them is acked.

    Within a partition of plain records offsets are consecutive, yet Faust can deliver a
    partition with a hole, e.g. when it seeks stream partitions to their committed offsets
    after a table recovery while records fetched before the seek are still flowing (seen
    here after ``kill -9`` and a restart from an empty state directory). Faust then files the
    hole as a "gap" (as if it held transaction markers) and commits past it, which would lose
    those records. On a jump the watch reads the offsets it skipped (those neither admitted
    this generation nor handled) from Kafka (``refetch``) and returns them, to be handled in
    the same batch just before the event after the hole; a real gap (markers, compaction)
    simply reads back nothing. The hole is logged.

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
    ``committed``, after the records that came first). A repeat that ends a hole (the first
    record of a generation past the committed offset, or one after a jump) is skipped too,
    but the hole before it is read back all the same: it may hold records never handled (of
    a generation whose coordinator did not answer, or of a refused batch). Only the offsets
    of batches noted :meth:`done` count as handled.
    """

    def __init__(
        self,
        refetch: Refetch,
        committed: Committed | None = None,
        attempts: int = 5,
        retry_s: float = 1.0,
        read_jumps: bool = True,
    ) -> None:
        self.refetch = refetch
        # Under exactly_once every transaction of an input leaves a commit marker, so offsets
        # jump all the time: a jump within a generation is taken as markers (or aborted
        # records) and bridged, not read back; the start of a generation is still checked.
        self.read_jumps = read_jumps
        self.attempts = attempts  # tries of one read-back before the worker stops
        self.retry_s = retry_s  # the first pause between tries; doubled each time
        self.committed = committed
        self.start: dict[Any, int | None] = {}  # committed offsets, this generation
        self.last: dict[Any, int] = {}  # the stream's previous offset, this generation
        self.admitted: dict[Any, Ranges] = {}  # this generation
        self.markers: dict[Any, Ranges] = {}  # bridged, not yet joined to handled ones
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

    async def admit(self, tp: Any, offset: int, generation: Any = None) -> Admission:
        """Whether to handle the record at ``offset``, and what to handle before it."""
        if generation != self.generation:
            self.generation = generation
            self.last.clear()
            self.admitted.clear()
            self.markers.clear()
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
                    return _SKIP
                last = start - 1  # the records from the committed offset on come first
        self.last[tp] = offset
        repeat = self._seen(tp, offset)
        if repeat:
            self._repeat(tp, offset)
        admitted = ranges_of(self.admitted, tp)
        if last is None or offset <= last + 1:  # in line, or a seek back
            if repeat:
                return _SKIP
            admitted.add(offset)
            return _TAKE
        if not first and not self.read_jumps:  # markers: bridged, so ranges stay whole
            if repeat:
                return _SKIP
            admitted.bridge(last, offset)
            ranges_of(self.markers, tp).add_span(last + 1, offset - 1)
            return _TAKE
        if not repeat:
            admitted.add(offset)
        # A hole, also before a repeat (the stretch before it may never have been read).
        before = await self._hole(tp, last + 1, offset, first)
        return Admission(before, skip=repeat) if before or repeat else _TAKE

    async def _hole(self, tp: Any, start: int, end: int, first: bool) -> tuple[RecoveredEvent, ...]:
        """The records of ``[start, end)`` neither admitted this generation nor handled, read
        back (nothing is read if there are none)."""
        unread = missing([self.admitted.get(tp), self.handled.get(tp)], start, end - 1)
        if unread is None:
            return ()
        self.holes += 1
        lo, hi = unread
        records = [r for r in await self._read_back(tp, lo, hi + 1) if not self._seen(tp, r.offset)]
        admitted = ranges_of(self.admitted, tp)
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
            end,
            how,
            len(records),
            lo,
            hi,
        )
        return tuple(RecoveredEvent(r) for r in records)

    async def _read_back(self, tp: Any, start: int, end: int) -> list[RecoveredMessage]:
        """``refetch`` ``[start, end)``, tried again after a failure (a broker that does not
        answer); after :attr:`attempts` tries :class:`RefetchFailed`: the records cannot be
        skipped, so the worker stops and reads them after a restart."""
        pause = self.retry_s
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.refetch(tp.topic, tp.partition, start, end)
            except Exception as exc:
                if attempt == self.attempts:
                    raise RefetchFailed(
                        f"{tp}: could not read back offsets {start}..{end - 1} in"
                        f" {attempt} tries ({type(exc).__name__}: {exc})"
                    ) from exc
                log.warning(
                    "%s: reading back %d..%d failed (%r); try %d of %d in %g s",
                    tp,
                    start,
                    end - 1,
                    exc,
                    attempt + 1,
                    self.attempts,
                    pause,
                )
                await asyncio.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")  # pragma: no cover

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
        """Note a batch as handled (its outputs delivered): its offsets, and the markers
        bridged between handled offsets (so that ranges stay whole). Only the batch's own
        offsets: an admitted record between two batches may be of one that was refused."""
        by_tp: dict[Any, list[int]] = {}
        for event in events:
            by_tp.setdefault(event.message.tp, []).append(event.message.offset)
        for tp, offsets in by_tp.items():
            handled = ranges_of(self.handled, tp)
            for offset in offsets:
                handled.add(offset)
            markers = self.markers.get(tp)
            if markers is not None and markers.spans:
                markers.spans = _join(handled, markers.spans)


def _join(handled: Ranges, markers: list[list[int]]) -> list[list[int]]:
    """Add to ``handled`` each span of ``markers`` whose offsets either side it holds; the
    spans left to join later (next to a batch still in flight, or refused)."""
    left = []
    for first, last in markers:
        if first - 1 in handled and last + 1 in handled:
            handled.add_span(first, last)
        else:
            left.append([first, last])
    return left


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
