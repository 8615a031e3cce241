"""Reading an output topic for people (one readable line each) or scripts (JSON lines)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings

__all__ = ["format_record", "tail"]


def _preview(value_b64: str | None, limit: int = 60) -> str:
    if value_b64 is None:
        return "<no value>"
    raw = base64.b64decode(value_b64)
    text = raw[:limit].decode("utf-8", errors="replace")
    return repr(text) + ("…" if len(raw) > limit else "")


def format_record(data: Any) -> str:
    """One line for a record of any streamwise schema (unknown JSON is printed as is)."""
    if not isinstance(data, dict):
        return orjson.dumps(data).decode()
    schema = str(data.get("schema", ""))
    if schema.startswith("alert/"):
        reasons = "; ".join(str(r) for r in data.get("reasons", []))
        return (
            f"{data.get('event_time')}  ALERT {data.get('kind')}  {data.get('entity')}  "
            f"score {data.get('score'):.3f} >= {data.get('threshold')}  "
            f"event {data.get('event_id')}  {reasons}"
        )
    if schema.startswith("prediction/"):
        flag = "ALERT" if data.get("is_alert") else "ok   "
        return (
            f"{data.get('event_time')}  {flag}  {data.get('entity')}  "
            f"score {data.get('score'):.3f}  event {data.get('event_id')}"
        )
    if schema.startswith("dead-letter/"):
        src = data.get("source", {})
        return (
            f"{data.get('failed_at')}  DEAD {data.get('reason')}  step {data.get('step')}  "
            f"{src.get('topic')}/{src.get('partition')}@{src.get('offset')}  "
            f"{data.get('detail')}  value {_preview(data.get('value_b64'))}"
        )
    return orjson.dumps(data).decode()


def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    timeout_s: float | None = None,
    on_record: Callable[[Any], None],
) -> int:
    """Call ``on_record`` for each record read; stop after ``limit`` or ``timeout_s`` idle."""
    count = 0
    for data in _records(settings, topic, from_beginning, timeout_s):
        on_record(data)
        count += 1
        if limit is not None and count >= limit:
            break
    return count


def _records(
    settings: Settings, topic: str, from_beginning: bool, timeout_s: float | None
) -> Iterator[Any]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        **client_config(settings),
        client_id="streamwise-tail",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist on {settings.broker_url}")
        from kafka import TopicPartition

        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        idle_since = time.monotonic()
        # kafka-python has been seen returning a record twice (the demo printed one alert
        # twice that the topic holds once); a sequential reader never needs an offset again.
        seen: dict[int, int] = {}
        while timeout_s is None or time.monotonic() - idle_since < timeout_s:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    if record.offset <= seen.get(record.partition, -1):
                        continue
                    seen[record.partition] = record.offset
                    idle_since = time.monotonic()
                    try:
                        yield orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        yield {"raw": record.value.decode("utf-8", errors="replace")}
    finally:
        consumer.close()
