"""The broker's own speed, and the bench's way of publishing a load.

The raw passthrough copies records, value unchanged, from one topic to another: no decoding,
no state, no scoring: roughly the most a Python consumer that also produces can do here,
hence the baseline a pipeline worker is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.bench.harness import BenchError, timeout_for
from pipelines.bench.host import host_reference_us
from pipelines.bench.load import Item, label_count
from pipelines.kafka.bulk_io import copy_topic, send_records
from pipelines.settings import Settings

__all__ = ["passthrough", "preload", "send_items"]


def send_items(
    settings: Settings, topics: dict[str, str], items: Sequence[Item], rate: float | None, name: str
) -> tuple[dict[str, int], float]:
    """Publish ``items``, each to the topic of its kind (at ``rate`` transactions per second,
    the labels between them in their order, or at once); return the send time (epoch ms, also
    the record's timestamp) per transaction id and the rate of transactions reached."""
    txs = len(items) - label_count(items)
    per_second = None if rate is None else rate * len(items) / max(txs, 1)
    records = [(topics[kind], key, value) for kind, _, key, value in items]
    sent = send_records(settings, records, per_second, f"{settings.app_prefix}-{name}")
    stamps = {
        str(tx_id): ms
        for (kind, tx_id, _, _), ms in zip(items, sent.stamps_ms, strict=True)
        if kind == "tx"
    }
    return stamps, txs / sent.seconds


def preload(settings: Settings, topics: dict[str, str], items: Sequence[Item]) -> float:
    """Publish ``items`` as fast as the broker takes them; return transactions per second."""
    return send_items(settings, topics, items, None, "preload")[1]


def passthrough(
    settings: Settings, source: str, sink: str, events: int, round_: str
) -> tuple[float, float]:
    """Copy ``events`` records of ``source`` to ``sink`` from the start, in a consumer group
    of its own for each ``round_``: records a second, and the host reference
    (:func:`host_reference_us`) timed just before, on the same state of the host."""
    reference_us = host_reference_us()
    group = f"{settings.app_prefix}-passthrough-{round_}"
    try:
        rate = copy_topic(settings, source, sink, events, group, timeout_for(events))
    except TimeoutError as exc:
        raise BenchError(f"passthrough {exc}") from exc
    return rate, reference_us
