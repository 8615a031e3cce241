"""TableState over a real Faust table (RocksDB store on disk), without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.app import create_app, event_scope
from pipelines.fraud_wire import decode_rows, encode_chunks
from pipelines.settings import Settings
from pipelines.table_state import TableState
from tests.pipelines.fakes import FakeEvent, FakeMessage


def state_of(home: Path) -> tuple[Any, Any, TableState]:
    app = create_app(Settings(home=home, app_prefix="ts"), "transactions")
    table = app.Table(
        "windows", default=None, partitions=4, key_type=int, value_type=bytes, help="test"
    )
    return app, table, TableState(app, table)


def on_partition(partition: int) -> FakeEvent:
    return FakeEvent(FakeMessage("transactions", partition, 0, None, b""))


def test_writes_are_read_back_at_once_and_reach_store_and_changelog_only_on_flush(
    home: Path,
) -> None:
    _, table, state = state_of(home)
    with event_scope(on_partition(2)):  # type: ignore[arg-type]
        state[7] = b"first"
        state[7] = b"second"  # one changelog record per key and batch, the last value
        state[9] = b"other"
    assert state[7] == b"second"
    assert state.get(9) == b"other"
    assert table.get(7) is None  # nothing reached the store yet

    changelog = state.flush()

    topic = table.changelog_topic.get_topic_name()
    keys = {table.data._encode_key(k): k for k in (7, 9)}
    assert sorted((t, keys[k], v, p) for t, k, v, p in changelog) == [
        (topic, 7, b"second", 2),
        (topic, 9, b"other", 2),
    ]
    assert table.get(7) == b"second"
    assert table.get(9) == b"other"
    assert state.flush() == []  # flushed once


def test_a_discarded_batch_leaves_the_store_as_it_was(home: Path) -> None:
    _, _, state = state_of(home)
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[3] = b"kept"
    state.flush()
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[3] = b"half-made"
    state.discard()
    assert state[3] == b"kept"  # read again from the store, not from the dropped cache
    assert state.flush() == []


def test_missing_keys_and_writes_outside_an_event(home: Path) -> None:
    _, _, state = state_of(home)
    assert state.get(42) is None
    assert state.get(42, b"d") == b"d"
    with pytest.raises(KeyError):
        state[42]
    with pytest.raises(RuntimeError, match="scope"):
        state[42] = b"x"


def test_a_rebalance_drops_the_cache(home: Path) -> None:
    app, table, state = state_of(home)
    with event_scope(on_partition(0)):  # type: ignore[arg-type]
        state[5] = b"mine"
    state.flush()
    table.data._db_for_partition(0).put(table.data._encode_key(5), b"recovered")
    assert state[5] == b"mine"  # cached
    app.consumer_generation_id = (app.consumer_generation_id or 0) + 1
    assert state[5] == b"recovered"  # read from the store after the rebalance


def test_internal_records_are_chunked_in_order() -> None:
    rows = [[i, i * 2] for i in range(600)]
    records = encode_chunks("rows", rows, size=256)
    assert [len(decode_rows(r, "rows")) for r in records] == [256, 256, 88]
    assert [row for r in records for row in decode_rows(r, "rows")] == rows
    assert encode_chunks("rows", []) == []
