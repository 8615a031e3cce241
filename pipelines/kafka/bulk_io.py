"""Records in bulk, for tools that measure a worker beside it: paced sends, a raw
topic-to-topic copy and a reader from the start of a topic.

All three use aiokafka, not kafka-python: its record batches are built and parsed in C.
kafka-python's producer took about half a core at 5,000 records/s, and its pure-Python
parsing about three quarters of a core at 6,000 records/s, on the cores of the worker the
bench measures. Each call runs its own event loop, so callers stay synchronous.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings

__all__ = ["CLIENT", "Outgoing", "Sent", "copy_topic", "read_from_start", "send_records"]

#: The client library these functions use, named beside the rates a report shows for them.
CLIENT = "aiokafka"

Outgoing = tuple[str, bytes | None, bytes]  # (topic, key, value)


@dataclass(frozen=True)
class Sent:
    """What :func:`send_records` did: each record's send time and how long it all took."""

    stamps_ms: list[int]  # per record, in order: epoch ms, also the record's timestamp
    seconds: float  # from the first send to the last delivery


def send_records(
    settings: Settings,
    records: Sequence[Outgoing],
    per_second: float | None = None,
    client_id: str = "streamwise-bulk",
) -> Sent:
    """Publish ``records``, each to its topic, in order: paced at ``per_second`` or at once.

    Paced, every record due by now goes out stamped with the time it went, then the sender
    sleeps until the next one is due; it returns once every record is delivered."""
    return asyncio.run(_send(settings, records, per_second, client_id))


async def _send(
    settings: Settings, records: Sequence[Outgoing], per_second: float | None, client_id: str
) -> Sent:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **client_config(settings),
        client_id=client_id,
        acks="all",
        linger_ms=5 if per_second else 20,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    stamps: list[int] = []
    try:
        deliveries: list[asyncio.Future[Any]] = []
        started = time.perf_counter()
        i = 0
        while i < len(records):
            # `due` never falls: the clock is monotonic.
            due = (
                len(records)
                if per_second is None
                else int((time.perf_counter() - started) * per_second) + 1
            )
            end = min(due, len(records))
            now_ms = time.time_ns() // 1_000_000
            for topic, key, value in records[i:end]:
                deliveries.append(await producer.send(topic, value, key, timestamp_ms=now_ms))
                stamps.append(now_ms)
            i = end
            if per_second is not None and i < len(records):
                await asyncio.sleep(max(0.0, started + i / per_second - time.perf_counter()))
        await producer.flush()
        await asyncio.gather(*deliveries)
        return Sent(stamps, time.perf_counter() - started)
    finally:
        await producer.stop()


def copy_topic(
    settings: Settings, source: str, sink: str, count: int, group: str, timeout_s: float
) -> float:
    """Copy ``count`` records of ``source`` from its start to ``sink``, key and value
    unchanged, in consumer group ``group`` (committed at the end): no decoding, no state.
    Return records a second from the first record read to the last delivery; raise
    ``TimeoutError`` if fewer than ``count`` came within ``timeout_s``."""
    return asyncio.run(_copy(settings, source, sink, count, group, timeout_s))


async def _copy(
    settings: Settings, source: str, sink: str, count: int, group: str, timeout_s: float
) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    config = client_config(settings)
    consumer = AIOKafkaConsumer(
        source, **config, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    producer = AIOKafkaProducer(**config, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        started: float | None = None
        seen = 0
        deliveries: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(timeout_s):
                while seen < count:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
                    for records in batches.values():
                        if records and started is None:
                            started = time.perf_counter()
                        for r in records:
                            deliveries.append(await producer.send(sink, r.value, r.key))
                        seen += len(records)
        except TimeoutError:
            raise TimeoutError(f"read {seen} of {count} records in {timeout_s} s") from None
        await producer.flush()
        await asyncio.gather(*deliveries)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        await consumer.commit()
        return count / elapsed
    finally:
        await consumer.stop()
        await producer.stop()


def read_from_start(
    settings: Settings,
    topic: str,
    on_batch: Callable[[list[tuple[bytes, int]]], None],
    stop: Callable[[], bool],
    client_id: str = "streamwise-reader",
    isolation_level: str = "read_uncommitted",
) -> None:
    """Read every partition of ``topic`` from its start, outside any consumer group, and
    hand each fetch's ``(value, Kafka timestamp ms)`` pairs (records without a value left
    out) to ``on_batch``, until ``stop()`` is true (checked at least every 200 ms).
    ``read_committed`` reads only committed transactions' records, once they committed."""
    asyncio.run(_read(settings, topic, on_batch, stop, client_id, isolation_level))


async def _read(
    settings: Settings,
    topic: str,
    on_batch: Callable[[list[tuple[bytes, int]]], None],
    stop: Callable[[], bool],
    client_id: str,
    isolation_level: str,
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **client_config(settings),
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.topics.partitions)])
        await consumer.seek_to_beginning()
        while not stop():
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = [
                (r.value, int(r.timestamp))
                for records in batches.values()
                for r in records
                if r.value is not None
            ]
            if got:
                on_batch(got)
    finally:
        await consumer.stop()
