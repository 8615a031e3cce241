"""A Faust table as a step's state: reads from memory, writes flushed once per batch.

Faust's table writes each value through its changelog machinery one record at a time (a
future, a producer-buffer slot and a send per key), and when that buffer fills it blocks
the consumer for every topic of the worker; reads go through key serialisation and
RocksDB. That was most of the fraud pipeline's cost. :class:`TableState` keeps the same
storage (the table's RocksDB partitions and its changelog topic, so Faust's recovery and
partition assignment are unchanged) and only changes how a step reaches it:

- ``state[key]`` reads the value from a cache of the raw bytes, filled from the table's
  store on a miss; the cache is dropped whenever the consumer group rebalances (keys may
  have moved to or from another worker) and when it grows past ``max_entries``;
- ``load(state, key, decode)`` keeps the decoded value (a window object) in memory too, so
  a key touched by every batch is decoded once, not once per batch; the step changes it in
  place and ``save(state, key, value, event)`` marks it dirty (it is encoded at the flush);
- ``state[key] = value`` inside ``outputs.scope(event)`` marks the key dirty for the
  event's partition; :meth:`flush` (called by :meth:`FaustOutputs.delivered
  <pipelines.runtime.outputs.FaustOutputs.delivered>` before it produces the batch's outputs)
  encodes every dirty value once and returns its changelog record, which leaves with the
  batch's other records. The batch is acked only after those sends are acknowledged;
- ``put(state, key, value, event)``, ``drop(state, key, event)`` and ``read(state, key,
  event)`` are for many small raw values, each read back seldom (a pending row a payment):
  nothing is cached, and ``drop`` leaves a tombstone in the changelog and deletes the key
  from RocksDB at the write-back.

RocksDB is written back, not through, and only with changes whose delivery was confirmed.
Faust's recovery replays a partition's changelog from the offset it persisted at the end of
the last recovery, and only a recovery moves that offset; so after a restart or a rebalance
every value written since is replayed into the store anyway, and the store only has to be
current where this worker reads it back itself. A flush's values are *pending* (one layer a
flush, newest read first) until its batch's outputs were acknowledged (under
``exactly_once``: its transaction committed), :meth:`TableState.confirm`; confirmed layers
become *unwritten* (bytes, oldest first) and are written to RocksDB, one write batch per
partition, as they pass ``max_unwritten_bytes``: each confirmation over the budget writes back
the oldest values, as many bytes as the budget is exceeded by. (Writing the whole budget at
once stopped the event loop for 20-70 ms every few seconds in the bench.) A key changed by
every batch is written to RocksDB about once per budget's worth of writes instead of once per
batch. Everything is written back before a cache is dropped for size. A rebalance drops
unwritten values: the recovery that follows it rewrites those keys from the changelog before
any batch runs.

A batch whose outputs the broker refused is rolled back (:meth:`TableState.rollback`): every
pending layer is dropped (also those of a later batch in flight, which was built on it and is
handled again) with the caches, so that neither its RocksDB nor its memory keeps what the
refused batch changed. Under at-least-once some of those changelog records may have reached
the broker all the same, so the rollback queues the confirmed value of each such key (or a
tombstone) for the next flush: the changelog's last word on a key is what the store holds.
Under ``exactly_once`` the refused records were aborted and are never replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Protocol, TypeVar

from pipelines.runtime import compat

WriteBatch: Any
_NO_WAL: Any
try:
    from rocksdict import WriteBatch, WriteOptions

    # The changelog, not RocksDB's write-ahead log, is what a restart trusts: the persisted
    # changelog offset is only advanced by a recovery, so every write since is replayed from
    # the changelog after a crash (Kafka Streams' state stores skip the WAL for the same
    # reason). Skipping it halved the cost of a batch's writes.
    _NO_WAL = WriteOptions()
    _NO_WAL.disable_wal = True
except ImportError:  # pragma: no cover - Faust's other RocksDB binding
    WriteBatch = None
    _NO_WAL = None

__all__ = ["Encodable", "Record", "TableState", "drop", "load", "put", "read", "save"]

Record = tuple[str, bytes, bytes | None, int]
"""A changelog record: topic, serialized key, value (``None``: a tombstone), partition."""


class Encodable(Protocol):
    def to_bytes(self) -> bytes: ...


E = TypeVar("E", bound=Encodable)


def load(
    state: MutableMapping[int, Any], key: int, decode: Callable[[bytes | None], E], event: Any
) -> E:
    """``decode(state[key])`` for ``event`` (whose partition holds the key), from a
    :class:`TableState`'s cache of decoded values if it has one (plain dicts, as steps get in
    tests, decode every time)."""
    if isinstance(state, TableState):
        return state.load(key, decode, event.message.partition)
    return decode(state.get(key))


def save(state: MutableMapping[int, Any], key: int, value: Encodable, event: Any) -> None:
    """Store ``value`` for ``event`` (whose partition is the changelog's); a
    :class:`TableState` encodes it at its next flush, a plain dict at once."""
    if isinstance(state, TableState):
        state.save(key, value, event.message.partition)
    else:
        state[key] = value.to_bytes()


def put(state: MutableMapping[int, Any], key: int, value: bytes, event: Any) -> None:
    """Store raw ``value`` for ``event``'s partition without keeping it in a read cache (for
    many small keys read back rarely: :meth:`TableState.read`)."""
    if isinstance(state, TableState):
        state.put(key, value, event.message.partition)
    else:
        state[key] = value


def drop(state: MutableMapping[int, Any], key: int, event: Any) -> None:
    """Delete ``key`` (a changelog tombstone) for ``event``'s partition."""
    if isinstance(state, TableState):
        state.delete(key, event.message.partition)
    else:
        state.pop(key, None)


def read(state: MutableMapping[int, Any], key: int, event: Any) -> bytes | None:
    """The raw value of ``key`` in ``event``'s partition, or ``None``, not cached."""
    if isinstance(state, TableState):
        return state.read(key, event.message.partition)
    value = state.get(key)
    return None if value is None else bytes(value)


_ABSENT: Any = object()


class TableState(MutableMapping[int, bytes]):
    """One step's view of a Faust table of ``int`` keys and ``bytes`` values."""

    def __init__(
        self,
        app: Any,
        table: Any,
        max_entries: int = 500_000,
        max_unwritten_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.table = table
        self.max_entries = max_entries
        self.max_unwritten_bytes = max_unwritten_bytes
        # Flushed (in the changelog) but not yet in RocksDB, oldest first: (partition, raw
        # key) -> value (``None``: deleted).
        self.unwritten: dict[tuple[int, bytes], bytes | None] = {}
        self.unwritten_bytes = 0
        # Flushed but not yet confirmed, one layer a flush, oldest first: [token, values,
        # confirmed]; read newest first, before ``unwritten``.
        self.pending: list[tuple[int, dict[tuple[int, bytes], bytes | None], list[bool]]] = []
        self.tokens = 0  # the token of the newest layer
        self.compensation: list[Record] = []  # queued by a rollback, sent by the next flush
        self.cache: dict[int, bytes | None] = {}
        self.objects: dict[int, Any] = {}  # decoded values (load/save)
        self.dirty: dict[int, tuple[bytes | Encodable | None, int]] = {}
        self.raw_keys: dict[int, bytes] = {}  # the store's (JSON) encoding of each key
        self.generation: Any = _ABSENT  # the consumer generation the caches belong to
        self.flushed: int | None = None  # the token of the last flush's layer
        self._encoder: Callable[[int], bytes] | None = None

    @property
    def changelog(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def _fresh(self) -> None:
        """Drop what a rebalance (or size) made stale, at a batch's first access, whichever
        it is: a batch that only writes must not keep the previous generation's values."""
        generation = self.app.consumer_generation_id
        if self.generation is _ABSENT:  # first use: nothing is cached from an older one
            self.generation = generation
        if self.dirty:  # never in the middle of a batch: its changes live in the caches
            return
        if generation != self.generation:  # keys may have moved to or from another worker
            self.cache.clear()
            self.objects.clear()
            self.unwritten.clear()  # the recovery after the rebalance replays them
            self.pending.clear()  # (batches in flight finish before a rebalance goes on)
            self.unwritten_bytes = 0
            self.generation = generation
        if len(self.cache) > self.max_entries:
            self.write_back()
            self.cache.clear()
        if len(self.objects) > self.max_entries:
            self.write_back()
            self.objects.clear()

    def get(self, key: int, default: Any = None) -> Any:
        self._fresh()
        try:
            value = self.cache[key]
        except KeyError:
            event = compat.bound_event()
            raw_key = self._encode_key(key)
            if event is not None:
                value = self._stored(raw_key, int(event.message.partition))
            else:  # no partition known: any layer's, else Faust's read of every partition
                value = self._any_partition(key, raw_key)
            self.cache[key] = value
        return default if value is None else value

    def __getitem__(self, key: int) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def load(self, key: int, decode: Callable[[bytes | None], E], partition: int) -> E:
        """The decoded value of ``key`` from table ``partition``, kept decoded between
        batches. A step that changes it must :meth:`save` it; a key is read either this way
        or as bytes, not both."""
        self._fresh()
        value = self.objects.get(key)
        if value is None:
            value = self.objects[key] = decode(self._stored(self._raw_key(key), partition))
        return value

    def save(self, key: int, value: Encodable, partition: int) -> None:
        """Mark a loaded value dirty for a changelog ``partition``; encoded at flush."""
        self._fresh()
        self.objects[key] = value
        self.dirty[key] = (value, partition)

    def put(self, key: int, value: bytes, partition: int) -> None:
        """Mark raw ``value`` dirty for a changelog ``partition``, without caching it."""
        self._fresh()
        self.dirty[key] = (value, partition)

    def delete(self, key: int, partition: int) -> None:
        """Mark ``key`` deleted (a tombstone in the changelog, a delete in RocksDB)."""
        self._fresh()
        self.cache.pop(key, None)
        self.objects.pop(key, None)
        self.dirty[key] = (None, partition)

    def read(self, key: int, partition: int) -> bytes | None:
        """The newest raw value of a key written with :meth:`put`: unflushed, flushed but not
        yet in RocksDB, or from the partition's RocksDB; not cached."""
        self._fresh()
        dirty = self.dirty.get(key)
        if dirty is not None:
            value = dirty[0]
            return value if value is None or isinstance(value, bytes) else value.to_bytes()
        return self._stored(self._encode_key(key), partition)

    def _stored(self, raw_key: bytes, partition: int) -> bytes | None:
        """A key's flushed value: pending (newest first), not yet written back, or from the
        partition's RocksDB (one read there: Faust's table.get looks a key it has not indexed
        up in every partition)."""
        slot = (partition, raw_key)
        for _, layer, _ in reversed(self.pending):
            value = layer.get(slot, _ABSENT)
            if value is not _ABSENT:
                return value  # type: ignore[no-any-return]
        return self._confirmed(slot)

    def _any_partition(self, key: int, raw_key: bytes) -> bytes | None:
        """A key's newest flushed value in whichever partition holds it (a scan: reads
        outside a batch only)."""
        layers = [layer for _, layer, _ in reversed(self.pending)] + [self.unwritten]
        for layer in layers:
            for (_, held), value in layer.items():
                if held == raw_key:
                    return value
        stored = self.table.get(key)
        return None if stored is None else bytes(stored)

    def _confirmed(self, slot: tuple[int, bytes]) -> bytes | None:
        """A key's value as of the last confirmed batch."""
        partition, raw_key = slot
        flushed = self.unwritten.get(slot, _ABSENT)
        if flushed is not _ABSENT:
            return flushed  # type: ignore[no-any-return]
        stored = compat.store_db(self.table.data, partition).get(raw_key)
        return None if stored is None else bytes(stored)

    def __setitem__(self, key: int, value: bytes) -> None:
        partition = _partition()
        self._fresh()
        self.cache[key] = value
        self.dirty[key] = (value, partition)

    def __delitem__(self, key: int) -> None:
        raise NotImplementedError("delete a key with drop(state, key, event): it needs a partition")

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError("a step reads its state by key")

    def __len__(self) -> int:
        raise NotImplementedError("a step reads its state by key")

    def discard(self) -> None:
        """Drop unflushed writes (a batch whose handling failed) and the caches that may hold
        them (decoded values are changed in place before they are saved). Flushed layers stay:
        reads find them."""
        self.dirty.clear()
        self.cache.clear()
        self.objects.clear()

    def rollback(self, compensate: bool) -> None:
        """Drop every change not confirmed: unflushed writes, every pending layer and the
        caches. With ``compensate`` the next flush re-sends the confirmed value of each key a
        dropped layer held (a tombstone if it has none), as its changelog records may have
        been delivered."""
        slots: dict[tuple[int, bytes], None] = {}
        for _, layer, _ in self.pending:
            slots.update(dict.fromkeys(layer))
        self.pending.clear()
        self.discard()
        if compensate and slots:
            topic = self.changelog
            self.compensation = [
                (topic, raw_key, self._confirmed((partition, raw_key)), partition)
                for partition, raw_key in slots
            ]

    def confirm(self, token: int) -> None:
        """The batch whose flush made layer ``token`` was delivered: once every older layer
        is confirmed too, they become unwritten (RocksDB gets them later); over the budget the
        oldest are written back."""
        for held, _, confirmed in self.pending:
            if held == token:
                confirmed[0] = True
                break
        size = self.unwritten_bytes
        unwritten = self.unwritten
        while self.pending and self.pending[0][2][0]:
            _, layer, _ = self.pending.pop(0)
            for slot, value in layer.items():
                old = unwritten.get(slot, _ABSENT)  # a changed value keeps its place
                new_size = 0 if value is None else len(value)
                if old is _ABSENT:
                    size += len(slot[1]) + new_size
                else:
                    size += new_size - (0 if old is None else len(old))
                unwritten[slot] = value
        self.unwritten_bytes = size
        if size > self.max_unwritten_bytes:
            self.write_back(size - self.max_unwritten_bytes)

    def _encode_key(self, key: int) -> bytes:
        """The store's encoding of ``key``: Faust's (its serializer registry, about 3 µs a
        key), or the decimal digits it produces for ``int`` keys, once checked on a few."""
        encode = self._encoder
        if encode is None:
            faust_encode = compat.store_key_encoder(self.table.data)
            samples = (0, 7, -12, 2**40 + 3, 2**62)
            if all(faust_encode(k) == b"%d" % k for k in samples):
                encode = _decimal
            else:
                encode = faust_encode
            self._encoder = encode
        return encode(key)

    def _raw_key(self, key: int) -> bytes:
        raw = self.raw_keys.get(key)
        if raw is None:
            if len(self.raw_keys) > self.max_entries:
                self.raw_keys.clear()
            raw = self.raw_keys[key] = self._encode_key(key)
        return raw

    def flush(self) -> list[Record]:
        """Encode the dirty values; the changelog records that must go with the batch (first
        any a rollback queued). They become a pending layer (:attr:`flushed`: its token, or
        ``None`` if there was nothing), read before the store until :meth:`confirm`."""
        compensation, self.compensation = self.compensation, []
        if not self.dirty and not compensation:
            self.flushed = None
            return []
        topic = self.changelog
        dirty, self.dirty = self.dirty, {}
        records: list[Record] = list(compensation)
        layer: dict[tuple[int, bytes], bytes | None] = {
            (partition, raw_key): value for _, raw_key, value, partition in compensation
        }
        for key, (dirty_value, partition) in dirty.items():
            value: bytes | None
            if dirty_value is None or isinstance(dirty_value, bytes):
                value = dirty_value  # raw: many keys (put), each seldom written twice
                raw_key = self._encode_key(key)
            else:  # kept decoded; a raw copy in the cache too would double the state's memory
                value = dirty_value.to_bytes()
                self.cache.pop(key, None)
                raw_key = self._raw_key(key)
            layer[(partition, raw_key)] = value
            records.append((topic, raw_key, value, partition))
        self.tokens += 1
        self.pending.append((self.tokens, layer, [False]))
        self.flushed = self.tokens
        return records

    def write_back(self, at_least: int | None = None) -> None:
        """Write flushed values to RocksDB, oldest first: all of them, or the fewest whose
        keys and values reach ``at_least`` bytes. One write batch per partition, without the
        write-ahead log (the changelog is the recovery source)."""
        if not self.unwritten:
            return
        taken: dict[int, list[tuple[bytes, bytes | None]]] = {}
        if at_least is None:
            written, self.unwritten, self.unwritten_bytes = self.unwritten, {}, 0
            for (partition, raw_key), value in written.items():
                taken.setdefault(partition, []).append((raw_key, value))
        else:
            unwritten, freed = self.unwritten, 0
            slots: list[tuple[int, bytes]] = []
            for slot, value in unwritten.items():
                slots.append(slot)
                taken.setdefault(slot[0], []).append((slot[1], value))
                freed += len(slot[1]) + (0 if value is None else len(value))
                if freed >= at_least:
                    break
            for slot in slots:
                del unwritten[slot]
            self.unwritten_bytes -= freed
        store = self.table.data
        batched = WriteBatch is not None and getattr(store, "use_rocksdict", False)
        for partition, pairs in taken.items():
            db = compat.store_db(store, partition)
            # A write batch and a database take the same put/delete; the other binding
            # writes straight to the database.
            target = WriteBatch(raw_mode=True) if batched else db
            for raw_key, value in pairs:
                if value is None:
                    target.delete(raw_key)
                else:
                    target.put(raw_key, value)
            if batched:
                db.write(target, _NO_WAL)


def _decimal(key: int) -> bytes:
    return b"%d" % key


def _partition() -> int:
    event = compat.bound_event()
    if event is None:
        raise RuntimeError("TableState is written inside outputs.scope(event)")
    return int(event.message.partition)
