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
from pipelines.settings import Settings

__all__ = [
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
        if not first and not self.read_jumps and last is not None and offset > last + 1:
            admitted.bridge(last, offset)  # markers: as if admitted, so ranges stay whole
            return []
        admitted.add(offset)
        if last is None or offset <= last + 1:
            return []
        self.holes += 1
        records = await self._read_back(tp, last + 1, offset)
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
        """Note a batch as handled (its outputs delivered). Where this generation admitted
        a partition's offsets as one range (bridged markers included), the batch's offsets
        are noted as one range too, joined to the handled ones before it."""
        by_tp: dict[Any, list[int]] = {}
        for event in events:
            by_tp.setdefault(event.message.tp, []).append(event.message.offset)
        for tp, offsets in by_tp.items():
            handled = _ranges(self.handled, tp)
            admitted = self.admitted.get(tp)
            lo, hi = min(offsets), max(offsets)
            if admitted is None or not admitted.covers(lo, hi):
                for offset in offsets:
                    handled.add(offset)
                continue
            if handled.spans:
                end = handled.spans[-1][1]
                if end < lo and admitted.covers(end, lo):
                    lo = end + 1
            handled.add_span(lo, hi)


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

    def covers(self, first: int, last: int) -> bool:
        """Whether one range holds every offset from ``first`` to ``last``."""
        return any(lo <= first and last <= hi for lo, hi in reversed(self.spans))

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
