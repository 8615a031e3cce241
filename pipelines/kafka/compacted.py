"""Reading a single-partition (compacted) topic's newest value, once or as it changes.

A learner's checkpoints live in such a topic: a worker reads the newest at start and follows
every later one. No consumer group: each reader reads the whole partition's tail itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings

__all__ = ["follow_latest", "latest_value"]

log = logging.getLogger(__name__)

RETRY_S = 5.0


async def latest_value(settings: Settings, topic: str, timeout_s: float = 30.0) -> bytes | None:
    """The value of the newest record of ``topic`` (partition 0), or ``None`` if it is empty."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(**client_config(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None
        consumer.seek(tp, end - 1)
        record = await asyncio.wait_for(consumer.getone(), timeout_s)
        value: bytes | None = record.value
        return value
    finally:
        await consumer.stop()


async def follow_latest(
    settings: Settings,
    topic: str,
    apply: Callable[[bytes], None],
    ready: asyncio.Event,
) -> None:
    """Call ``apply`` with the newest value of ``topic`` (partition 0) and with each newer one,
    forever; ``ready`` is set once the newest at start is applied (at once if there is none).

    A failure (a broker restart) is logged and the reader reconnects after :data:`RETRY_S`;
    ``ready`` is set then too, so that waiters go on with what they have.
    """
    tp = TopicPartition(topic, 0)
    while True:
        consumer = AIOKafkaConsumer(**client_config(settings), enable_auto_commit=False)
        try:
            await consumer.start()
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, max(end - 1, 0))
            if end == 0:
                ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                records = [r for batch in batches.values() for r in batch]
                if records and records[-1].value:
                    apply(records[-1].value)
                    ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: log, wait, reconnect
            log.warning("reading %s failed (%s); retrying in %g s", topic, exc, RETRY_S)
            ready.set()
            await asyncio.sleep(RETRY_S)
        finally:
            await consumer.stop()
