"""Contract tests of the runtime's hooks into Faust and aiokafka, against the real broker.

The runtime replaces Faust's record path and reaches into faust-streaming's and aiokafka's
internals. The broker-free tests of those parts (tests/pipelines/runtime/test_bulk.py,
tests/unit/runtime/test_offset_watch.py) run against stand-ins for the private APIs and
would keep passing if an upgrade changed them; these run the worker's own Faust app
(:func:`~pipelines.runtime.app.create_app`) in the test's event loop and check, with
kafka-python clients that share no code with the runtime, what each hook must do for the
runtime to be right:

* :class:`~pipelines.runtime.ingress.BulkIngress`: registered topics leave Faust's fetches
  for their source, with offsets, in order; other topics still reach Faust's streams; a
  full source takes its partition out of fetching and puts it back once drained;
* :func:`~pipelines.runtime.ingress.bulk_run` (through ``bulk_agent``): a batch is acked,
  so committed, only after its outputs were delivered; a failed batch is dead-lettered,
  then committed past;
* :func:`~pipelines.runtime.offsets.faust_committed`: the coordinator's committed offset;
* :func:`~pipelines.runtime.offsets.file_gap`: Faust's commit moves past a filed gap;
* :func:`~pipelines.runtime.app.event_scope`, :class:`~pipelines.runtime.outputs.FaustOutputs`
  and :class:`~pipelines.runtime.state.TableState`: table writes land on the event's
  changelog partition under Faust's own key bytes; keyed outputs go where Kafka's default
  partitioner puts them; TableState's RocksDB keys are the ones Faust's store reads and
  writes, in the running app (a restart alone would not tell: Faust's recovery replays the
  changelog into RocksDB) and after a recovery from the changelogs into an empty folder;
* :func:`~pipelines.runtime.offsets.kafka_refetch`: exactly ``[start, end)`` of a partition.

Every hook could be tested in-process, so none needs a worker subprocess. Deadlines only
turn a hang into a failure; nothing asserts on how long a step took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import faust
from faust.types import TP

from pipelines.runtime.app import create_app, raw_topic
from pipelines.runtime.ingress import BulkIngress, bulk_agent
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.offsets import (
    RecoveredEvent,
    RecoveredMessage,
    faust_committed,
    file_gap,
    kafka_refetch,
)
from pipelines.runtime.outputs import FaustOutputs, completed
from pipelines.runtime.policies import FailurePolicies
from pipelines.runtime.stages import Stages
from pipelines.runtime.state import TableState
from pipelines.runtime.steps import DeadLetterSink, Handover, start_batch
from pipelines.settings import PolicySettings, Settings
from processors.common.schemas import DeadLetter, decode_dead_letter
from tests.integration.faust_harness import (
    BatchLog,
    ContractStep,
    collector,
    committed,
    dead_letter_sink,
    new_topic,
    produce,
    read_records,
    running,
    set_committed,
    wait_for,
    wait_until,
)

WITHIN_S = 0.05  # how long a bulk batch waits to fill


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


def values(events: list[Any]) -> list[tuple[str, int, bytes]]:
    return [(e.message.topic, e.message.partition, e.message.value) for e in events]


async def commit_now(app: faust.App, settings: Settings, topic: str, partition: int) -> int | None:
    """Let Faust commit what it may, then ask the coordinator what the group has."""
    await app.consumer.commit()
    return await committed(settings, app.conf.id, topic, partition)


def test_bulk_ingress_takes_registered_topics_out_of_faust_fetches(settings: Settings) -> None:
    bulk = new_topic(settings, "bulk", 3)
    other = new_topic(settings, "other", 1)

    async def scenario() -> None:
        app = create_app(settings, "ingress")
        log = BatchLog(dead_letter_sink(app, settings.topics.dead_letters))
        channel = raw_topic(app, bulk, 3)
        bulk_agent(app, BulkIngress(app), channel, "bulk", log.start, 4, WITHIN_S, _no_refetch)
        # One Faust stream on both topics: whatever of ``bulk`` reached Faust's per-record
        # path would come before the marker sent after the bulk records were taken.
        both = app.topic(bulk, other, key_serializer="raw", value_serializer="raw")
        seen = collector(app, both, "spy")
        async with running(app):
            records = [(b"k%d" % i, b"v%d" % i, 0 if i < 5 else 2) for i in range(8)]
            sent = await produce(settings, bulk, records)
            await produce(settings, other, [(None, b"o0", 0), (None, b"o1", 0)])
            await wait_until(lambda: sum(map(len, log.batches)) == 8, "the bulk records arrive")
            await produce(settings, other, [(None, b"marker", 0)])
            await wait_until(lambda: len(seen) == 3, "Faust's stream gets the other topic")

        assert [o for p, o in sent] == [0, 1, 2, 3, 4, 0, 1, 2]
        assert log.offsets(0) == [0, 1, 2, 3, 4]
        assert log.offsets(2) == [0, 1, 2]
        by_partition = sorted(values([e for b in log.batches for e in b]), key=lambda v: v[1])
        assert by_partition == [(bulk, p, v) for _, v, p in records]
        assert values(seen) == [(other, 0, b"o0"), (other, 0, b"o1"), (other, 0, b"marker")]

    run(scenario())


def test_a_full_bulk_source_stops_fetching_its_partition_until_drained(
    settings: Settings,
) -> None:
    bulk = new_topic(settings, "bulk", 1)
    other = new_topic(settings, "other", 1)
    tp = TP(bulk, 0)

    async def scenario() -> None:
        app = create_app(settings, "pause")
        log = BatchLog(dead_letter_sink(app, settings.topics.dead_letters))
        log.gate.clear()  # the first batch is held: the source fills up
        ingress = BulkIngress(app)
        # Batches of 2: the source holds at most 4 * 2 records before it pauses.
        bulk_agent(
            app, ingress, raw_topic(app, bulk, 1), "bulk", log.start, 2, WITHIN_S, _no_refetch
        )
        others = collector(app, raw_topic(app, other, 1), "others")
        source = ingress.sources[bulk]
        async with running(app):
            await produce(settings, bulk, [(None, b"a%d" % i, 0) for i in range(12)])
            await wait_until(lambda: bool(source.paused) and len(log.batches) == 1, "a pause")
            assert source.paused == {tp}
            assert len(source.buffer) >= source.limit
            held = [m.offset for m in source.buffer]  # the step is blocked: nothing is taken
            await produce(settings, bulk, [(None, b"b%d" % i, 0) for i in range(5)])
            await produce(settings, other, [(None, b"marker", 0)])
            # Fetched after the second wave was sent: a fetch of the paused partition would
            # have brought that wave too.
            await wait_until(lambda: len(others) == 1, "the other topic still flows")
            assert [m.offset for m in source.buffer] == held
            log.gate.set()
            await wait_until(lambda: len(log.offsets(0)) == 17, "the partition resumes")
            assert not source.paused
        assert log.offsets(0) == list(range(17))

    run(scenario())


def test_a_bulk_batch_is_committed_only_after_its_outputs_were_delivered(
    settings: Settings,
) -> None:
    bulk = new_topic(settings, "bulk", 3)
    out = new_topic(settings, "out", 3)
    dead_topic = settings.topics.dead_letters

    async def scenario() -> None:
        app = create_app(settings, "acks")
        outputs = FaustOutputs(app, [out, dead_topic])
        dead = DeadLetterSink(outputs, dead_topic, StepMetrics())
        confirm = asyncio.Event()  # the broker's answer as bulk_run sees it, when the test says
        handed: list[Handover] = []

        async def handle(events: Any) -> None:
            for event in events:
                await outputs.send(out, event.message.key, event.message.value)

        async def confirmed_later(delivery: asyncio.Future[None]) -> None:
            await delivery
            await confirm.wait()

        step = ContractStep("contract", dead, handle)

        async def start(events: list[Any]) -> Handover:
            handover = await start_batch(step, events)
            handed.append(handover)
            return replace(
                handover, delivery=asyncio.ensure_future(confirmed_later(handover.delivery))
            )

        bulk_agent(
            app, BulkIngress(app), raw_topic(app, bulk, 3), "bulk", start, 10, WITHIN_S, _no_refetch
        )
        async with running(app):
            await produce(settings, bulk, [(b"k%d" % i, b"v%d" % i, 1) for i in range(5)])
            delivered = await read_records(settings, out, at_least=5)
            assert sorted(r.value for r in delivered) == [b"v%d" % i for i in range(5)]
            await wait_until(
                lambda: sum(len(h.events) for h in handed if h.delivery.done()) == 5,
                "the broker acknowledges the outputs",
            )
            # Delivered, but not yet confirmed to bulk_run: nothing is acked, so nothing
            # is committed.
            assert await commit_now(app, settings, bulk, 1) is None
            confirm.set()
            await wait_for(lambda: commit_now(app, settings, bulk, 1), lambda c: c == 5, "commit")
            assert await faust_committed(app)(TP(bulk, 1)) == 5

    run(scenario())


def test_a_failed_bulk_batch_is_dead_lettered_then_committed_past(settings: Settings) -> None:
    bulk = new_topic(settings, "bulk", 3)
    dead_topic = settings.topics.dead_letters

    async def scenario() -> None:
        app = create_app(settings, "fails")
        dead = dead_letter_sink(app, dead_topic)

        async def handle(events: Any) -> None:
            raise RuntimeError("contract: this step fails")

        # Declared as every pipeline declares its steps: the default policy dead-letters.
        Stages(app, settings).declare(
            raw_topic(app, bulk, 3), ContractStep("contract", dead, handle), 10, WITHIN_S
        )
        async with running(app):
            await produce(settings, bulk, [(b"k%d" % i, b"v%d" % i, 2) for i in range(4)])
            records = await read_records(settings, dead_topic, at_least=4)
            await wait_for(lambda: commit_now(app, settings, bulk, 2), lambda c: c == 4, "commit")
        letters = [decode_dead_letter(r.value) for r in records]
        assert all(isinstance(letter, DeadLetter) for letter in letters), letters
        got = [
            (d.reason, d.step, d.topic, d.partition, d.offset, d.key, d.value)
            for d in letters
            if isinstance(d, DeadLetter)
        ]
        expected = [
            ("processing_error", "contract", bulk, 2, i, b"k%d" % i, b"v%d" % i) for i in range(4)
        ]
        assert sorted(got, key=lambda g: g[4]) == expected
        assert all(
            "contract: this step fails" in d.detail for d in letters if isinstance(d, DeadLetter)
        )

    run(scenario())


def test_faust_committed_asks_the_group_coordinator(settings: Settings) -> None:
    topic = new_topic(settings, "committed", 2)

    async def scenario() -> None:
        app = create_app(settings, "committed")
        await produce(settings, topic, [(None, b"v%d" % i, 0) for i in range(10)])
        await asyncio.to_thread(set_committed, settings, app.conf.id, topic, 0, 7)
        events = collector(app, raw_topic(app, topic, 2), "collect")
        async with running(app):
            ask = faust_committed(app)
            assert await ask(TP(topic, 0)) == 7
            assert await ask(TP(topic, 1)) is None  # never committed
            await wait_until(lambda: len(events) == 3, "Faust reads from the committed offset")
            for event in events:
                app.consumer.ack(event.message)
            await wait_for(lambda: commit_now(app, settings, topic, 0), lambda c: c == 10, "commit")
            assert await ask(TP(topic, 0)) == 10  # asked again, not remembered

    run(scenario())


def test_a_filed_gap_lets_faust_commit_past_records_read_back(settings: Settings) -> None:
    bulk = new_topic(settings, "bulk", 1)
    read_back = (3, 4, 5)

    async def scenario() -> None:
        app = create_app(settings, "gaps")
        dead = dead_letter_sink(app, settings.topics.dead_letters)
        seen: list[int] = []

        async def start(events: list[Any]) -> Handover:
            # As if 3..5 had come as records read back (RecoveredEvent): never acked.
            seen.extend(e.message.offset for e in events)
            acked = [e for e in events if e.message.offset not in read_back]
            return Handover("contract", acked, completed(), FailurePolicies(PolicySettings(), dead))

        bulk_agent(
            app, BulkIngress(app), raw_topic(app, bulk, 1), "bulk", start, 10, WITHIN_S, _no_refetch
        )
        async with running(app):
            await produce(settings, bulk, [(None, b"v%d" % i, 0) for i in range(10)])
            await wait_until(lambda: len(seen) == 10, "the records arrive")
            # Faust commits up to the first offset never acked, and no further.
            await wait_for(lambda: commit_now(app, settings, bulk, 0), lambda c: c == 3, "commit")
            gap = [RecoveredEvent(RecoveredMessage(bulk, 0, o, None, None)) for o in read_back]
            await file_gap(app.consumer, gap)
            await wait_for(lambda: commit_now(app, settings, bulk, 0), lambda c: c == 10, "gap")

    run(scenario())


def _tables(app: faust.App, dead_topic: str) -> tuple[Any, TableState, ContractStep]:
    """A plain Faust table, a TableState over another, and a step writing both in scope."""
    native = app.Table("native", default=None, partitions=3, key_type=int, value_type=bytes)
    stated = app.Table("stated", default=None, partitions=3, key_type=int, value_type=bytes)
    state = TableState(app, stated)
    outputs = FaustOutputs(app, [dead_topic], [state])
    dead = DeadLetterSink(outputs, dead_topic, StepMetrics())

    async def handle(events: Any) -> None:
        for event in events:
            key = int(event.message.key)
            with outputs.scope(event):
                native[key] = event.message.value
                state[key] = event.message.value

    return native, state, ContractStep("contract", dead, handle)


# Keyed records on partitions their keys do not hash to: the table's changelog partition is
# the event's, whatever the key.
TABLE_RECORDS = [(b"%d" % k, b"value-%d" % k, (2 * k + 1) % 3) for k in range(1, 10)]


def test_table_writes_in_event_scope_land_on_the_events_changelog_partition(
    settings: Settings,
) -> None:
    bulk = new_topic(settings, "bulk", 3)

    async def scenario() -> None:
        app = create_app(settings, "scope")
        native, state, step = _tables(app, settings.topics.dead_letters)
        Stages(app, settings).declare(raw_topic(app, bulk, 3), step, 4, WITHIN_S)
        async with running(app):
            await produce(settings, bulk, TABLE_RECORDS)
            faust_log = await read_records(settings, native.changelog_topic.get_topic_name(), 9)
            state_log = await read_records(settings, state.changelog, 9)
        expected = sorted((p, v) for _, v, p in TABLE_RECORDS)
        assert sorted((r.partition, r.value) for r in faust_log) == expected
        # TableState's changelog records carry the key bytes Faust's own table writes.
        assert {r.key: (r.partition, r.value) for r in state_log} == {
            r.key: (r.partition, r.value) for r in faust_log
        }

    run(scenario())


def test_table_state_keys_are_the_keys_faust_stores_in_rocksdb(settings: Settings) -> None:
    bulk = new_topic(settings, "bulk", 3)

    async def scenario() -> None:
        app = create_app(settings, "store")
        native, state, step = _tables(app, settings.topics.dead_letters)
        Stages(app, settings).declare(raw_topic(app, bulk, 3), step, 4, WITHIN_S)
        async with running(app):
            await produce(settings, bulk, TABLE_RECORDS)
            await read_records(settings, state.changelog, 9)  # the batches were flushed
            state.write_back()  # TableState's values into RocksDB, under its own keys
            reader = TableState(app, native)  # TableState's reads of Faust's own writes
            for key, value, partition in TABLE_RECORDS:
                assert state.table.get(int(key)) == value  # Faust's own read finds TableState's
                assert reader.read(int(key), partition) == value
                assert reader.read(int(key), (partition + 1) % 3) is None

        # The same app on an empty state folder: Faust's recovery rebuilds both stores from
        # the changelogs, and each side again finds what the other wrote.
        fresh = settings.model_copy(update={"home": settings.home / "fresh"})
        again = create_app(fresh, "store")
        native, state, step = _tables(again, settings.topics.dead_letters)
        Stages(again, fresh).declare(raw_topic(again, bulk, 3), step, 4, WITHIN_S)
        async with running(again):
            reader = TableState(again, native)
            for key, value, partition in TABLE_RECORDS:
                assert state.table.get(int(key)) == value
                assert reader.read(int(key), partition) == value

    run(scenario())


def test_faust_outputs_put_keyed_records_where_kafkas_default_partitioner_does(
    settings: Settings,
) -> None:
    out = new_topic(settings, "keyed", 5)
    reference = new_topic(settings, "reference", 5)
    keys = [b"customer-%d" % i for i in range(40)]

    async def scenario() -> None:
        app = create_app(settings, "partitions")
        async with running(app):
            outputs = FaustOutputs(app, [out])
            for key in keys:
                await outputs.send(out, key, b"first")
            await outputs.delivered()
            for key in keys:  # again, through the cache of each key's partition
                await outputs.send(out, key, b"second")
            await outputs.send(out, None, b"pinned", partition=3)
            await outputs.delivered()
        sent = await produce(settings, reference, [(key, b"", None) for key in keys])
        chosen = {key: partition for key, (partition, _) in zip(keys, sent, strict=True)}
        assert len(set(chosen.values())) > 1  # the keys spread over the partitions
        records = await read_records(settings, out, at_least=2 * len(keys) + 1)
        assert sorted(
            (r.key, r.value, r.partition) for r in records if r.key is not None
        ) == sorted((key, value, chosen[key]) for key in keys for value in (b"first", b"second"))
        assert [(r.value, r.partition) for r in records if r.key is None] == [(b"pinned", 3)]

    run(scenario())


def test_kafka_refetch_reads_exactly_the_range(settings: Settings) -> None:
    topic = new_topic(settings, "refetch", 2)

    async def scenario() -> None:
        await produce(settings, topic, [(b"k%d" % i, b"one-%d" % i, 1) for i in range(10)])
        await produce(settings, topic, [(None, b"zero-%d" % i, 0) for i in range(5)])
        refetch = kafka_refetch(settings)
        middle = await refetch(topic, 1, 3, 7)
        assert [(m.topic, m.partition, m.offset, m.key, m.value) for m in middle] == [
            (topic, 1, o, b"k%d" % o, b"one-%d" % o) for o in range(3, 7)
        ]
        assert [m.offset for m in await refetch(topic, 1, 0, 10)] == list(range(10))
        assert [m.value for m in await refetch(topic, 0, 4, 5)] == [b"zero-4"]

    run(scenario())


async def _no_refetch(topic: str, partition: int, start: int, end: int) -> list[RecoveredMessage]:
    """Nothing is ever skipped in these tests; a read-back would be a failure of its own."""
    raise AssertionError(f"unexpected read-back of {topic}/{partition}@{start}..{end - 1}")


def test_exactly_once_hooks_own_the_transactions_and_recovery_reads_past_markers(
    settings: Settings,
) -> None:
    """Under exactly_once: Faust's app is a worker in transactional mode (``mark_worker``),
    its transaction manager starts no producer and its commit only takes note
    (``take_over_transactions``); a batch's output and its offsets commit in the runtime's
    transaction of its input partition; highwaters are the broker's last stable offsets
    (``stable_highwaters``), which a fresh app's recovery reads the changelog up to."""
    eos = settings.model_copy(update={"processing_guarantee": "exactly_once"})
    bulk = new_topic(eos, "eos-in", 2)
    out = new_topic(eos, "eos-out", 2)
    dead_topic = eos.topics.dead_letters

    def build(conf: Settings) -> tuple[faust.App, TableState]:
        app = create_app(conf, "eos")
        table = app.Table("eos-table", default=None, partitions=2, key_type=int, value_type=bytes)
        state = TableState(app, table)
        outputs = FaustOutputs(app, [out, dead_topic], [state])
        assert outputs.transactions is not None
        assert outputs.by_source
        dead = DeadLetterSink(outputs, dead_topic, StepMetrics())

        async def handle(events: Any) -> None:
            for event in events:
                with outputs.scope(event):
                    state[int(event.message.value)] = event.message.value
                    await outputs.send(out, event.message.key, event.message.value)

        step = ContractStep("eos", dead, handle)
        Stages(app, conf).declare(raw_topic(app, bulk, 2), step, 10, WITHIN_S)
        return app, state

    async def scenario() -> None:
        app, _ = build(eos)
        assert app.in_transaction
        assert app.consumer.in_transaction
        transactions: Any = app.streamwise_transactions  # type: ignore[attr-defined]
        async with running(app):
            await produce(eos, bulk, [(None, b"%d" % i, i % 2) for i in range(6)])
            delivered = await asyncio.to_thread(_read_committed, eos, out, 6)
            assert sorted(r.value for r in delivered) == [b"%d" % i for i in range(6)]
            # Committed by the batches' transactions (offset 3 on each partition).
            for partition in (0, 1):
                await wait_for(
                    lambda p=partition: committed(eos, app.conf.id, bulk, p),  # type: ignore[misc]
                    lambda c: c == 3,
                    "offsets committed with the outputs",
                )
            assert transactions.commits >= 2
            assert set(transactions.producers) <= {f"{app.conf.id}-eos-0", f"{app.conf.id}-eos-1"}
            assert not app.producer._transaction_producers  # Faust's manager started none
            assert await app.consumer.commit() in (True, False)  # only takes note: no error
            table = app.tables["eos-table"]
            changelog = TP(table.changelog_topic.get_topic_name(), 0)
            highwaters = await app.consumer.highwaters(changelog)
            # 3 records and a commit marker after each transaction: past the last record.
            assert highwaters[changelog] >= 4
        # A fresh app with an empty state folder recovers the changelog past the markers.
        fresh = eos.model_copy(update={"home": eos.home / "fresh"})
        assert fresh.state_dir != eos.state_dir
        app2, state2 = build(fresh)
        async with running(app2):
            await wait_until(lambda: app2.tables.recovery.completed.is_set(), "recovery")
            values = {k: state2.table.get(k) for k in range(6)}
            assert values == {i: b"%d" % i for i in range(6)}

    run(scenario())


def _read_committed(settings: Settings, topic: str, at_least: int) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    from pipelines.kafka.admin import client_config

    consumer = KafkaConsumer(
        **client_config(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        for _ in range(300):  # polls, each at most 0.2 s
            for batch in consumer.poll(timeout_ms=200).values():
                found.extend(batch)
            if len(found) >= at_least:
                break
        return found
    finally:
        consumer.close()
