"""Records on the fraud pipeline's internal topics: many rows per Kafka record.

Stages hand rows to the next stage in one record per target partition and batch, not one per
transaction, so Faust's per-event cost is paid once per batch. A record holds at most
:data:`ROWS_PER_RECORD` rows (:func:`encode_chunks`), which keeps it well inside one
producer batch and one partition fetch (``pipelines.runtime.app``): a record larger than the fetch
size is delivered only when it happens to lead a fetch response, so a partition of huge
records can stall behind busy ones. The partition is chosen by
:func:`partition_for` from the entity id (not by Kafka's key hashing), so a terminal's rows and
labels always land on the partition that owns its state. Rows are JSON arrays (orjson).

Internal records (not a public schema; the app's own topics):

* ``tx-by-terminal``: ``{"v": 1, "rows": [[tx_id, tx_time_ms, customer_id, terminal_id,
  amount, weekend, night, c1, c2, c3, c4, c5, c6, raw], ...]}`` where ``c*`` are the six
  customer features and ``raw`` the original transaction JSON (for dead letters);
* ``labels-by-terminal``: ``{"v": 1, "labels": [[tx_id, terminal_id, is_fraud,
  label_time_ms], ...]}``;
* ``fraud-training``: ``{"v": 1, "examples": [[tx_id, is_fraud, [15 features], served],
  ...]}`` where ``served`` is ``[tx_time_ms, customer_id, onnx, river, score]`` (the scores
  the payment was served with, for the live evaluation) or ``[]`` when unknown; examples
  written before it existed have three elements.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = [
    "ROWS_PER_RECORD",
    "WIRE_VERSION",
    "decode_rows",
    "encode_chunks",
    "encode_rows",
    "group_by_partition",
    "partition_for",
]

WIRE_VERSION = 1
#: About 80 kB of transaction rows: a third of a producer batch and of a partition fetch.
ROWS_PER_RECORD = 256


def partition_for(entity_id: int, partitions: int) -> int:
    """A stable partition for an entity: CRC-32 of its decimal id, modulo ``partitions``."""
    return zlib.crc32(str(entity_id).encode()) % partitions


def group_by_partition(rows: Iterable[tuple[int, Any]], partitions: int) -> dict[int, list[Any]]:
    """``{partition: [row, ...]}`` from ``(entity_id, row)`` pairs, keeping row order."""
    out: dict[int, list[Any]] = {}
    for entity, row in rows:
        out.setdefault(partition_for(entity, partitions), []).append(row)
    return out


def encode_rows(field: str, rows: list[Any]) -> bytes:
    return orjson.dumps({"v": WIRE_VERSION, field: rows})


def encode_chunks(field: str, rows: list[Any], size: int = ROWS_PER_RECORD) -> list[bytes]:
    """``rows`` as records of at most ``size`` rows each, in order (none for no rows)."""
    return [encode_rows(field, rows[i : i + size]) for i in range(0, len(rows), size)]


def decode_rows(raw: bytes, field: str) -> list[Any]:
    """The rows of an internal record; raises ``ValueError`` on anything else."""
    data = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
        raise ValueError(f"not a version-{WIRE_VERSION} internal record")
    rows = data.get(field)
    if not isinstance(rows, list):
        raise ValueError(f"internal record without {field!r}")
    return rows
