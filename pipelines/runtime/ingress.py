"""Records of a worker's busiest topics taken from the consumer's fetches in whole lists.

Faust hands every record to its streams one at a time: the fetcher awaits a delivery
callback per record (two tasks and an ``asyncio.wait`` each), the conductor decodes it into
an event and puts it on a queue, and the stream takes it off again, with sensors at every
step. For the fraud pipeline's input (one small payment per record) that was about a third
of the worker's CPU, more than any step's own work.

A :class:`BulkIngress` takes the records of chosen topics out of each fetch before Faust
iterates it, and appends them to the :class:`BulkSource` of the agent that reads them;
:func:`bulk_run` cuts micro-batches from that source. Partition assignment, tables,
commits and rebalances stay Faust's, and each rule of Faust's own path is kept:

* records fetched while the flow is stopped (a rebalance), or from a generation that is no
  longer current, are dropped, as Faust's streams skip them; Faust then reads from the
  committed offsets again;
* a record below the partition's read offset is dropped, and a jump in offsets is filed as
  a gap (transaction markers), as Faust's fetcher does;
* a batch's messages are tracked as unacked when the batch is cut (so a rebalance waits for
  it) and acked only once the broker acknowledged its outputs.

The source owns its flow control: when it holds more than ``limit`` records it takes its
partitions out of the consumer's active set, and puts them back once it has drained to half,
unless a rebalance or recovery has paused them meanwhile (Faust resumes those itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP
from faust.types.enums import ProcessingGuarantee

from pipelines.runtime import compat
from pipelines.runtime.offsets import (
    Committed,
    OffsetWatch,
    RecoveredEvent,
    Refetch,
    faust_committed,
    file_gap,
)
from pipelines.runtime.policies import StopWorker
from pipelines.runtime.steps import Handover, Stop
from pipelines.runtime.transactions import Transactions

__all__ = ["BulkEvent", "BulkIngress", "BulkSource", "bulk_agent", "bulk_run"]

log = logging.getLogger(__name__)


class BulkEvent:
    """A fetched record as a step sees it: only ``message`` (a Faust consumer message)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


class BulkSource:
    """The records of some topics waiting for one agent, in fetch order."""

    def __init__(self, app: faust.App, topics: Iterable[str], limit: int) -> None:
        self.app = app
        self.topics = frozenset(topics)
        self.limit = limit
        self.buffer: list[Any] = []
        self.arrived = asyncio.Event()  # set whenever records were appended
        self.paused: set[TP] = set()
        self.want = 1  # how many records the reader waits for

    def put(self, messages: list[Any], tp: TP, consumer: Any) -> None:
        self.buffer.extend(messages)
        if len(self.buffer) >= self.want:
            self.arrived.set()
        if len(self.buffer) >= self.limit and tp not in self.paused:
            compat.active_partitions(consumer).discard(tp)
            self.paused.add(tp)

    def take(self, most: int, consumer: Any) -> list[Any]:
        taken = self.buffer[:most]
        del self.buffer[:most]
        if len(self.buffer) < self.want:
            self.arrived.clear()
        if self.paused and len(self.buffer) <= self.limit // 2:
            self._resume(consumer)
        return taken

    def _resume(self, consumer: Any) -> None:
        flowing = consumer.flow_active and self.app.flow_control.is_active()
        if flowing:
            assigned = consumer.assignment()
            active = compat.active_partitions(consumer)
            paused_by_faust = compat.paused_partitions(consumer)
            for tp in self.paused:
                if tp in assigned and tp not in paused_by_faust:
                    active.add(tp)
        # Not flowing: a rebalance or recovery paused everything and will resume it.
        self.paused.clear()


class BulkIngress:
    """Diverts the records of registered topics from a Faust consumer's fetches."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.sources: dict[str, BulkSource] = {}
        self.installed: Any = None

    def source(self, topics: Iterable[str], limit: int) -> BulkSource:
        source = BulkSource(self.app, topics, limit)
        for topic in source.topics:
            if topic in self.sources:
                raise ValueError(f"{topic!r} already has a bulk reader")
            self.sources[topic] = source
        # Not handed to Faust's flow control to be cleared: it clears its queues on every
        # resume, also after the seek that ends a recovery, which would drop records fetched
        # from the committed offsets. Records of an old generation are skipped instead.
        self.install(self.app.consumer)
        return source

    def install(self, consumer: Any) -> None:
        """Divert the registered topics' records from each of ``consumer``'s fetches; refuses
        a consumer that lacks the parts the reader uses (``RuntimeError``)."""
        if self.installed is consumer:
            return
        compat.check_consumer(consumer)
        self.installed = consumer

        async def divert(records: dict[TP, list[Any]], active: set[TP] | None) -> None:
            await self._divert(consumer, records, active)

        compat.wrap_fetch(consumer, divert)

    async def _divert(
        self, consumer: Any, records: dict[TP, list[Any]], active: set[TP] | None
    ) -> None:
        app = self.app
        generation = app.consumer_generation_id
        flowing = consumer.flow_active and not consumer.should_stop
        read_offset = compat.read_offsets(consumer)
        to_message = compat.message_maker(consumer)
        buffered = compat.buffered_partitions(consumer)
        for key in [key for key in records if key.topic in self.sources]:
            fetched = records.pop(key)  # never reaches Faust's per-record path
            tp = TP(key.topic, key.partition)  # aiokafka's TopicPartition: equal, not a TP
            if not flowing or (active is not None and tp not in active and tp not in buffered):
                log.info(
                    "%s: %d fetched record(s) from %d dropped (%s); read again after the seek",
                    tp,
                    len(fetched),
                    fetched[0].offset if fetched else -1,
                    "flow stopped" if not flowing else "partition not active",
                )
                continue  # as Faust's getmany: read again after its seek
            messages = []
            last = read_offset[tp]
            for record in fetched:
                offset = record.offset
                if last is not None and offset < last:
                    continue  # below the read offset: Faust drops these too
                if last is not None and offset - last > 1:
                    await compat.add_gap(consumer, tp, last + 1, offset - 1)  # markers, compaction
                message = to_message(tp, record)
                message.generation_id = generation
                messages.append(message)
                last = offset
            read_offset[tp] = last
            if messages:
                self.sources[tp.topic].put(messages, tp, consumer)


Start = Callable[[list[Any]], Awaitable[Handover]]


@dataclass
class _InFlight:
    """A batch handed over, and the repeats delivered with it: a repeat is acked once the
    batch is (its batch may hold records read back before it, and an ack of the repeat
    would let Faust commit past them)."""

    handover: Handover
    repeats: list[Any]


async def bulk_run(
    app: faust.App,
    source: BulkSource,
    start: Start,
    max_: int,
    within: float,
    refetch: Refetch,
    depth: int = 2,
    committed: Committed | None = None,
) -> None:
    """Cut batches of at most ``max_`` events from ``source`` (waiting at most ``within`` s
    for a full one) and hand each to ``start``; a batch is acked once its outputs were
    acknowledged. With ``depth`` 2 the next batch is computed while the broker acknowledges
    the previous one; ``depth`` 1 (for ``exactly_once``, where a batch's transactions commit
    before the next one sends) waits for each. If the outputs of a batch were refused and its
    policy rolled the step's state back, a later batch in flight (built on that state) is
    handled again. ``committed`` gives the group's committed offset of a partition, where a
    partition newly assigned starts (:class:`~pipelines.runtime.offsets.OffsetWatch`). A
    record delivered again (a repeat the watch skips) is acked with the batch it came in, or
    the newest one in flight: never before records read back or handled ahead of it."""
    consumer: Any = app.consumer
    flow = app.flow_control
    # Under exactly_once, offsets jump at every commit marker (see OffsetWatch.read_jumps).
    watch = OffsetWatch(refetch, committed, read_jumps=depth > 1)
    source.want = max_
    in_flight: deque[_InFlight] = deque()

    async def finish_oldest() -> None:
        handover, repeats = in_flight[0].handover, in_flight[0].repeats
        await asyncio.wait([handover.delivery])
        if handover.delivery.exception() is not None:  # let later ones settle first
            later = [b.handover.delivery for b in list(in_flight)[1:]]
            if later:
                await asyncio.wait(later)
        in_flight.popleft()
        delivered = await handover.confirmed()  # raises if even dead letters were refused
        watch.done(handover.events)
        ack = consumer.ack
        for event in handover.events:
            if not isinstance(event, RecoveredEvent):
                ack(event.message)
        for message in repeats:
            ack(message)
        if not delivered and handover.rolled_back and in_flight:
            redo = [(list(b.handover.events), b.repeats) for b in in_flight]
            in_flight.clear()
            log.warning("%d later batch(es) built on a refused one handled again", len(redo))
            for events, later_repeats in redo:
                in_flight.append(_InFlight(await start(events), later_repeats))

    while True:
        if not source.arrived.is_set():
            arrival = asyncio.ensure_future(source.arrived.wait())
            waits: set[asyncio.Future[Any]] = {arrival}
            if in_flight:
                waits.add(in_flight[0].handover.delivery)
            await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
            arrival.cancel()
        while in_flight and in_flight[0].handover.delivery.done():
            await finish_oldest()
        if not source.buffer:
            continue
        if not flow.is_active():  # a rebalance: what was fetched before it is skipped after
            while in_flight:  # Faust waits for these before it gives partitions away
                await finish_oldest()
            await flow.acquire()
            continue
        generation = app.consumer_generation_id
        events: list[Any] = []
        repeats: list[Any] = []  # acked no earlier than the batches cut before them
        stale = 0
        unacked = compat.unacked_messages(consumer)
        for message in source.take(max_, consumer):
            if message.generation_id != generation:
                stale += 1
                continue  # fetched before a rebalance: Faust's streams skip these too
            if not watch.next_in_line(message.tp, message.offset, generation):
                admission = await watch.admit(message.tp, message.offset, generation)
                await file_gap(consumer, admission.before)
                events.extend(admission.before)
                if admission.skip:  # a repeat (see OffsetWatch): already handled
                    if watch.needs_ack(message.tp, message.offset):
                        repeats.append(message)
                    continue
            message.tracked = True
            unacked.add(message)  # a rebalance waits for the batch
            events.append(BulkEvent(message))
        if stale:
            log.info("%d record(s) fetched before a rebalance skipped", stale)
        if not events:
            if in_flight:
                in_flight[-1].repeats.extend(repeats)
            else:
                for message in repeats:
                    consumer.ack(message)
            continue
        while len(in_flight) >= depth:
            await finish_oldest()
        in_flight.append(_InFlight(await start(events), repeats))
        if depth == 1:
            await finish_oldest()


def bulk_agent(
    app: faust.App,
    ingress: BulkIngress,
    channel: faust.TopicT,
    name: str,
    start: Start,
    most: int,
    within: float,
    refetch: Refetch,
    on_stop: Stop | None = None,
) -> Any:
    """Declare agent ``name`` on ``channel`` (so Faust subscribes to it, assigns its partitions
    and co-locates the agent's tables) whose records come from ``ingress``, not its stream.

    Batches hold at most ``most`` records and wait at most ``within`` s; the source pauses
    its partitions beyond ``4 * most`` records. Under ``exactly_once`` one batch is in flight
    at a time, else two (see :func:`bulk_run`). If the loop fails (a :class:`StopWorker`, or
    any error of its own) it goes to ``on_stop``, which stops the worker: raised into Faust,
    the agent would be restarted and, in faust-streaming 0.15.3, never stopped again.
    """
    source = ingress.source(channel.topics, limit=4 * most)
    transactions = Transactions.of(app)
    if transactions is not None:
        transactions.register(name, channel.topics)
    conf: Any = app.conf
    depth = 1 if conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE else 2

    async def agent(stream: Any) -> None:
        # Iterating a channel is what subscribes Faust to its topics (the conductor keeps the
        # iterator); nothing is read from it.
        aiter(stream.channel)
        committed = faust_committed(app)  # where a partition taken over starts
        if transactions is not None:
            committed = _claiming(transactions, committed)
        try:
            await bulk_run(app, source, start, most, within, refetch, depth, committed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_stop is None:
                raise
            reason = exc if isinstance(exc, StopWorker) else StopWorker(f"{name}: {exc!r}")
            if reason is not exc:
                log.error("[%s] the ingestion loop failed", name, exc_info=exc)
            await on_stop(reason)

    return app.agent(channel, name=name)(agent)


def _claiming(transactions: Transactions, committed: Committed) -> Committed:
    """``committed``, after this worker's producer of the partition fenced its previous owner
    (whose open transaction, with its offsets, ends first: the offset read is final)."""

    async def claimed(tp: Any) -> int | None:
        await transactions.claim(tp)
        return await committed(tp)

    return claimed
