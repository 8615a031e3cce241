"""Reading a single-partition (compacted) topic's newest value, once or as it changes.

A learner's checkpoints live in such a topic: a worker reads the newest at start and follows
every later one. No consumer group: each reader reads the whole partition's tail itself.

Readers are always ``read_committed``. Under ``exactly_once`` the topic is written in
transactions: an aborted record must never be read, and the end offset is then the last
stable offset, whose record before it may be a transaction's commit marker (a control record
no reader sees) rather than a value. Under ``at_least_once`` nothing is transactional, the last
stable offset is the high watermark and ``read_committed`` reads exactly what
``read_uncommitted`` would; a topic still holding transactions of an earlier ``exactly_once``
run is read correctly either way. The newest value is therefore found by reading the tail up
to the end offset and keeping the last record, stepping further back while the tail holds
none (markers and aborted records only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings

__all__ = ["ISOLATION_LEVEL", "follow_latest", "latest_value"]

log = logging.getLogger(__name__)

RETRY_S = 5.0
ISOLATION_LEVEL = "read_committed"
TAIL = 16  # records read back from the end first; four times as many at each step back
_FIND_S = 60.0  # how long follow_latest may take to find the newest value


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_config(settings),
        enable_auto_commit=False,
        isolation_level=ISOLATION_LEVEL,
        auto_offset_reset="earliest",  # a tail start compacted or deleted away: read on
    )


async def _read_to(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, deadline: float
) -> tuple[bool, bytes | None]:
    """Read from the current position until it reaches ``end``; ``(found, value)`` of the
    last record read (``found`` false: only markers and aborted records were there)."""
    found, value = False, None
    while await consumer.position(tp) < end:
        left = deadline - monotonic()
        if left <= 0:
            raise TimeoutError(f"{tp.topic} not read to offset {end} in time")
        batches = await consumer.getmany(tp, timeout_ms=max(1, int(min(left, 1.0) * 1000)))
        records = batches.get(tp, [])
        if records:
            found, value = True, records[-1].value
    return found, value


async def _newest(
    consumer: AIOKafkaConsumer, tp: TopicPartition, deadline: float
) -> tuple[bool, bytes | None]:
    """``(found, value)`` of the newest committed record of ``tp`` (assigned to
    ``consumer``), which is left positioned after it."""
    end = (await consumer.end_offsets([tp]))[tp]
    first = (await consumer.beginning_offsets([tp]))[tp]
    back, start = TAIL, end
    while start > first:
        start = max(end - back, first)
        consumer.seek(tp, start)
        found, value = await _read_to(consumer, tp, end, deadline)
        if found:
            return True, value
        back *= 4
    consumer.seek(tp, end)
    return False, None


async def latest_value(settings: Settings, topic: str, timeout_s: float = 30.0) -> bytes | None:
    """The value of the newest committed record of ``topic`` (partition 0), or ``None`` if it
    has none; raises :class:`TimeoutError` if it cannot be read within ``timeout_s``."""
    tp = TopicPartition(topic, 0)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign([tp])
        _, value = await _newest(consumer, tp, monotonic() + timeout_s)
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
        consumer = _consumer(settings)
        try:
            await consumer.start()
            consumer.assign([tp])
            _, value = await _newest(consumer, tp, monotonic() + _FIND_S)
            if value:
                apply(value)
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
