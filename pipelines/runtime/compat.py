"""Every reach into faust-streaming, mode and aiokafka internals, in one place.

The runtime replaces Faust's per-record intake, ack, table-write and producer paths for speed
(:mod:`~pipelines.runtime.ingress`, :mod:`~pipelines.runtime.state`,
:mod:`~pipelines.runtime.outputs`), which needs parts of their objects that are not public API.
Each hook says what the library does there, why its public API does not suffice, and the
versions it was checked on; :func:`check_versions` keeps a worker off other versions, and
tests/integration/test_runtime_contracts.py checks the hooks against a real broker.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, MutableMapping, MutableSet
from contextvars import Token
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import TopicPartition
from faust.streams import _current_event, current_event
from faust.types import TP, AppT, EventT

if TYPE_CHECKING:
    from faust.stores.rocksdb import Store as RocksDBStore
    from faust.transport.consumer import Consumer as FaustConsumer
    from faust.transport.consumer import RecordMap
    from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
    from faust.transport.drivers.aiokafka import Producer as AIOKafkaDriverProducer
    from faust.types.tuples import ConsumerMessage, Message

__all__ = [
    "AIOKAFKA",
    "CHECKED",
    "CONSUMER_PARTS",
    "FAUST_STREAMING",
    "MODE_STREAMING",
    "active_partitions",
    "add_gap",
    "aiokafka_producer",
    "bind_event",
    "bound_event",
    "buffered_partitions",
    "check_consumer",
    "check_versions",
    "group_committed",
    "installed_version",
    "mark_worker",
    "message_maker",
    "paused_partitions",
    "read_offsets",
    "set_producer_buffer",
    "stable_highwaters",
    "store_db",
    "store_key_encoder",
    "take_over_transactions",
    "unacked_messages",
    "unbind_event",
    "wrap_fetch",
]

log = logging.getLogger(__name__)

# The versions every hook below was read in and tested with (the integration tests).
FAUST_STREAMING = "0.15.3"
AIOKAFKA = "0.14.0"
MODE_STREAMING = "0.7.1"  # installed by faust-streaming 0.15.3; only call_thread is used
CHECKED = {
    "faust-streaming": FAUST_STREAMING,
    "aiokafka": AIOKAFKA,
    "mode-streaming": MODE_STREAMING,
}
_OVERRIDE = "STREAMWISE_WORKER__ALLOW_UNCHECKED_VERSIONS=true"


# -- versions ---------------------------------------------------------------------------------


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def check_versions(allow_unchecked: bool) -> None:
    """Refuse (``SystemExit``) installed faust-streaming, aiokafka or mode versions the hooks were
    not checked on; with ``allow_unchecked``, log a loud warning and go on instead."""
    differ = {
        name: installed
        for name, checked in CHECKED.items()
        if (installed := installed_version(name)) != checked
    }
    if not differ:
        return
    found = "; ".join(
        f"{name} {installed or '(not installed)'} is installed, the runtime was checked on"
        f" {name} {CHECKED[name]}"
        for name, installed in differ.items()
    )
    if not allow_unchecked:
        raise SystemExit(
            f"streamwise worker refuses to start: {found}. The runtime reaches into their"
            " internals (pipelines/runtime/compat.py) and could misbehave silently on other"
            f" versions: install the checked ones, or set {_OVERRIDE} to start anyway."
        )
    log.warning(
        "UNCHECKED VERSIONS, starting anyway (%s): %s. The runtime's hooks into their internals"
        " (pipelines/runtime/compat.py) may misbehave: lost or repeated records, stalls.",
        _OVERRIDE,
        found,
    )


# -- the current event (faust.streams) --------------------------------------------------------
# Faust binds a table write's changelog partition, and under exactly-once the transaction, to
# the event in the ContextVar ``faust.streams._current_event``. Only ``Stream.__aiter__`` sets
# it (``Stream._set_current_event`` is a method of a stream); events taken from a fetch
# (ingress.py) have no stream, so the var is set directly. Checked on faust-streaming 0.15.3.

CurrentEventToken = Token["weakref.ReferenceType[EventT[Any]] | None"]


def bind_event(event: EventT[Any]) -> CurrentEventToken:
    """Make ``event`` Faust's current event; :func:`unbind_event` with the token undoes it."""
    return _current_event.set(weakref.ref(event))


def unbind_event(token: CurrentEventToken) -> None:
    _current_event.reset(token)


def bound_event() -> EventT[Any] | None:
    """The current event (public ``faust.streams.current_event``, kept beside its setter)."""
    return current_event()


# -- the producer buffer (faust.transport.producer) -------------------------------------------
# Table writes queue their changelog sends in ``ProducerBuffer``; past ``max_messages`` (100)
# Faust flushes it while the stream waits. The attribute is on Faust's ``ProducerBufferT``
# interface but no app setting reaches it. Checked on faust-streaming 0.15.3.


def set_producer_buffer(app: AppT, max_messages: int) -> None:
    app.producer.buffer.max_messages = max_messages


# -- the consumer's fetch (faust.transport.consumer.Consumer) ---------------------------------
# The bulk reader takes records out of each fetch before Faust hands them to its streams one
# by one; Faust has no public hook between fetching and delivering. All checked on
# faust-streaming 0.15.3 (with aiokafka 0.14.0 fetching).

CONSUMER_PARTS = (
    "_wait_next_records",
    "_read_offset",
    "_to_message",
    "_add_gap",
    "_get_active_partitions",
    "_paused_partitions",
    "_buffered_partitions",
    "_unacked_messages",
    "flow_active",
    "ack",
    "assignment",
)
"""What the bulk reader uses of Faust's consumer (the private parts through this module)."""


def check_consumer(consumer: object) -> None:
    """Raise ``RuntimeError`` naming the :data:`CONSUMER_PARTS` that ``consumer`` lacks."""
    missing = [name for name in CONSUMER_PARTS if not hasattr(consumer, name)]
    if missing:
        raise RuntimeError(
            f"this Faust consumer lacks {', '.join(missing)}: the bulk reader was built for"
            f" faust-streaming {FAUST_STREAMING} (see pipelines/runtime/compat.py)"
        )


Fetch = Callable[[float], Awaitable[tuple["RecordMap | None", "set[TP] | None"]]]
Divert = Callable[[dict[TP, list[Any]], "set[TP] | None"], Awaitable[None]]


class _Fetching(Protocol):
    # Faust's method, as an attribute: it is replaced on one consumer instance.
    _wait_next_records: Fetch


def wrap_fetch(consumer: _Fetching, divert: Divert) -> None:
    """Let ``divert`` take records out of each fetch (a dict of records by partition, and
    the active partitions) before Faust's fetcher iterates what is left.

    ``Consumer._wait_next_records`` is the one call between aiokafka's ``getmany`` and Faust's
    per-record delivery (``Consumer.getmany``); the instance's method is replaced.
    """
    fetch = consumer._wait_next_records

    async def wait_next_records(wait_s: float) -> tuple[RecordMap | None, set[TP] | None]:
        records, active = await fetch(wait_s)
        if records:
            if not isinstance(records, dict):  # aiokafka's getmany gives a dict, popped here
                raise TypeError(f"a fetch returned a {type(records).__name__}, not a dict")
            await divert(records, active)
        return records, active

    consumer._wait_next_records = wait_next_records


def active_partitions(consumer: FaustConsumer) -> set[TP]:
    """The partitions Faust fetches from; a reader pauses one by discarding it (and resumes it
    by adding it back), as Faust itself does for a full stream buffer (``on_buffer_full``).
    ``pause_partitions`` would also mark it in Faust's own paused set, which rebalances and
    recoveries use, and :func:`paused_partitions` could no longer tell their pauses apart."""
    return consumer._get_active_partitions()


def paused_partitions(consumer: FaustConsumer) -> set[TP]:
    """The partitions Faust paused (a rebalance, a recovery): Faust resumes them itself."""
    return consumer._paused_partitions


def buffered_partitions(consumer: FaustConsumer) -> set[TP]:
    """Partitions whose stream buffer is full: still fetched records of them are Faust's."""
    return consumer._buffered_partitions


def read_offsets(consumer: FaustConsumer) -> MutableMapping[TP, int | None]:
    """Faust's read offset by partition: a record below it is dropped, and a seek or a
    rebalance moves it; the reader keeps it as Faust's fetcher (``_drain_messages``) does."""
    return consumer._read_offset


def message_maker(consumer: FaustConsumer) -> Callable[[TP, Any], ConsumerMessage]:
    """Faust's conversion of an aiokafka record into its ``ConsumerMessage``."""
    return consumer._to_message


async def add_gap(consumer: FaustConsumer, tp: TP, first: int, last: int) -> None:
    """File offsets ``first..last`` as a gap: Faust commits past them as if acked (how its
    fetcher treats offsets a fetch jumped over: transaction markers, compaction)."""
    await consumer._add_gap(tp, first, last)


def unacked_messages(consumer: FaustConsumer) -> MutableSet[Message]:
    """Messages a rebalance and a shutdown wait for until acked. ``track_message`` adds to it
    too, but also calls the sensors' ``on_message_in`` per record, which the reader skips."""
    return consumer._unacked_messages


# -- the group's committed offset (faust.transport.drivers.aiokafka) -------------------------
# Faust asks the group coordinator only to seek every partition (``seek_to_committed``);
# ``_committed_offset`` is what this worker committed, not what the group did. The aiokafka
# consumer lives in Faust's consumer thread (its own event loop), so it is called there
# (mode's ``ServiceThread.call_thread``). Checked on faust-streaming 0.15.3, aiokafka 0.14.0,
# mode-streaming 0.7.1.


async def group_committed(consumer: AIOKafkaDriverConsumer, tp: TP) -> int | None:
    """The consumer group's committed offset of ``tp`` (``None``: none), from the broker."""
    thread = consumer._thread
    client = thread._ensure_consumer()
    offset = await thread.call_thread(client.committed, TopicPartition(tp.topic, tp.partition))
    return None if offset is None or offset < 0 else int(offset)


# -- Faust's transaction manager (faust.transport.consumer.TransactionManager) --------------
# Under ``exactly_once`` Faust's TransactionManager starts a transactional producer per topic
# *group* and partition on every rebalance and commits all their transactions whenever its
# periodic commit fires; its ``send`` picks the producer of a record's destination partition
# (none for a sink: faust #177). The runtime keeps Faust's transactional mode for reading
# (``read_committed``, recovery past commit markers) and runs the transactions itself,
# per stage and input partition (:mod:`pipelines.runtime.transactions`). Checked on
# faust-streaming 0.15.3.


def mark_worker(app: AppT) -> None:
    """Tell ``app`` it runs in a worker before anything reads ``app.in_transaction``.

    ``faust.Worker`` sets ``app.in_worker`` when it is made, but ``App.in_transaction``
    (``in_worker`` and ``exactly_once``) is a cached property, and the consumer copies it when
    it is made, which a pipeline's ``build`` does before the worker exists: without this the
    app ran ``exactly_once`` with no transactions at all (a plain consumer, plain commits)."""
    app.in_worker = True


def stable_highwaters(consumer: Any) -> None:
    """Make the highwaters Faust's table recovery reads under ``exactly_once`` the partitions'
    last stable offsets as the broker reports them.

    ``Consumer._highwaters`` (in Faust's consumer thread) returns aiokafka's
    ``last_stable_offset(tp)``, which aiokafka only knows after a fetch of that partition: at
    the start of a recovery it is ``None``, Faust reads the highwater as -1, takes every
    changelog for empty and recovers nothing (state written since the last write-back to
    RocksDB was lost after a restart). ``end_offsets`` asks the broker (``ListOffsets`` with
    the consumer's ``read_committed`` isolation: the last stable offset)."""
    thread = consumer._thread

    async def highwaters(partitions: Any) -> Any:
        return await thread._ensure_consumer().end_offsets(list(partitions))

    thread._highwaters = highwaters


def take_over_transactions(consumer: Any) -> None:
    """Keep Faust's transaction manager from starting producers and committing transactions.

    ``TransactionManager.on_rebalance`` would start its producers (unused here) and
    ``Consumer._commit_offsets`` calls ``transactions.commit``, then notes the offsets as
    committed when it returns true: every batch committed its own transactions with its
    offsets already, so Faust's commit only takes note."""

    async def on_rebalance(assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        return None

    async def commit(offsets: Any, start_new_transaction: bool = True) -> bool:
        return True

    transactions: Any = consumer.transactions
    transactions.on_rebalance = on_rebalance
    transactions.commit = commit


# -- the aiokafka producer (faust.transport.drivers.aiokafka.Producer) ------------------------
# Faust's producer sends one record at a time (a future and a buffer slot each); outputs.py
# hands aiokafka whole record batches (its public ``create_batch``/``send_batch``), on the
# aiokafka producer Faust started but does not expose. Checked on faust-streaming 0.15.3,
# aiokafka 0.14.0.


def aiokafka_producer(producer: AIOKafkaDriverProducer) -> Any:
    """The ``aiokafka.AIOKafkaProducer`` behind Faust's producer (aiokafka is untyped)."""
    return producer._ensure_producer()


# -- a table's RocksDB store (faust.stores.rocksdb.Store) -------------------------------------
# Faust writes a table one key at a time through its changelog and looks an unindexed key up
# in every partition; state.py reads and writes one partition's database directly, with the
# store's own key encoding. Checked on faust-streaming 0.15.3 (rocksdict binding).


def store_db(store: RocksDBStore, partition: int) -> Any:
    """The database of one table partition (opened on first use, as Faust does)."""
    return store._db_for_partition(partition)


def store_key_encoder(store: RocksDBStore) -> Callable[[Any], bytes]:
    """How the store encodes a key (the table's key type and serializer)."""
    return store._encode_key
