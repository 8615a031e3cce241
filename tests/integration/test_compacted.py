"""The newest value of a checkpoint topic, on a real broker, written plainly or in transactions.

Under ``exactly_once`` the learner's checkpoints are written in Kafka transactions: the
partition's last offset is then a commit marker, not a record, and an aborted or still open
transaction's records must never be read. Plain records (``at_least_once``) read the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipelines.kafka.admin import client_config
from pipelines.kafka.compacted import TAIL, follow_latest, latest_value
from pipelines.settings import Settings

T = TypeVar("T")


@pytest.fixture
def topic(broker_settings: Settings) -> str:
    """A new compacted single-partition topic, as the learner's checkpoints have."""
    name = f"t{uuid.uuid4().hex[:8]}-learner"

    async def create() -> None:
        admin = AIOKafkaAdminClient(**client_config(broker_settings))
        await admin.start()
        try:
            config = {"cleanup.policy": "compact"}
            await admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
        finally:
            await admin.close()

    asyncio.run(create())
    return name


def producer(settings: Settings, transactional: bool) -> AIOKafkaProducer:
    extra: dict[str, Any] = {}
    if transactional:
        extra = {"transactional_id": f"test-{uuid.uuid4().hex[:8]}", "enable_idempotence": True}
    return AIOKafkaProducer(**client_config(settings), acks="all", **extra)


@asynccontextmanager
async def started(p: AIOKafkaProducer) -> AsyncIterator[AIOKafkaProducer]:
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def committed(p: AIOKafkaProducer, topic: str, *values: bytes) -> None:
    async with p.transaction():
        for value in values:
            await p.send_and_wait(topic, value, key=b"fraud-learner", partition=0)


async def aborted(p: AIOKafkaProducer, topic: str, *values: bytes) -> None:
    await p.begin_transaction()
    for value in values:
        await p.send_and_wait(topic, value, key=b"fraud-learner", partition=0)
    await p.abort_transaction()


async def settled(settings: Settings, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until no transaction of ``topic`` is pending: its commit and abort markers are
    written (the coordinator writes them after ``commit_transaction`` returns), so the last
    stable offset, where ``read_committed`` ends, is the high watermark."""
    tp = TopicPartition(topic, 0)
    readers = [
        AIOKafkaConsumer(**client_config(settings), isolation_level=level)
        for level in ("read_committed", "read_uncommitted")
    ]
    for reader in readers:
        await reader.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            stable, high = [(await r.end_offsets([tp]))[tp] for r in readers]
            if stable == high:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{topic}: {stable} < {high}"
            await asyncio.sleep(0.05)
    finally:
        for reader in readers:
            await reader.stop()


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 120))


def test_an_empty_topic_has_no_latest_value(broker_settings: Settings, topic: str) -> None:
    assert run(lambda: latest_value(broker_settings, topic)) is None


def test_plain_records_give_the_newest(broker_settings: Settings, topic: str) -> None:
    async def scenario() -> list[bytes | None]:
        seen = []
        async with started(producer(broker_settings, transactional=False)) as p:
            await p.send_and_wait(topic, b"v1", key=b"fraud-learner", partition=0)
            seen.append(await latest_value(broker_settings, topic))
            for i in range(2, 2 + TAIL * 3):
                await p.send_and_wait(topic, f"v{i}".encode(), key=b"k", partition=0)
            seen.append(await latest_value(broker_settings, topic))
        return seen

    assert run(scenario) == [b"v1", f"v{1 + TAIL * 3}".encode()]


def test_the_newest_committed_value_is_read_never_an_aborted_or_open_one(
    broker_settings: Settings, topic: str
) -> None:
    async def scenario() -> list[bytes | None]:
        seen = []
        async with started(producer(broker_settings, transactional=True)) as p:
            await committed(p, topic, b"c1")
            await settled(broker_settings, topic)
            seen.append(await latest_value(broker_settings, topic))  # end - 1 is a marker
            await committed(p, topic, b"c2", b"c3")
            await aborted(p, topic, b"a1")
            await settled(broker_settings, topic)
            seen.append(await latest_value(broker_settings, topic))
            # A tail longer than the first look back, of aborted records and markers only.
            for i in range(TAIL):
                await aborted(p, topic, f"a{i}".encode(), f"b{i}".encode())
            await settled(broker_settings, topic)
            seen.append(await latest_value(broker_settings, topic))
            await p.begin_transaction()  # open: not committed yet, so not read
            await p.send_and_wait(topic, b"open", key=b"fraud-learner", partition=0)
            seen.append(await latest_value(broker_settings, topic, timeout_s=20))
            await p.commit_transaction()
            await settled(broker_settings, topic)
            seen.append(await latest_value(broker_settings, topic))
        return seen

    assert run(scenario) == [b"c1", b"c3", b"c3", b"c3", b"open"]


def test_only_aborted_records_is_no_value(broker_settings: Settings, topic: str) -> None:
    async def scenario() -> bytes | None:
        async with started(producer(broker_settings, transactional=True)) as p:
            await aborted(p, topic, b"a1", b"a2")
        await settled(broker_settings, topic)
        return await latest_value(broker_settings, topic)

    assert run(scenario) is None


@pytest.mark.parametrize("transactional", [False, True], ids=["plain", "transactions"])
def test_a_follower_applies_the_newest_then_each_committed_value(
    broker_settings: Settings, topic: str, transactional: bool
) -> None:
    async def send(p: AIOKafkaProducer, value: bytes) -> None:
        if transactional:
            await committed(p, topic, value)
        else:
            await p.send_and_wait(topic, value, key=b"fraud-learner", partition=0)

    async def scenario() -> list[bytes]:
        applied: list[bytes] = []
        changed = asyncio.Condition()

        def apply(value: bytes) -> None:
            applied.append(value)
            asyncio.get_running_loop().create_task(notify())

        async def notify() -> None:
            async with changed:
                changed.notify_all()

        async def until(last: bytes) -> None:
            async with changed:
                await changed.wait_for(lambda: bool(applied) and applied[-1] == last)

        async with started(producer(broker_settings, transactional)) as p:
            await send(p, b"old")
            await send(p, b"start")
            if transactional:
                await aborted(p, topic, b"aborted-before")
            await settled(broker_settings, topic)
            ready = asyncio.Event()
            follower = asyncio.create_task(follow_latest(broker_settings, topic, apply, ready))
            try:
                await asyncio.wait_for(ready.wait(), 60)
                await asyncio.wait_for(until(b"start"), 60)
                if transactional:
                    await aborted(p, topic, b"aborted-after")
                await send(p, b"next")
                await asyncio.wait_for(until(b"next"), 60)
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
        return applied

    assert run(scenario) == [b"start", b"next"]
