"""Reading media state back from its compacted topic, on a real broker.

A worker assigned a partition reads that partition of ``<prefix>-<pipeline>-state`` to its
end and keeps the newest value of every key: records written plainly and records of
committed transactions count, an aborted transaction's records never do, a tombstone drops
its key, and other partitions are not read.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pipelines.kafka.admin import client_config, create_topics
from pipelines.runtime.checkpoints import Checkpoints, StateReadFailed, state_spec, state_topic
from pipelines.settings import Settings


def producer(settings: Settings, transactional: bool) -> AIOKafkaProducer:
    extra: dict[str, Any] = {}
    if transactional:
        extra = {"transactional_id": f"test-{uuid.uuid4().hex[:8]}", "enable_idempotence": True}
    return AIOKafkaProducer(**client_config(settings), acks="all", **extra)


async def write(settings: Settings, topic: str) -> None:
    plain, tx = producer(settings, False), producer(settings, True)
    await plain.start()
    await tx.start()
    try:
        await plain.send_and_wait(topic, b"old", key=b"mic-1", partition=0)
        await plain.send_and_wait(topic, b"gone", key=b"mic-2", partition=0)
        await plain.send_and_wait(topic, None, key=b"mic-2", partition=0)  # tombstone
        await plain.send_and_wait(topic, b"elsewhere", key=b"mic-9", partition=2)
        async with tx.transaction():
            await tx.send_and_wait(topic, b"new", key=b"mic-1", partition=0)
            await tx.send_and_wait(topic, b"cam", key=b"mic-3", partition=1)
        await tx.begin_transaction()
        await tx.send_and_wait(topic, b"aborted", key=b"mic-1", partition=0)
        await tx.send_and_wait(topic, b"aborted", key=b"mic-4", partition=1)
        await tx.abort_transaction()
    finally:
        await plain.stop()
        await tx.stop()


def test_the_newest_committed_state_of_each_key_of_the_partitions_asked(
    settings: Settings,
) -> None:
    create_topics(settings, [state_spec(settings, "audio")])
    topic = state_topic(settings, "audio")
    checkpoints = Checkpoints(settings, topic, every_s=5.0)

    async def run() -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
        await write(settings, topic)
        both = await checkpoints.read([0, 1])
        one = await checkpoints.read([1])
        none = await checkpoints.read([])
        return both, one, none

    both, one, none = asyncio.run(run())
    assert both == {"mic-1": b"new", "mic-3": b"cam"}
    assert one == {"mic-3": b"cam"}
    assert none == {}


def test_a_topic_that_cannot_be_read_stops_the_worker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition the broker does not have is never read to its end: after its tries the
    read raises StateReadFailed (a StopWorker) instead of handing back empty state."""
    import pipelines.runtime.checkpoints as module

    monkeypatch.setattr(module, "READ_RETRY_S", 0.01)
    monkeypatch.setattr(module, "READ_TIMEOUT_S", 2.0)
    checkpoints = Checkpoints(settings, f"{settings.app_prefix}-missing-state", every_s=5.0)
    with pytest.raises(StateReadFailed, match="could not read"):
        asyncio.run(checkpoints.read([0]))
