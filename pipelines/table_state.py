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
- ``state[key] = value`` inside ``outputs.scope(event)`` marks the key dirty for the
  event's partition; :meth:`flush` (called by :meth:`FaustOutputs.delivered
  <pipelines.outputs.FaustOutputs.delivered>` before it produces the batch's outputs)
  writes every dirty value to its RocksDB partition and returns its changelog record, which
  leaves with the batch's other records. The batch is acked only after those sends are acknowledged.

The persisted changelog offset is not advanced per write, so a restart replays the
(compacted) changelog of its partitions into the store: slower to start, never stale.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.streams import current_event

__all__ = ["Record", "TableState"]

Record = tuple[str, bytes, bytes, int]
"""A changelog record: topic, serialized key, value, partition."""


class TableState(MutableMapping[int, bytes]):
    """One step's view of a Faust table of ``int`` keys and ``bytes`` values."""

    def __init__(self, app: Any, table: Any, max_entries: int = 500_000) -> None:
        self.app = app
        self.table = table
        self.max_entries = max_entries
        self.cache: dict[int, bytes | None] = {}
        self.dirty: dict[int, tuple[bytes, int]] = {}
        self.generation: int | None = None

    @property
    def changelog(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def _fresh(self) -> None:
        generation = self.app.consumer_generation_id
        if generation != self.generation or len(self.cache) > self.max_entries:
            self.cache.clear()
            self.generation = generation

    def get(self, key: int, default: Any = None) -> Any:
        self._fresh()
        try:
            value = self.cache[key]
        except KeyError:
            value = self.cache[key] = self.table.get(key)
        return default if value is None else value

    def __getitem__(self, key: int) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: int, value: bytes) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError("TableState is written inside outputs.scope(event)")
        self._fresh()
        self.cache[key] = value
        self.dirty[key] = (value, event.message.partition)

    def __delitem__(self, key: int) -> None:
        raise NotImplementedError("the pipeline's states never delete a key")

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError("a step reads its state by key")

    def __len__(self) -> int:
        raise NotImplementedError("a step reads its state by key")

    def discard(self) -> None:
        """Drop unflushed writes (a failed batch) and the cache that already holds them."""
        if self.dirty:
            self.dirty.clear()
            self.cache.clear()

    def flush(self) -> list[Record]:
        """Write the dirty values to RocksDB; the changelog records that must go with them."""
        if not self.dirty:
            return []
        store = self.table.data
        topic = self.changelog
        dirty, self.dirty = self.dirty, {}
        records: list[Record] = []
        for key, (value, partition) in dirty.items():
            raw_key = store._encode_key(key)
            store._db_for_partition(partition).put(raw_key, value)
            store._key_index[raw_key] = partition
            records.append((topic, raw_key, value, partition))
        return records
