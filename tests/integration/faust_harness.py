"""A runtime Faust app run inside a test's event loop, and plain Kafka clients to check it.

The app is the worker's own (:func:`~pipelines.runtime.app.create_app`), started with mode's
public ``Service.start()`` and stopped with ``stop()``; what it did is read back with
kafka-python, which shares no code with the runtime: what the group committed, which records
a topic holds. Blocking clients run in a thread so the app's loop keeps serving its group.
Deadlines here only turn a hang into a failure; no test asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust

from pipelines.kafka.admin import TopicSpec, client_config, create_topics
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import FaustOutputs, completed
from pipelines.runtime.policies import FailurePolicies
from pipelines.runtime.steps import DeadLetterSink, Handover
from pipelines.settings import PolicySettings, Settings

__all__ = [
    "DEADLINE_S",
    "BatchLog",
    "ContractStep",
    "collector",
    "committed",
    "dead_letter_sink",
    "new_topic",
    "produce",
    "read_records",
    "running",
    "set_committed",
    "wait_for",
    "wait_until",
]

DEADLINE_S = 60.0
T = TypeVar("T")


def new_topic(settings: Settings, name: str, partitions: int) -> str:
    """Create the test's own topic ``<app prefix>-<name>``; its full name."""
    topic = f"{settings.app_prefix}-{name}"
    create_topics(settings, [TopicSpec(topic, partitions, {}, "contract test")])
    return topic


@asynccontextmanager
async def running(app: faust.App) -> AsyncIterator[faust.App]:
    """``app`` started (its partitions assigned, its tables recovered) until the block ends.

    It stops without waiting for unacked messages (Faust's ``stream_wait_empty``): the tests
    leave some unacked on purpose, and Faust would wait for them forever.
    """
    await asyncio.wait_for(app.start(), DEADLINE_S)
    try:
        yield app
    finally:
        app.conf.stream_wait_empty = False
        await app.stop()


async def wait_until(ready: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Return once ``ready()`` holds; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    what: str,
    timeout_s: float = DEADLINE_S,
) -> T:
    """Ask ``probe()`` until its answer is ``ok``; that answer (fail with the last one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await probe()
        if ok(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}; last answer {answer!r}")
        await asyncio.sleep(0.2)


def _produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes, int | None]]
) -> list[tuple[int, int]]:
    from kafka import KafkaProducer

    producer = KafkaProducer(**client_config(settings), acks="all")
    try:
        futures = [producer.send(topic, key=k, value=v, partition=p) for k, v, p in records]
        producer.flush()
        return [(f.get().partition, f.get().offset) for f in futures]
    finally:
        producer.close()


async def produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes, int | None]]
) -> list[tuple[int, int]]:
    """Send ``(key, value, partition)`` records with kafka-python's producer (a ``None``
    partition: its default partitioner picks); the ``(partition, offset)`` of each."""
    return await asyncio.to_thread(_produce, settings, topic, records)


def _read_records(settings: Settings, topic: str, at_least: int) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client_config(settings), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                found.extend(batch)
            ends = consumer.end_offsets(tps)
            if len(found) >= at_least and all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


async def read_records(settings: Settings, topic: str, at_least: int = 0) -> list[Any]:
    """kafka-python's records of every partition of ``topic``, by partition and offset: all
    of them once at least ``at_least`` exist (or what there is at the deadline)."""
    return await asyncio.to_thread(_read_records, settings, topic, at_least)


def _committed(settings: Settings, group: str, topic: str, partition: int) -> int | None:
    from kafka import KafkaAdminClient, TopicPartition

    admin = KafkaAdminClient(**client_config(settings))
    try:
        tp = TopicPartition(topic, partition)
        offsets = admin.list_group_offsets({group: [tp]}).get(group, {})
        found = offsets.get(tp)
        return None if found is None or found.offset < 0 else int(found.offset)
    finally:
        admin.close()


async def committed(settings: Settings, group: str, topic: str, partition: int) -> int | None:
    """The offset ``group`` has committed for the partition, as the coordinator says."""
    return await asyncio.to_thread(_committed, settings, group, topic, partition)


def set_committed(settings: Settings, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit ``offset`` for an empty ``group`` with kafka-python's admin client."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.structs import OffsetAndMetadata

    admin = KafkaAdminClient(**client_config(settings))
    try:
        admin.alter_group_offsets(
            group, {TopicPartition(topic, partition): OffsetAndMetadata(offset)}
        )
    finally:
        admin.close()


def collector(app: faust.App, channel: faust.TopicT, name: str) -> list[Any]:
    """Declare agent ``name`` on ``channel`` that keeps every event it gets, unacked (the
    test acks what it wants to); the list it fills."""
    events: list[Any] = []

    async def agent(stream: Any) -> None:
        async for event in stream.noack().events():
            events.append(event)

    app.agent(channel, name=name)(agent)
    return events


def dead_letter_sink(app: faust.App, topic: str) -> DeadLetterSink:
    """The runtime's dead-letter sink to ``topic`` through the app's producer."""
    return DeadLetterSink(FaustOutputs(app, [topic]), topic, StepMetrics())


@dataclass
class ContractStep:
    """A step as the runtime runs it (:class:`~pipelines.runtime.steps.Step`): ``work`` on
    each batch, the default failure policies (dead letters)."""

    name: str
    dead: DeadLetterSink
    work: Callable[[Sequence[Any]], Awaitable[None]]
    failures: FailurePolicies = field(init=False)

    def __post_init__(self) -> None:
        self.failures = FailurePolicies(PolicySettings(), self.dead)

    async def handle(self, events: Sequence[Any]) -> None:
        await self.work(events)


class BatchLog:
    """A bulk step's start that records each batch and hands it over delivered at once;
    while ``gate`` is closed it waits for the test to open it first."""

    def __init__(self, dead: DeadLetterSink) -> None:
        self.dead = dead
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def offsets(self, partition: int) -> list[int]:
        """The offsets of ``partition`` the batches held, in the order they came."""
        return [
            e.message.offset
            for batch in self.batches
            for e in batch
            if e.message.partition == partition
        ]

    async def start(self, events: list[Any]) -> Handover:
        self.batches.append(list(events))
        await self.gate.wait()
        return Handover(
            "contract", events, completed(), FailurePolicies(PolicySettings(), self.dead)
        )
