"""The producer's event-time ordering: labels follow their transaction after the delay."""

from __future__ import annotations

from datetime import timedelta

import orjson

from pipelines.fraud.produce import encoded_rows
from processors.fraud.schemas import Label, Transaction, decode_label, decode_transaction
from processors.fraud.simulator import SimulationConfig, simulate


def test_labels_are_published_after_the_delay_in_event_time() -> None:
    table = simulate(SimulationConfig(customers=60, terminals=120, days=12, seed=3))
    rows = list(encoded_rows(table, timedelta(days=2)))
    txs = [decode_transaction(v) for k, _, v in rows if k == "tx"]
    labels = [decode_label(v) for k, _, v in rows if k == "label"]
    assert len(txs) == len(labels) == table.num_rows
    assert all(isinstance(t, Transaction) for t in txs)
    assert all(isinstance(lb, Label) for lb in labels)
    # Event-time order: the labels published just before a transaction are due by its time
    # (label_time <= tx_time), and a label always follows its own transaction.
    published: set[int] = set()
    pending: list[Label] = []
    for kind, key, value in rows:
        record = orjson.loads(value)
        assert key == str(record["customer_id"]).encode()
        if kind == "tx":
            tx = decode_transaction(value)
            assert isinstance(tx, Transaction)
            assert all(label.label_time <= tx.tx_time for label in pending)
            pending.clear()
            published.add(tx.tx_id)
        else:
            label = decode_label(value)
            assert isinstance(label, Label)
            assert label.tx_id in published
            pending.append(label)
    assert pending, "labels due after the last transaction are flushed at the end"
    frauds = sum(1 for lb in labels if isinstance(lb, Label) and lb.is_fraud)
    assert frauds == int(table.column("is_fraud").to_numpy().sum())


def test_a_table_without_labels_publishes_transactions_only() -> None:
    table = simulate(SimulationConfig(customers=20, terminals=40, days=3, seed=1))
    rows = list(encoded_rows(table.drop_columns(["is_fraud"]), timedelta(days=7)))
    assert {k for k, _, _ in rows} == {"tx"}
    assert len(rows) == table.num_rows
