"""TableState over a real Faust table (RocksDB store on disk), without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.runtime.app import create_app, event_scope
from pipelines.runtime.state import Record, TableState, drop, load, put, read, save
from pipelines.settings import Settings
from processors.fraud.wire import decode_rows, encode_chunks
from tests.pipelines.fakes import FakeEvent, FakeMessage


def state_of(home: Path, **limits: int) -> tuple[Any, Any, TableState]:
    app = create_app(Settings(home=home, app_prefix="ts"), "transactions")
    table = app.Table(
        "windows", default=None, partitions=4, key_type=int, value_type=bytes, help="test"
    )
    return app, table, TableState(app, table, **limits)


def delivered(state: TableState) -> list[Record]:
    """Flush, as a batch's outputs leave, and confirm, as the broker acknowledges them."""
    records = state.flush()
    if state.flushed is not None:
        state.confirm(state.flushed)
    return records


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

    changelog = delivered(state)

    topic = table.changelog_topic.get_topic_name()
    keys = {table.data._encode_key(k): k for k in (7, 9)}
    assert sorted((t, keys[k], v, p) for t, k, v, p in changelog) == [
        (topic, 7, b"second", 2),
        (topic, 9, b"other", 2),
    ]
    assert table.get(7) is None  # in the changelog records, not yet in RocksDB
    assert state[7] == b"second"
    assert state.flush() == []  # flushed once

    state.write_back()
    assert table.get(7) == b"second"
    assert table.get(9) == b"other"
    assert state.unwritten == {}


def test_flushed_values_reach_rocksdb_oldest_first_as_they_pass_the_budget(home: Path) -> None:
    _, table, state = state_of(home, max_unwritten_bytes=40)
    key = {k: table.data._encode_key(k) for k in (1, 2, 3)}
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[1] = b"x" * 10
    delivered(state)
    assert table.get(1) is None  # one key and 10 bytes: under the budget
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[1] = b"y" * 10  # the same key again: its newer value replaces the older
    delivered(state)
    assert table.get(1) is None
    assert state.unwritten_bytes == len(key[1]) + 10
    with event_scope(on_partition(3)):  # type: ignore[arg-type]
        state[2] = b"z" * 25
    delivered(state)  # 11 + 26 bytes: under the budget
    assert (table.get(1), table.get(2)) == (None, None)
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[1] = b"w" * 10  # changed again: it keeps its place as the oldest
        state[3] = b"v" * 5
    delivered(state)  # 11 + 26 + 6 = 43 bytes, 3 over: the oldest value is written
    assert (table.get(1), table.get(2), table.get(3)) == (b"w" * 10, None, None)
    assert state.unwritten == {(3, key[2]): b"z" * 25, (1, key[3]): b"v" * 5}
    assert state.unwritten_bytes == 32
    assert (state[2], state[3]) == (b"z" * 25, b"v" * 5)  # the rest is still read back
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[4] = b"u" * 35
    delivered(state)  # 32 + 36 = 68 bytes, 28 over: both older values go, to their partitions
    assert (table.get(2), table.get(3), table.get(4)) == (b"z" * 25, b"v" * 5, None)
    assert table.data._db_for_partition(3).get(key[2]) == b"z" * 25
    assert state.unwritten_bytes == len(table.data._encode_key(4)) + 35
    state.write_back()  # everything
    assert table.get(4) == b"u" * 35
    assert (state.unwritten, state.unwritten_bytes) == ({}, 0)


def test_a_discarded_batch_leaves_the_store_as_it_was(home: Path) -> None:
    _, _, state = state_of(home)
    with event_scope(on_partition(1)):  # type: ignore[arg-type]
        state[3] = b"kept"
    delivered(state)
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
    delivered(state)
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


class Counter:
    """A decoded value: how many times it was decoded and encoded shows what was cached."""

    decoded = 0

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Counter:
        cls.decoded += 1
        return cls(int(raw or b"0"))

    def to_bytes(self) -> bytes:
        return str(self.n).encode()


def change(state: TableState, key: int, n: int, event: FakeEvent) -> None:
    """What a step does with a decoded value: load it, change it in place, save it."""
    counter = load(state, key, Counter.from_bytes, event)
    counter.n = n
    save(state, key, counter, event)


def test_decoded_values_stay_decoded_and_are_encoded_once_per_flush(home: Path) -> None:
    app, table, state = state_of(home)
    Counter.decoded = 0
    event = on_partition(3)
    for _ in range(3):  # three batches touching the same key
        counter = load(state, 11, Counter.from_bytes, event)
        counter.n += 1
        save(state, 11, counter, event)
        (record,) = delivered(state)
        assert record[2:] == (str(counter.n).encode(), 3)  # value and changelog partition
    assert Counter.decoded == 1  # decoded once, then kept
    raw_key = table.data._encode_key(11)
    state.write_back()
    assert table.data._db_for_partition(3).get(raw_key) == b"3"  # in the partition's store
    assert table.get(11) == b"3"  # and where Faust's own reads look

    app.consumer_generation_id = (app.consumer_generation_id or 0) + 1  # a rebalance
    assert load(state, 11, Counter.from_bytes, event).n == 3  # read back from RocksDB
    assert Counter.decoded == 2


def test_a_rebalance_drops_unwritten_values_for_the_recovery_to_replay(home: Path) -> None:
    app, table, state = state_of(home)
    event = on_partition(2)
    change(state, 6, 4, event)
    delivered(state)  # in the changelog, not yet in RocksDB
    app.consumer_generation_id = (app.consumer_generation_id or 0) + 1
    # Faust's recovery replays the changelog from the offset it persisted, which the worker's
    # own writes never move; here it is done by hand.
    table.data._db_for_partition(2).put(table.data._encode_key(6), b"4")
    assert load(state, 6, Counter.from_bytes, event).n == 4
    assert state.unwritten == {}
    state.write_back()  # nothing left to write over what the recovery put there
    assert table.get(6) == b"4"


def test_a_failed_batch_forgets_values_changed_in_place(home: Path) -> None:
    _, _, state = state_of(home)
    event = on_partition(0)
    change(state, 4, 10, event)
    delivered(state)
    load(state, 4, Counter.from_bytes, event).n = 99  # changed, then the batch failed
    state.discard()
    assert load(state, 4, Counter.from_bytes, event).n == 10
    assert state.flush() == []


def test_no_cache_is_dropped_in_the_middle_of_a_batch(home: Path) -> None:
    app, _, state = state_of(home)
    event = on_partition(1)
    counter = load(state, 8, Counter.from_bytes, event)
    counter.n = 5
    save(state, 8, counter, event)
    app.consumer_generation_id = (app.consumer_generation_id or 0) + 1  # mid-batch
    assert load(state, 8, Counter.from_bytes, event).n == 5  # the unflushed value
    assert [r[2] for r in state.flush()] == [b"5"]


def test_plain_dicts_decode_and_encode_every_time() -> None:
    Counter.decoded = 0
    state: dict[int, bytes] = {}
    event = on_partition(0)
    counter = load(state, 1, Counter.from_bytes, event)
    counter.n = 2
    save(state, 1, counter, event)
    assert state == {1: b"2"}
    assert load(state, 1, Counter.from_bytes, event).n == 2
    assert Counter.decoded == 2


def test_values_dropped_for_size_are_written_first(home: Path) -> None:
    _, table, state = state_of(home, max_entries=1)
    event = on_partition(0)
    for key in (1, 2):
        change(state, key, key * 10, event)
    delivered(state)
    assert state.unwritten  # two decoded values, one more than max_entries
    assert load(state, 1, Counter.from_bytes, event).n == 10  # dropped, read from RocksDB
    assert len(state.objects) == 1
    assert table.get(2) == b"20"


def test_raw_values_by_key_are_read_back_from_each_layer_and_deleted_with_tombstones(
    home: Path,
) -> None:
    _, table, state = state_of(home)
    event = on_partition(1)
    put(state, 100, b"row-100", event)
    put(state, 101, b"row-101", event)
    assert read(state, 100, event) == b"row-100"  # unflushed
    assert state.cache == {}  # many keys, each read back seldom: not cached
    records = delivered(state)
    assert sorted(r[2] for r in records if r[2] is not None) == [b"row-100", b"row-101"]
    assert read(state, 101, event) == b"row-101"  # flushed, not yet in RocksDB
    state.write_back()
    assert read(state, 101, event) == b"row-101"  # from the partition's RocksDB

    drop(state, 100, event)
    assert read(state, 100, event) is None
    (tombstone,) = delivered(state)
    assert (tombstone[2], tombstone[3]) == (None, 1)  # a tombstone in the changelog
    assert read(state, 100, event) is None  # deleted, not yet in RocksDB
    assert table.data._db_for_partition(1).get(table.data._encode_key(100)) == b"row-100"
    state.write_back()
    assert table.data._db_for_partition(1).get(table.data._encode_key(100)) is None
    assert read(state, 100, event) is None
    assert read(state, 101, event) == b"row-101"


def test_raw_helpers_on_plain_dicts() -> None:
    state: dict[int, bytes] = {}
    event = on_partition(0)
    put(state, 1, b"x", event)
    assert read(state, 1, event) == b"x"
    drop(state, 1, event)
    drop(state, 1, event)  # deleting what is gone is fine
    assert read(state, 1, event) is None
    assert state == {}


def test_keys_are_encoded_as_faust_encodes_them(home: Path) -> None:
    _, table, state = state_of(home)
    for key in (0, 1, -5, 9_999, 10**15, 2**63 - 1, -(2**63)):
        assert state._encode_key(key) == table.data._encode_key(key)


def test_values_reach_rocksdb_only_once_their_batch_was_delivered(home: Path) -> None:
    _, table, state = state_of(home, max_unwritten_bytes=0)  # every confirmed value written
    event = on_partition(2)
    change(state, 1, 5, event)
    state.flush()
    first = state.flushed
    change(state, 1, 6, event)  # the next batch, built on the first, in flight too
    state.flush()
    second = state.flushed
    assert first is not None
    assert second is not None
    assert table.get(1) is None  # both pending: nothing in RocksDB
    assert load(state, 1, Counter.from_bytes, event).n == 6
    state.confirm(second)  # the later one first: it waits for the older
    assert table.get(1) is None
    state.confirm(first)
    assert table.get(1) == b"6"
    assert state.pending == []


def test_a_rollback_forgets_every_unconfirmed_batch_and_compensates_the_changelog(
    home: Path,
) -> None:
    _, table, state = state_of(home)
    event = on_partition(3)
    change(state, 1, 10, event)
    put(state, 2, b"kept", event)
    delivered(state)  # confirmed: 1 -> 10, 2 -> kept
    change(state, 1, 11, event)  # batch N (refused later)
    put(state, 3, b"new", event)
    state.flush()
    change(state, 1, 12, event)  # batch N+1, built on N
    drop(state, 2, event)
    state.flush()

    state.rollback(compensate=True)

    assert state.pending == []
    assert load(state, 1, Counter.from_bytes, event).n == 10  # as confirmed, not 11 or 12
    assert read(state, 2, event) == b"kept"
    assert read(state, 3, event) is None
    # The refused records may have reached the changelog: the confirmed values follow them.
    raw = {table.data._encode_key(k): k for k in (1, 2, 3)}
    records = state.flush()
    assert sorted((raw[k], v, p) for _, k, v, p in records) == [
        (1, b"10", 3),
        (2, b"kept", 3),
        (3, None, 3),  # never confirmed: a tombstone
    ]
    assert table.data._db_for_partition(3).get(table.data._encode_key(1)) is None


def test_a_rollback_without_compensation_sends_nothing(home: Path) -> None:
    """Under exactly_once the refused records were aborted: the changelog never shows them."""
    _, _, state = state_of(home)
    event = on_partition(0)
    change(state, 1, 10, event)
    state.flush()
    state.rollback(compensate=False)
    assert state.flush() == []
    assert load(state, 1, Counter.from_bytes, event).n == 0


def test_a_discard_keeps_the_batches_in_flight(home: Path) -> None:
    """A batch whose handling raised is forgotten; the one before it, still in flight, not."""
    _, _, state = state_of(home)
    event = on_partition(1)
    change(state, 1, 10, event)
    state.flush()  # in flight
    change(state, 1, 99, event)  # the next batch raises after this
    state.discard()
    assert load(state, 1, Counter.from_bytes, event).n == 10
    assert len(state.pending) == 1
