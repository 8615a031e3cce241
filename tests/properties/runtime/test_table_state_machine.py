"""Stateful properties of a step's table state (:class:`pipelines.runtime.state.TableState`).

A real Faust table (RocksDB on disk, no broker) is driven as the runtime drives it: writes
while a batch is handled (bytes, decoded values, raw values and tombstones), a flush when
its outputs are handed over, a confirmation when they are acknowledged (in any order), a
discard when handling failed, a rollback when the broker refused them (then the dead
letters' hand-over flushes the compensation), rebalances (another worker may have written
a partition meanwhile; Faust's recovery replays the changelog into RocksDB) and crashes (a
new worker recovers from the changelog). The model is plain dicts: the values of the
confirmed batches, one dict a batch in flight, the batch being handled, and the changelog
(what a recovery replays: under at-least-once a refused record may have reached it, under
``exactly_once`` it was aborted).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pipelines.runtime import compat
from pipelines.runtime.app import create_app, event_scope
from pipelines.runtime.state import TableState, drop, load, put, read, save
from pipelines.settings import Settings
from tests.pipelines.fakes import FakeEvent, FakeMessage

MACHINE = settings(max_examples=60, stateful_step_count=40)

PARTITIONS = 4
# Each key is reached one way only (as TableState asks), and lives in partition key % 4.
BYTES, DECODED, RAW = range(0, 6), range(6, 12), range(12, 18)
KEYS = range(18)


class Count:
    """A decoded value a step changes in place (as a window object)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Count:
        return cls(int(raw or b"0"))

    def to_bytes(self) -> bytes:
        return b"%d" % self.n


def on(key: int) -> FakeEvent:
    """An event of the partition that holds ``key``."""
    return FakeEvent(FakeMessage("transactions", key % PARTITIONS, 0, None, b""))


@dataclass
class Batch:
    """A flushed batch in flight: its changes, and the changelog records it sent."""

    token: int
    changes: dict[int, bytes | None]
    sent: list[tuple[int, int, bytes | None]]  # (sequence number, key, value)
    acknowledged: bool = False  # its outputs were; it waits for older batches


class TableStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="table-state-"))
        self.app = create_app(Settings(home=self.home, app_prefix="tsm"), "transactions")
        self.app.consumer_generation_id = 1
        self.table = self.app.Table(
            "windows", default=None, partitions=PARTITIONS, key_type=int, value_type=bytes
        )
        self.store: Any = cast(Any, self.table.data)  # its RocksDB partitions (a Store)
        self.encode = compat.store_key_encoder(self.store)
        self.confirmed: dict[int, bytes | None] = {}  # what the confirmed batches left
        self.stored: dict[int, set[bytes | None]] = {}  # values RocksDB may hold: see below
        self.batches: list[Batch] = []  # flushed, not yet confirmed, oldest first
        self.dirty: dict[int, bytes | None] = {}  # the batch being handled (within a rule)
        self.changelog: dict[int, tuple[int, bytes | None]] = {}  # key: (sequence, value)
        self.sequence = 0

    def teardown(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    @initialize(
        exactly_once=st.booleans(),
        max_entries=st.sampled_from([2, 500_000]),
        budget=st.sampled_from([0, 40, 8 * 1024 * 1024]),
    )
    def worker(self, exactly_once: bool, max_entries: int, budget: int) -> None:
        """Under ``exactly_once`` a refused batch's records are aborted (no compensation)
        and one batch is in flight at a time; else two. Small limits drop caches for size and
        write RocksDB back value by value."""
        self.exactly_once = exactly_once
        self.limits = {"max_entries": max_entries, "max_unwritten_bytes": budget}
        self.state = TableState(self.app, self.table, **self.limits)

    # -- the model

    def expected(self, key: int) -> bytes | None:
        """The value a read gives: the batch's own change, else the newest flushed batch's,
        else the confirmed one."""
        if key in self.dirty:
            return self.dirty[key]
        for batch in reversed(self.batches):
            if key in batch.changes:
                return batch.changes[key]
        return self.confirmed.get(key)

    def send(self, key: int, value: bytes | None) -> tuple[int, int, bytes | None]:
        self.sequence += 1
        return (self.sequence, key, value)

    def reach(self, sent: list[tuple[int, int, bytes | None]]) -> None:
        """Records that reached the changelog: the newest of a key is its last word."""
        for sequence, key, value in sent:
            if key not in self.changelog or self.changelog[key][0] < sequence:
                self.changelog[key] = (sequence, value)

    def recover(self) -> None:
        """Faust's recovery: the changelog replayed into RocksDB (what the worker wrote since
        the last recovery; the rest is there already); then it holds the confirmed values."""
        for key, (_, value) in self.changelog.items():
            db = compat.store_db(self.store, key % PARTITIONS)
            if value is None:
                db.delete(self.encode(key))
            else:
                db.put(self.encode(key), value)
        self.confirmed = {key: value for key, (_, value) in self.changelog.items()}
        self.stored = {key: {value} for key, value in self.confirmed.items()}
        self.app.consumer_generation_id += 1

    # -- a batch being handled

    def depth(self) -> int:
        return 1 if self.exactly_once else 2

    @precondition(lambda self: len(self.batches) < self.depth())
    @rule(
        writes=st.lists(
            st.tuples(st.sampled_from(KEYS), st.integers(0, 10**6), st.booleans()),
            max_size=6,
        ),
        reads=st.booleans(),
        fails=st.integers(0, 5).map(lambda i: i == 0),
    )
    def batch(self, writes: list[tuple[int, int, bool]], reads: bool, fails: bool) -> None:
        """A batch handles some events, each changing one key its own way (bytes in
        ``outputs.scope(event)``, a decoded value loaded and saved, a raw value put or
        dropped: a tombstone), maybe reading every key back; then its outputs are handed
        over (the state flushed), or its handling failed (its changes discarded)."""
        for key, n, tombstone in writes:
            self.dirty[key] = self.write(key, n, tombstone)
        if reads:
            self.every_key_reads_as_the_model_says()
        if fails:
            self.state.discard()
        else:
            self.flushed(self.state.flush(), self.dirty)
        self.dirty = {}

    def write(self, key: int, n: int, tombstone: bool) -> bytes | None:
        event = on(key)
        if key in BYTES:
            with event_scope(event):  # type: ignore[arg-type]
                self.state[key] = b"v%d" % n
            return b"v%d" % n
        if key in DECODED:
            count = load(self.state, key, Count.from_bytes, event)
            count.n = n
            save(self.state, key, count, event)
            return count.to_bytes()
        if tombstone:
            drop(self.state, key, event)
            return None
        put(self.state, key, b"r%d" % n, event)
        return b"r%d" % n

    @rule(key=st.sampled_from(BYTES))
    def read_outside_a_batch(self, key: int) -> None:
        """No event, so no partition known: any layer's, else Faust's read of the table."""
        assert self.state.get(key) == self.expected(key), key

    # -- its outputs: acknowledged or refused

    def flushed(self, records: list[Any], changes: dict[int, bytes | None]) -> None:
        """Check a flush's records against ``changes`` (queued compensation first, so the
        last record of a key is its value) and note its batch in flight."""
        by_raw = {self.encode(key): key for key in KEYS}
        last = {by_raw[raw]: (value, partition) for _, raw, value, partition in records}
        assert last == {key: (value, key % PARTITIONS) for key, value in changes.items()}
        assert all(topic == self.state.changelog for topic, *_ in records)
        token = self.state.flushed
        assert (token is None) is (not records), (token, records)
        if token is not None:
            sent = [self.send(by_raw[raw], value) for _, raw, value, _ in records]
            self.batches.append(Batch(token, dict(changes), sent))

    @precondition(lambda self: any(not b.acknowledged for b in self.batches))
    @rule(data=st.data())
    def acknowledged(self, data: st.DataObject) -> None:
        """A batch's outputs were acknowledged (a later one's may come first)."""
        waiting = [b for b in self.batches if not b.acknowledged]
        batch = data.draw(st.sampled_from(waiting), label="batch")
        self.state.confirm(batch.token)
        batch.acknowledged = True
        self.reach(batch.sent)
        while self.batches and self.batches[0].acknowledged:
            done = self.batches.pop(0)
            for key, value in done.changes.items():
                self.confirmed[key] = value
                self.stored.setdefault(key, {None}).add(value)

    @precondition(lambda self: any(not b.acknowledged for b in self.batches))
    @rule(data=st.data())
    def refused(self, data: st.DataObject) -> None:
        """The oldest unacknowledged batch's outputs were refused: every batch in flight is
        rolled back (a later one was built on it and is handled again); under at-least-once
        their records may have reached the changelog all the same, and the dead letters'
        hand-over sends the confirmed value of each key they changed."""
        compensate = not self.exactly_once
        touched: dict[int, None] = {}
        for batch in self.batches:
            touched.update(dict.fromkeys(batch.changes))
            reached = batch.acknowledged or (
                compensate and data.draw(st.booleans(), label="reached")
            )
            if reached:
                self.reach(batch.sent)
        self.batches = []
        self.state.rollback(compensate)
        compensation = {key: self.confirmed.get(key) for key in touched} if compensate else {}
        self.flushed(self.state.flush(), compensation)
        if not self.batches:
            return  # nothing to compensate
        delivered: bool = data.draw(st.booleans(), label="dead letters delivered")
        if delivered:
            self.acknowledged(data)
        else:  # the dead letters were refused too: the worker stops
            self.crash(data)

    # -- rebalances and restarts

    @precondition(lambda self: not self.batches)
    @rule(data=st.data())
    def rebalance(self, data: st.DataObject) -> None:
        """A new generation (Faust waits for the batches in flight first). A partition may
        have been another worker's for a while: its writes are in the changelog."""
        moved = data.draw(st.sets(st.integers(0, PARTITIONS - 1), min_size=1), label="moved")
        for key in KEYS:
            if key % PARTITIONS in moved and data.draw(st.booleans(), label=f"{key} written"):
                n = data.draw(st.integers(0, 99) | st.none(), label=f"{key} value")
                value = None if n is None else b"%d" % n
                self.reach([self.send(key, value)])
        self.recover()

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """The worker stops at any point; a new one recovers from the changelog. Records of
        batches in flight: aborted under ``exactly_once``, maybe delivered otherwise."""
        for batch in self.batches:
            if not self.exactly_once and data.draw(st.booleans(), label="reached"):
                self.reach(batch.sent)
        self.batches = []
        self.state = TableState(self.app, self.table, **self.limits)
        self.recover()

    # -- what the state promises

    @rule()
    def every_key_reads_as_the_model_says(self) -> None:
        """Read each key as a step does, through its own way: the batch's change, else the
        newest batch in flight, else the confirmed value. (A rule, not an invariant: reads
        fill caches and drop stale ones, as a step's do, and some batches only write.)"""
        for key in KEYS:
            event = on(key)
            if key in BYTES:
                with event_scope(event):  # type: ignore[arg-type]
                    got = self.state.get(key)
                want = self.expected(key)
            elif key in DECODED:
                got = load(self.state, key, Count.from_bytes, event).to_bytes()
                want = Count.from_bytes(self.expected(key)).to_bytes()
            else:
                got, want = read(self.state, key, event), self.expected(key)
            assert got == want, f"{key} reads {got!r}, not {want!r}"

    @invariant()
    def rocksdb_holds_only_confirmed_values(self) -> None:
        """RocksDB is written back, not through: it may lag behind, but never holds a value
        of a batch that was not confirmed (the recovery's are confirmed by definition)."""
        for key in KEYS:
            db = compat.store_db(self.store, key % PARTITIONS)
            held = db.get(self.encode(key))
            value = None if held is None else bytes(held)
            allowed = self.stored.get(key, {None})
            assert value in allowed, f"{key}: RocksDB holds {value!r}, not one of {allowed}"

    @invariant()
    def the_changelogs_last_word_is_the_confirmed_value_between_batches(self) -> None:
        """With nothing in flight, a recovery would rebuild what the worker reads."""
        if not self.batches:
            last = {key: value for key, (_, value) in self.changelog.items()}
            assert last == {k: v for k, v in self.confirmed.items() if k in last}
            assert all(self.confirmed.get(k) is None for k in KEYS if k not in last)


def test_table_state_reads_and_keeps_what_a_plain_model_does() -> None:
    run_state_machine_as_test(TableStateMachine, settings=MACHINE)


# -- a failure found, reduced ---------------------------------------------------------------


def test_a_batch_that_only_writes_after_a_rebalance_keeps_its_values(home: Path) -> None:
    """A rebalance, then a batch whose first access is a write (``put``): its confirmed value
    must survive the next batch's first read. (Only reads dropped the stale generation's
    values, so that read dropped the new value, never in RocksDB, with them.)"""
    app = create_app(Settings(home=home, app_prefix="tsm"), "transactions")
    app.consumer_generation_id = 1
    table = app.Table("rows", default=None, partitions=1, key_type=int, value_type=bytes)
    state = TableState(app, table)
    event = on(0)
    assert read(state, 9, event) is None
    app.consumer_generation_id = 2  # a rebalance (the recovery has nothing to replay)
    put(state, 10, b"new", event)
    state.flush()
    assert state.flushed is not None
    state.confirm(state.flushed)  # confirmed: unwritten, not yet in RocksDB
    assert read(state, 10, event) == b"new"
