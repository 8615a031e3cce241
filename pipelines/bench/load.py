"""The transactions bench's load: simulated payments and their labels, cut into parts.

A load is a list of items in event-time order, each a transaction or the label of an
earlier one that has fallen due, as a bank's label feed delivers them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

import orjson

from pipelines.bench.harness import BenchError
from pipelines.settings import Settings

__all__ = [
    "TX_PER_DAY",
    "Item",
    "Row",
    "label_count",
    "labels_of",
    "simulated_load",
    "split_load",
    "topics_of",
    "transactions",
]

TX_PER_DAY = 9_700  # simulator default population: about 9,700 transactions a day

Row = tuple[int, bytes, bytes]  # (tx_id, key, value)
Item = tuple[str, int, bytes, bytes]  # (kind: "tx" or "label", tx_id, key, value)


def simulated_load(count: int, label_delay: timedelta) -> list[Item]:
    """The first ``count`` simulated transactions, JSON-encoded, in event-time order, and
    between them the label of every earlier one whose label time (``label_delay`` after it)
    has come, as a bank's label feed delivers them: in steady state about one label a
    payment, each joined to its scored features and learned."""
    from pipelines.fraud.produce import encoded_rows
    from processors.fraud.simulator import SimulationConfig, simulate

    days = math.ceil(count * 1.1 / TX_PER_DAY) + 1
    table = simulate(SimulationConfig(customers=5000, terminals=10000, days=days, seed=7))
    if table.num_rows < count:
        raise BenchError(f"the simulator made {table.num_rows} rows in {days} days, not {count}")
    items: list[Item] = []
    txs = 0
    for kind, key, value in encoded_rows(table.slice(0, count), label_delay):
        if kind == "tx":
            txs += 1
        elif txs == count:
            break  # labels due after the last payment
        tx_id = int(orjson.loads(value)["tx_id"])
        # A right-sized copy: orjson (3.12 and later) returns bytes with about 4 KB allocated
        # whatever their length, and a load keeps ~900,000 of them (3.9 GB of RSS, not 0.5).
        items.append((kind, tx_id, key, memoryview(value).tobytes()))
    return items


def split_load(items: Sequence[Item], *bounds: int) -> list[list[Item]]:
    """``items`` cut after the ``bounds[0]``-th, ``bounds[1]``-th, ... transaction (counted
    from the start): a label goes with the transaction that follows it."""
    parts: list[list[Item]] = [[]]
    ends = iter(bounds)
    end = next(ends, None)
    txs = 0
    for item in items:
        while end is not None and txs == end:
            parts.append([])
            end = next(ends, None)
        parts[-1].append(item)
        txs += item[0] == "tx"
    parts += [[] for _ in range(len(bounds) + 1 - len(parts))]
    return parts


def transactions(items: Sequence[Item]) -> list[Row]:
    """The transactions of a load, as ``(tx_id, key, value)``."""
    return [(tx_id, key, value) for kind, tx_id, key, value in items if kind == "tx"]


def label_count(items: Sequence[Item]) -> int:
    """How many labels a load carries."""
    return sum(kind == "label" for kind, *_ in items)


def labels_of(items: Sequence[Item], tx_ids: set[int]) -> tuple[list[Item], list[Item]]:
    """``items`` without the labels of transactions not in ``tx_ids``, and those labels.

    A label is published only once its transaction has been predicted, as in production,
    where it comes a week later. Published together, the labels topic runs ahead of the
    transactions (the worker reads its topics independently, and routing a label costs far
    less than scoring a payment), and the scorer holds each such label with its terminal
    until the payment arrives (``early``): correct, but not the steady state measured."""
    now: list[Item] = []
    later: list[Item] = []
    for item in items:
        (later if item[0] == "label" and item[1] not in tx_ids else now).append(item)
    return now, later


def topics_of(settings: Settings) -> dict[str, str]:
    """Where each kind of item of a load is published."""
    return {"tx": settings.topics.transactions, "label": settings.topics.transaction_labels}
