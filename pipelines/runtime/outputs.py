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
from faust.types.enums import ProcessingGuarantee

from pipelines.runtime import compat
from pipelines.runtime.app import event_scope
from pipelines.runtime.state import TableState

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
    def scope(self, event: Any) -> AbstractContextManager[None]: ...

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None: ...

    async def delivered(self) -> None: ...

    async def hand_over(self) -> asyncio.Future[None]: ...

    def discard(self) -> None: ...


class FaustOutputs:
    """Sends through the app's producer; scope makes the event current for table writes.

    ``send`` only queues a record (already serialized bytes). :meth:`delivered` flushes the
    step's state changes (:class:`~pipelines.runtime.state.TableState`) into the same queue,
    hands everything to the producer as one record batch per topic partition (aiokafka's
    ``create_batch``/``send_batch``: a few microseconds a record instead of a future and a
    send call each), then waits for the broker's acknowledgement and raises if any record
    failed, so a step can finish a batch (and let it be acked) only once its outputs exist.
    Records without a partition go where aiokafka's ``DefaultPartitioner`` puts them (murmur2
    of the key, as Kafka's default; a random available partition for no key), as a plain
    send would. Under ``exactly_once`` records go one by one through Faust's producer,
    which owns the transactions. Faust's own flush before a commit ignores failed
    deliveries: a record the broker refused would be committed past silently.
    """

    def __init__(
        self, app: faust.App, topics: list[str], states: Sequence[TableState] = ()
    ) -> None:
        self.app = app
        self.topics = set(topics)
        self.states = list(states)  # flushed with each batch's outputs
        self.queued: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        conf: Any = app.conf
        self.batched = conf.processing_guarantee != ProcessingGuarantee.EXACTLY_ONCE
        self.partitions: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition
        self.partition_counts: dict[str, int] = {}

    def scope(self, event: Any) -> AbstractContextManager[None]:
        return event_scope(event)

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        if topic not in self.topics:
            raise KeyError(f"{topic!r} is not an output of this step")
        self.queued.append((topic, key, value, partition))

    async def _produce(self) -> list[Awaitable[Any]]:
        """Hand the queued records to the producer; the futures of their delivery."""
        queued, self.queued = self.queued, []
        faust_producer: Any = self.app.producer
        if not self.batched:
            return [
                await faust_producer.send(topic, key, value, partition, None, None)
                for topic, key, value, partition in queued
            ]
        producer = compat.aiokafka_producer(faust_producer)
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        known: dict[str, list[int]] = {}  # topic -> its partitions, sorted (this batch)
        up: dict[str, list[int]] = {}  # topic -> its partitions with a leader (this batch)
        cache = self.partitions
        for topic, key, value, partition in queued:
            if partition is None:
                partitions = known.get(topic)
                if partitions is None:
                    # Waits for the topic's metadata if the producer has none yet.
                    partitions = known[topic] = sorted(await producer.partitions_for(topic))
                    count = len(partitions)
                    if self.partition_counts.get(topic) != count or len(cache) > 100_000:
                        cache.clear()  # a key's partition depends on the partition count
                        self.partition_counts[topic] = count
                if key is None:  # a random available partition, as a plain send picks
                    available = up.get(topic)
                    if available is None:
                        cluster = producer.client.cluster
                        available = up[topic] = list(cluster.available_partitions_for_topic(topic))
                    partition = _partitioner(None, partitions, available)
                else:
                    partition = cache.get((topic, key))
                    if partition is None:  # murmur2 in Python: worth remembering per key
                        partition = cache[(topic, key)] = _partitioner(key, partitions, [])
            groups.setdefault((topic, partition), []).append((key, value))
        futures: list[Awaitable[Any]] = []
        for (topic, partition), records in groups.items():
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

    async def delivered(self) -> None:
        await (await self.hand_over())

    async def hand_over(self) -> asyncio.Future[None]:
        """Give the queued records (and the states' changes) to the producer; the future
        finishes once the broker acknowledged all of them, or fails with
        :class:`DeliveryError`. The next batch can be computed meanwhile."""
        for state in self.states:  # the batch's state changes leave with its outputs
            self.queued.extend(state.flush())
        if not self.queued:
            return completed()
        futures = await self._produce()
        return asyncio.ensure_future(_confirm(futures))

    def discard(self) -> None:
        """Forget the state changes of a batch that failed (its events go to dead letters)."""
        for state in self.states:
            state.discard()


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


async def _confirm(futures: list[Awaitable[Any]]) -> None:
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise DeliveryError(
            f"{len(failures)} of {len(results)} batches were not delivered: {failures[0]!r}"
        )
