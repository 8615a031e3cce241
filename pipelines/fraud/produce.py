"""Publishing transactions and their delayed labels, from the simulator or a file.

Rows are published in event-time order. A row's label (``is_fraud``) is published when the
replay's event time passes ``tx_time + label delay``, as a bank would learn it; labels still
pending at the end are flushed last. ``rate`` paces transactions in events per second of
wall time; ``None`` publishes as fast as the broker takes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings
from processors.fraud.schemas import LABEL_SCHEMA, TRANSACTION_SCHEMA

__all__ = ["PublishReport", "encoded_rows", "publish_transactions"]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PublishReport:
    transactions: int
    labels: int
    seconds: float


def _iso_ms(values: pa.ChunkedArray[Any]) -> list[str]:
    millis = values.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
    text = np.datetime_as_string(millis.astype("datetime64[ms]"), unit="ms")
    return [f"{t}Z" for t in text.tolist()]


def encoded_rows(table: pa.Table, label_delay: timedelta) -> Iterator[tuple[str, bytes, bytes]]:
    """Yield ``(kind, key, value)`` in event-time order, kind ``"tx"`` or ``"label"``."""
    table = table.sort_by([("tx_time", "ascending"), ("tx_id", "ascending")])
    tx_ids = table.column("tx_id").to_pylist()
    customers = table.column("customer_id").to_pylist()
    terminals = table.column("terminal_id").to_pylist()
    amounts = table.column("amount").to_pylist()
    times = _iso_ms(table.column("tx_time"))
    has_labels = "is_fraud" in table.column_names
    frauds = table.column("is_fraud").to_pylist() if has_labels else []
    delay_ms = int(label_delay.total_seconds() * 1000)
    millis = table.column("tx_time").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    tx_ms = millis.to_numpy()
    label_ms = tx_ms + delay_ms
    label_times = _iso_ms(pa.chunked_array([pa.array(label_ms).cast(pa.timestamp("ms", "UTC"))]))
    next_label = 0

    def label(i: int) -> tuple[str, bytes, bytes]:
        record = {
            "schema": LABEL_SCHEMA,
            "tx_id": tx_ids[i],
            "customer_id": customers[i],
            "terminal_id": terminals[i],
            "is_fraud": bool(frauds[i]),
            "label_time": label_times[i],
        }
        return "label", str(customers[i]).encode(), orjson.dumps(record)

    for i in range(len(tx_ids)):
        while has_labels and next_label < i and label_ms[next_label] <= tx_ms[i]:
            yield label(next_label)
            next_label += 1
        record = {
            "schema": TRANSACTION_SCHEMA,
            "tx_id": tx_ids[i],
            "tx_time": times[i],
            "customer_id": customers[i],
            "terminal_id": terminals[i],
            "amount": amounts[i],
        }
        yield "tx", str(customers[i]).encode(), orjson.dumps(record)
    while has_labels and next_label < len(tx_ids):
        yield label(next_label)
        next_label += 1


def publish_transactions(
    settings: Settings,
    table: pa.Table,
    *,
    rate: float | None = None,
    label_delay: timedelta = timedelta(days=7),
    progress: Progress | None = None,
    kinds: Collection[str] = ("tx", "label"),
) -> PublishReport:
    """Publish ``table``'s rows (and labels, if it has ``is_fraud``) to the broker.

    ``kinds`` selects what is sent: ``"tx"`` (transactions) and/or ``"label"`` (labels), e.g.
    transactions now and their labels later, as a bank learns them.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **client_config(settings),
        client_id="streamwise-producer",
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    topics = {"tx": settings.topics.transactions, "label": settings.topics.transaction_labels}
    counts = {"tx": 0, "label": 0}
    started = time.monotonic()
    try:
        for kind, key, value in encoded_rows(table, label_delay):
            if kind not in kinds:
                continue
            if rate is not None and kind == "tx":
                ahead = started + counts["tx"] / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            producer.send(topics[kind], key=key, value=value)
            counts[kind] += 1
            if progress is not None and kind == "tx":
                progress(1)
        producer.flush()
    finally:
        producer.close()
    return PublishReport(counts["tx"], counts["label"], time.monotonic() - started)
