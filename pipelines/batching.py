"""Micro-batches of Faust events that are acked only after the batch was handled.

:class:`BatchReader` takes a topic's events from Faust's channel queue in batches (full, or
after ``within`` seconds) and hands each batch to a step; its messages are acked only after
the step returned, so an unfinished batch is not committed and is read again. Faust's own
``Stream.take_events`` acks in a ``finally`` clause, even for a batch whose handler raised or
was cancelled, and its per-event stream machinery was the pipelines' bottleneck.

It also keeps Faust's periodic commit out of a batch in flight (:class:`CommitBarrier`) and
commits at batch boundaries instead. Under ``exactly_once`` a commit ends the Kafka
transactions; one that fell in the middle of a batch would commit half of the batch's
outputs with none of its offsets, and a crash then would repeat them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from pipelines.settings import Settings

__all__ = [
    "BatchReader",
    "CommitBarrier",
    "OffsetWatch",
    "RecoveredEvent",
    "RecoveredMessage",
    "batch_agent",
    "kafka_end_offsets",
    "kafka_refetch",
]

log = logging.getLogger(__name__)
SWEEP_S = 5.0  # an idle reader checks this often for records the stream skipped


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
    """

    def __init__(self, refetch: Refetch) -> None:
        self.refetch = refetch
        self.last: dict[Any, int] = {}
        self.holes = 0
        self.recovered = 0

    async def check(self, tp: Any, offset: int) -> list[RecoveredEvent]:
        """Events to handle before the one at ``offset`` (usually none)."""
        last = self.last.get(tp)
        self.last[tp] = offset
        if last is None or offset <= last + 1:
            return []  # in order, or read again from an earlier offset after a rebalance
        log.info("%s: offsets jump from %d to %d; reading the gap back", tp, last, offset)
        return await self.read_back(tp, last + 1, offset)

    async def read_back(self, tp: Any, start: int, end: int) -> list[RecoveredEvent]:
        """The records of ``[start, end)`` read from Kafka; ``end - 1`` counts as seen."""
        self.holes += 1
        records = await self.refetch(tp.topic, tp.partition, start, end)
        self.recovered += len(records)
        self.last[tp] = max(self.last.get(tp, end - 1), end - 1)
        log.warning(
            "%s: offsets %d..%d never reached the stream; read %d record(s) back from Kafka",
            tp,
            start,
            end - 1,
            len(records),
        )
        return [RecoveredEvent(r) for r in records]


def kafka_refetch(settings: Settings) -> Refetch:
    """A :data:`Refetch` that reads ``[start, end)`` of a partition with its own consumer."""

    async def refetch(topic: str, partition: int, start: int, end: int) -> list[RecoveredMessage]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from pipelines.kafka import client_config

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


EndOffsets = Callable[[list[Any]], Awaitable[dict[Any, int]]]


def kafka_end_offsets(settings: Settings) -> EndOffsets:
    """An :data:`EndOffsets` asking the broker for log end offsets with one lasting consumer."""
    client: Any = None

    async def end_offsets(tps: list[Any]) -> dict[Any, int]:
        nonlocal client
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from pipelines.kafka import client_config

        if client is None:
            client = AIOKafkaConsumer(**client_config(settings), enable_auto_commit=False)
            await client.start()
        try:
            found = await client.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
        except Exception:
            await client.stop()
            client = None
            raise
        return {TP(tp.topic, tp.partition): int(end) for tp, end in found.items()}

    return end_offsets


class CommitBarrier:
    """Holds Faust's consumer commits while a batch is handled; commits between batches.

    Faust lets one commit run at a time: ``Consumer.commit`` waits for ``_commit_fut`` and
    then skips. Holding that future for the span of a batch makes a periodic commit that
    fires meanwhile wait and skip; :meth:`commit_if_due` then commits once the batch is
    acked, at most every ``interval`` seconds, so commits cannot starve under load.
    """

    def __init__(self, consumer: Any, interval: float) -> None:
        self.consumer = consumer
        self.interval = interval
        self.last_commit = time.monotonic()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        while (running := self.consumer._commit_fut) is not None:
            await asyncio.wait([running])  # a commit in progress finishes first
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.consumer._commit_fut = held
        try:
            yield
        finally:
            if self.consumer._commit_fut is held:
                self.consumer._commit_fut = None
            held.set_result(None)

    async def commit_if_due(self) -> None:
        if time.monotonic() - self.last_commit >= self.interval:
            self.last_commit = time.monotonic()
            await self.consumer.commit()


class BatchReader:
    """Hands a Faust topic's events to ``step`` in micro-batches, without Faust's Stream.

    Faust's per-event stream machinery (processors, sensors, context switches for every
    event) costs about 0.3 ms an event here, which capped a pipeline at a few thousand
    events per second. The reader takes events straight from the topic's channel queue, the
    one Faust's conductor fills from the consumer, so the only per-event cost left is
    Faust's decoding into an event. Everything else keeps Faust's rules:

    - the channel is registered when the reader is built, so the consumer subscribes to it
      with the app's other topics and Faust assigns its partitions with the tables';
    - a message is tracked as unacked when taken and acked only after ``step`` returned, so
      its offset is committed only once the batch's outputs were delivered; a step that
      raises crashes the worker, leaving the batch to be read again after a restart;
    - events fetched before a rebalance (older generation, or while flow is stopped) are
      dropped unacked: the consumer seeks back to the committed offset and reads them again;
    - records the stream skipped are read back (:class:`OffsetWatch`), and Faust's periodic
      commit waits for a batch in flight (:class:`CommitBarrier`).
    """

    def __init__(
        self,
        app: faust.App,
        source: Any,
        name: str,
        step: Callable[[list[Any]], Awaitable[None]],
        settings: Settings,
        size: int,
        within: float,
    ) -> None:
        self.app = app
        self.name = name
        self.step = step
        self.size = size
        self.within = within
        self.channel = source.__aiter__()  # registers the topic with the conductor
        self.watch = OffsetWatch(kafka_refetch(settings))
        self.getter: asyncio.Future[Any] | None = None
        self.suspects: dict[Any, tuple[int, int]] = {}
        self.sweep_generation: int | None = None
        self.ends = kafka_end_offsets(settings)
        self.gaps: list[tuple[Any, int, int]] = []

    async def _get(self, queue: Any, wait_s: float | None) -> Any:
        """The queue's next event, or None after ``wait_s`` seconds.

        A get that times out stays pending for the next call instead of being cancelled:
        Python 3.11's ``wait_for`` can cancel a get that already took its item, which would
        lose that event.
        """
        if self.getter is None:
            self.getter = asyncio.ensure_future(queue.get())
        if not self.getter.done():
            await asyncio.wait([self.getter], timeout=wait_s)
            if not self.getter.done():
                return None
        getter, self.getter = self.getter, None
        return getter.result()

    async def _next_batch(self, queue: Any) -> list[Any]:
        """The next batch of events to handle, admitted (or read back by the sweep)."""
        first = None
        while first is None:
            first = await self._get(queue, SWEEP_S)
            if first is None:
                found = await self._sweep(queue)
                if found:
                    return found  # read back from Kafka: nothing to admit
        batch = [first]
        deadline = time.monotonic() + self.within
        while len(batch) < self.size:
            if self.getter is None and not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event = await self._get(queue, left)
            if event is None:
                break
            batch.append(event)
        return await self._admit(batch)

    def _positions(self) -> dict[Any, int]:
        """The consumer's fetch position of each assigned partition this reader reads."""
        consumer: Any = self.app.consumer
        topics = set(self.channel.topics)
        try:
            assignment = consumer._thread._ensure_consumer()._subscription.subscription.assignment
            states = dict(assignment._tp_state)
        except Exception:  # not assigned yet, or an aiokafka without these internals
            return {}
        positions: dict[Any, int] = {}
        for tp, state in states.items():
            position = getattr(state, "_position", None)
            if tp.topic in topics and isinstance(position, int):
                positions[TP(tp.topic, tp.partition)] = position
        return positions

    async def _sweep(self, queue: Any) -> list[Any]:
        """Records the consumer moved past that never reached this reader, read back.

        :class:`OffsetWatch` finds a skipped range when a later record arrives; a range
        skipped at the end of what a partition holds has no later record to show it. So
        while the queue is idle, a partition whose fetch position or log end offset stayed
        ahead of the last offset this reader saw (or of the committed offset) for two sweeps
        in a row has its missing records read back from Kafka and handed over as a batch
        (the log end covers a partition Faust stopped fetching at all). Once that batch is
        handled, the range is filed as a gap so Faust's commit can pass it.
        """
        app: Any = self.app
        consumer = app.consumer
        if app.consumer_generation_id != self.sweep_generation or not app.flow_control.is_active():
            self.sweep_generation = app.consumer_generation_id
            self.suspects.clear()
            return []
        if not queue.empty() or (self.getter is not None and self.getter.done()):
            return []
        found: list[Any] = []
        suspects: dict[Any, tuple[int, int]] = {}
        positions = self._positions()
        for tp in self._reactivate(consumer, positions):
            del positions[tp]  # its buffered records come through now
        seen_by_tp: dict[Any, int] = {}
        for tp in positions:
            seen = self.watch.last.get(tp)
            if seen is None:
                committed = consumer._committed_offset.get(tp)
                if committed is None:
                    continue
                seen = committed - 1
            seen_by_tp[tp] = seen
        ends = await self.ends(list(seen_by_tp)) if seen_by_tp else {}
        for tp, seen in seen_by_tp.items():
            # Fetched but not delivered (position), or not fetched at all (log end).
            limit = max(positions[tp], ends.get(tp, 0))
            if limit <= seen + 1:
                continue
            if self.suspects.get(tp) != (seen, limit):
                suspects[tp] = (seen, limit)  # check again next time: may be in flight
                continue
            log.warning(
                "[%s] %s: offsets %d..%d never reached the reader (fetch position %d); "
                "reading them back",
                self.name,
                tp,
                seen + 1,
                limit - 1,
                positions[tp],
            )
            found += await self.watch.read_back(tp, seen + 1, limit)
            self.gaps.append((tp, seen + 1, limit - 1))  # filed once they are handled
        self.suspects = suspects
        return found

    def _reactivate(self, consumer: Any, positions: dict[Any, int]) -> list[Any]:
        """Assigned partitions Faust stopped fetching for good, fetched again.

        Faust takes a partition out of its active set when the queue of its stream is nearly
        full and puts it back when the queue drains, but only if it is still in its
        "buffered" set, which a rebalance or recovery empties in between: the partition then
        stays assigned, unpaused and never fetched (seen after a restart with a backlog). The
        reader's queue is empty here, so no full buffer holds it back.
        """
        active = consumer._active_partitions
        if active is None:
            return []
        paused = consumer._paused_partitions
        stuck = [tp for tp in positions if tp not in active and tp not in paused]
        for tp in stuck:
            log.warning("[%s] %s was assigned but not fetched; fetching it again", self.name, tp)
            active.add(tp)
            consumer._buffered_partitions.discard(tp)
        return stuck

    async def _admit(self, batch: list[Any]) -> list[Any]:
        """The events to handle: current generation, tracked, skipped records put back."""
        app: Any = self.app
        consumer = app.consumer
        unacked = consumer.unacked
        generation = app.consumer_generation_id
        active = app.flow_control.is_active()
        events: list[Any] = []
        dropped = 0
        for event in batch:
            message = event.message
            if not active or message.generation_id != generation:
                dropped += 1  # fetched before a rebalance: read again from the committed offset
                continue
            if not message.tracked:
                message.tracked = True
                unacked.add(message)
            events.extend(await self.watch.check(message.tp, message.offset))
            events.append(event)
        if dropped:
            log.info("[%s] dropped %d event(s) fetched before a rebalance", self.name, dropped)
        return events

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("[%s] stopped: the worker must restart to go on", self.name)
            raise

    async def _run(self) -> None:
        app: Any = self.app
        queue = self.channel.queue
        barrier = CommitBarrier(app.consumer, float(app.conf.broker_commit_interval))
        while True:
            events = await self._next_batch(queue)
            if not events:
                continue
            async with barrier.holding():
                await self.step(events)
                consumer = app.consumer
                for event in events:
                    if not isinstance(event, RecoveredEvent):
                        event.message.ack(consumer)
                gaps, self.gaps = self.gaps, []
                for tp, first, last in gaps:  # read back and handled: commits may pass
                    await consumer._add_gap(tp, first, last)
            await barrier.commit_if_due()


def batch_agent(
    app: faust.App,
    source: Any,
    name: str,
    step: Callable[[list[Any]], Awaitable[None]],
    settings: Settings,
    *,
    size: int | None = None,
    within: float | None = None,
) -> BatchReader:
    """Declare step ``name`` reading ``source`` in micro-batches (a :class:`BatchReader`).

    Batches hold at most ``size`` events (default ``STREAMWISE_WORKER__BATCH_SIZE``) and wait
    at most ``within`` seconds (default ``…__BATCH_WITHIN_S``); the reader runs as an app
    task from the worker's start.
    """
    reader = BatchReader(
        app,
        source,
        name,
        step,
        settings,
        size or settings.worker.batch_size,
        within or settings.worker.batch_within_s,
    )
    app.task(reader.run)
    return reader
