"""Where a step's outputs go: Faust topics in a worker, a list in tests.

A step handles Faust events but only touches ``event.message`` (topic, partition, offset,
key, value), writes state inside ``outputs.scope(event)`` and produces through
``outputs.send``. The worker passes :class:`FaustOutputs`; tests pass
:class:`~pipelines.runtime.testing.RecordingOutputs` and plain dicts for state, so a
step's logic runs without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import faust
from aiokafka.partitioner import DefaultPartitioner

from pipelines.runtime import compat
from pipelines.runtime.app import event_scope
from pipelines.runtime.state import TableState
from pipelines.runtime.transactions import BatchOffsets, Transactions

__all__ = [
    "DeliveryError",
    "FaustOutputs",
    "MessageLike",
    "Outputs",
    "completed",
]


class DeliveryError(RuntimeError):
    """The broker did not take some records; the batch that sent them must not be acked."""


class MessageLike(Protocol):
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


class EventLike(Protocol):
    @property
    def message(self) -> MessageLike: ...


class Outputs(Protocol):
    @property
    def by_source(self) -> bool:
        """Whether records must name their source (``exactly_once``): a step then sends a
        record per input partition where it would combine inputs of several."""
        ...

    def begin(self, events: Sequence[Any]) -> None: ...

    def scope(self, event: Any) -> AbstractContextManager[None]: ...

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        source: Any = None,
    ) -> None: ...

    async def delivered(self) -> None: ...

    async def hand_over(self) -> asyncio.Future[None]: ...

    def discard(self) -> None: ...

    def rollback(self) -> bool: ...


Layer = tuple[TableState, int]
"""A state's pending layer (:meth:`TableState.flush <pipelines.runtime.state.TableState.flush>`)."""

Queued = tuple[str, bytes | None, bytes | None, int | None, str | None]
"""topic, key, value, partition (``None``: the partitioner's), transactional id (``None``:
at-least-once)."""


class FaustOutputs:
    """Sends through the app's producers; scope makes the event current for table writes.

    ``send`` only queues a record (already serialized bytes). :meth:`delivered` flushes the
    step's state changes (:class:`~pipelines.runtime.state.TableState`) into the same queue,
    hands everything to the producer as one record batch per topic partition (aiokafka's
    ``create_batch``/``send_batch``: a few microseconds a record instead of a future and a
    send call each), then waits for the broker's acknowledgement and raises if any record
    failed, so a step can finish a batch (and let it be acked) only once its outputs exist.
    Records without a partition go where aiokafka's ``DefaultPartitioner`` puts them (murmur2
    of the key, as Kafka's default; a random available partition for no key), as a plain
    send would. Faust's own flush before a commit ignores failed deliveries: a record the
    broker refused would be committed past silently.

    With ``transactions`` (``exactly_once``, :mod:`pipelines.runtime.transactions`) each
    record goes through the transactional producer of the input it came from: the event
    given as ``source``, else the one in scope, else the batch's only input partition (a
    record of a batch of several input partitions with neither raises); changelog records
    go with their partition's input. :meth:`hand_over` then also commits the batch's
    transactions with its input offsets once every record was acknowledged, and aborts them
    if any was refused.
    """

    def __init__(
        self,
        app: faust.App,
        topics: list[str],
        states: Sequence[TableState] = (),
        transactions: Transactions | None = None,
    ) -> None:
        """Outputs to ``topics`` (any other is refused), flushing ``states`` with each batch;
        under ``exactly_once`` in the app's transactions (:meth:`Transactions.of`)."""
        self.app = app
        self.topics = set(topics)
        self.states = list(states)  # flushed with each batch's outputs
        self.queued: list[Queued] = []
        # exactly_once: the app's (made by create_app), unless given
        self.transactions = transactions or Transactions.of(app)
        self.by_source = self.transactions is not None
        self.partitions: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition
        self.partition_counts: dict[str, int] = {}
        # Under exactly_once, of the batch begun last: its offsets by transactional id, the
        # transactional id of each input partition number, and those sent into already.
        self.offsets: BatchOffsets = {}
        self.source_ids: dict[int, str] = {}
        self.sent_ids: set[str] = set()
        self.must_abort = False  # a discarded batch sent into its transactions

    def begin(self, events: Sequence[Any]) -> None:
        """A new batch of ``events`` starts (its offsets are what its transactions commit)."""
        if self.transactions is None:
            return
        self.offsets = self.transactions.offsets(events)
        self.source_ids = {}
        for event in events:
            message = event.message
            self.source_ids.setdefault(
                message.partition, self.transactions.source_id(message.topic, message.partition)
            )

    def scope(self, event: Any) -> AbstractContextManager[None]:
        return event_scope(event)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        source: Any = None,
    ) -> None:
        """Queue a record; ``source`` is the event it came from, if not the one in scope
        (only ``exactly_once`` uses it)."""
        if topic not in self.topics:
            raise KeyError(f"{topic!r} is not an output of this step")
        tid = None if self.transactions is None else self._source_of(source)
        self.queued.append((topic, key, value, partition, tid))

    def _source_of(self, source: Any) -> str:
        assert self.transactions is not None
        event = source if source is not None else compat.bound_event()
        if event is not None:
            message = event.message
            return self.transactions.source_id(message.topic, message.partition)
        if len(self.offsets) == 1:
            return next(iter(self.offsets))
        raise RuntimeError(
            "under exactly_once a record of a batch of several input partitions needs its"
            " source: send it with source=event or inside outputs.scope(event)"
        )

    async def _produce(self) -> list[Awaitable[Any]]:
        """Hand the queued records to the producers; the futures of their delivery."""
        queued, self.queued = self.queued, []
        default = compat.aiokafka_producer(self.app.producer)  # type: ignore[arg-type]
        groups: dict[tuple[str | None, str, int], list[tuple[bytes | None, bytes | None]]] = {}
        known: dict[str, list[int]] = {}  # topic -> its partitions, sorted (this batch)
        up: dict[str, list[int]] = {}  # topic -> its partitions with a leader (this batch)
        cache = self.partitions
        for topic, key, value, partition, tid in queued:
            if partition is None:
                partitions = known.get(topic)
                if partitions is None:
                    # Waits for the topic's metadata if the producer has none yet.
                    partitions = known[topic] = sorted(await default.partitions_for(topic))
                    count = len(partitions)
                    if self.partition_counts.get(topic) != count or len(cache) > 100_000:
                        cache.clear()  # a key's partition depends on the partition count
                        self.partition_counts[topic] = count
                if key is None:  # a random available partition, as a plain send picks
                    available = up.get(topic)
                    if available is None:
                        cluster = default.client.cluster
                        available = up[topic] = list(cluster.available_partitions_for_topic(topic))
                    partition = _partitioner(None, partitions, available)
                else:
                    partition = cache.get((topic, key))
                    if partition is None:  # murmur2 in Python: worth remembering per key
                        partition = cache[(topic, key)] = _partitioner(key, partitions, [])
            groups.setdefault((tid, topic, partition), []).append((key, value))
        futures: list[Awaitable[Any]] = []
        producers: dict[str | None, Any] = {None: default}
        for (tid, topic, partition), records in groups.items():
            producer = producers.get(tid)
            if producer is None:
                assert self.transactions is not None
                assert tid is not None
                producer = producers[tid] = await self.transactions.producer(tid)
                self.sent_ids.add(tid)
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(timestamp=None, key=key, value=value) is not None:
                    continue
                if batch.record_count():
                    futures.append(await _send_closed(producer, batch, topic, partition))
                batch = producer.create_batch()
                if batch.append(timestamp=None, key=key, value=value) is None:  # oversized
                    futures.append(await producer.send(topic, value, key, partition))
                    batch = producer.create_batch()
            if batch.record_count():
                futures.append(await _send_closed(producer, batch, topic, partition))
        return futures

    def _queue_states(self) -> list[Layer]:
        """Queue the states' changes; the pending layers they made (confirmed on delivery)."""
        layers: list[Layer] = []
        for state in self.states:  # the batch's state changes leave with its outputs
            records = state.flush()
            if state.flushed is not None:
                layers.append((state, state.flushed))
            for topic, key, value, partition in records:
                tid = None
                if self.transactions is not None:
                    tid = self.source_ids.get(partition)
                    if tid is None:
                        raise RuntimeError(
                            f"a state change for partition {partition}, which no input of"
                            " the batch came from: under exactly_once it has no transaction"
                        )
                self.queued.append((topic, key, value, partition, tid))
        return layers

    async def delivered(self) -> None:
        """Send what is queued and wait for the broker (under ``exactly_once`` into the
        batch's open transactions, committed by :meth:`hand_over`; aborted if refused)."""
        if self.must_abort:
            await self._abort()
        layers = self._queue_states()
        if not self.queued:
            return
        futures = await self._produce()
        try:
            await _confirm(futures, layers)
        except DeliveryError:
            await self._abort()
            raise

    async def hand_over(self) -> asyncio.Future[None]:
        """Give the queued records (and the states' changes) to the producer; the future
        finishes once the broker acknowledged all of them (and, under ``exactly_once``, the
        batch's transactions committed with its offsets), or fails with
        :class:`DeliveryError`. The next batch can be computed meanwhile."""
        if self.must_abort:
            await self._abort()
        layers = self._queue_states()
        transactions, offsets = self.transactions, self.offsets
        if not self.queued and transactions is None:
            return completed()  # (a flush with nothing queued made no layer)
        futures = await self._produce() if self.queued else []
        if transactions is None:
            return asyncio.ensure_future(_confirm(futures, layers))
        self.offsets = {}  # committed once (one batch in flight under exactly_once)
        return asyncio.ensure_future(self._commit(futures, offsets, layers))

    async def _commit(
        self, futures: list[Awaitable[Any]], offsets: BatchOffsets, layers: list[Layer]
    ) -> None:
        assert self.transactions is not None
        try:
            await _confirm(futures)
        except DeliveryError:
            await self._abort()
            self.offsets = offsets  # what the failure policy sends commits them
            raise
        commit: BatchOffsets = {tid: {} for tid in self.sent_ids} | offsets
        self.sent_ids = set()
        if commit:
            await self.transactions.commit(commit)
        for state, token in layers:
            state.confirm(token)

    async def _abort(self) -> None:
        self.must_abort = False
        if self.transactions is not None and self.sent_ids:
            sent, self.sent_ids = self.sent_ids, set()
            await self.transactions.abort(sent)

    def discard(self) -> None:
        """Forget what a batch whose handling failed queued and changed (its events go to
        dead letters); what earlier batches sent is kept. Under ``exactly_once`` what it sent
        already (a step may wait for deliveries itself) is aborted before the next send."""
        self.queued.clear()
        self.must_abort = bool(self.sent_ids)
        for state in self.states:
            state.discard()

    def rollback(self) -> bool:
        """Forget every state change not yet confirmed (a batch whose outputs were refused,
        and any later one built on it); whether the step has state that was rolled back (a
        later batch in flight must then be handled again)."""
        self.queued.clear()
        for state in self.states:
            state.rollback(compensate=self.transactions is None)
        return bool(self.states)


_partitioner = DefaultPartitioner()


async def _send_closed(producer: Any, batch: Any, topic: str, partition: int) -> Any:
    """Hand a full record batch to aiokafka, closed: an open one lingers (``producer_linger``)
    before it is sent, and holds back the next batch of its partition, which aiokafka queues
    only once the last one left (one pending batch a partition)."""
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)


def completed() -> asyncio.Future[None]:
    """A delivery with nothing left to wait for."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def _confirm(futures: list[Awaitable[Any]], layers: Sequence[Layer] = ()) -> None:
    """Wait for every delivery; raise :class:`DeliveryError` if any failed, else confirm the
    states' pending ``layers`` (they may now reach RocksDB)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise DeliveryError(
            f"{len(failures)} of {len(results)} batches were not delivered: {failures[0]!r}"
        )
    for state, token in layers:
        state.confirm(token)
