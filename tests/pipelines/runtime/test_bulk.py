"""The bulk reader against a stand-in for Faust's consumer: what it takes out of a fetch, what
it drops as Faust would, its flow control, and when a batch is acked (never before its
outputs were acknowledged). The real consumer is exercised by the integration tests.

These stand-ins would keep passing if a Faust upgrade changed the internals they copy; the
hooks themselves are checked against a real broker and Faust app in
tests/integration/test_runtime_contracts.py."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP

from pipelines.runtime.ingress import BulkIngress, bulk_run
from pipelines.runtime.steps import Handover

T, L, OTHER = TP("tx", 0), TP("labels", 0), TP("other", 0)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes = b"v"
    key: bytes | None = None


@dataclass
class Message:
    tp: TP
    offset: int
    value: bytes
    generation_id: int | None = None
    acked: bool = False
    tracked: bool = False
    key: bytes | None = None

    @property
    def topic(self) -> str:
        return self.tp.topic

    @property
    def partition(self) -> int:
        return self.tp.partition

    def __hash__(self) -> int:
        return id(self)


class FlowControl:
    def is_active(self) -> bool:
        return True


@dataclass
class Consumer:
    """The parts of Faust's consumer the bulk reader touches."""

    fetches: list[dict[Any, list[Record]]] = field(default_factory=list)
    flow_active: bool = True
    should_stop: bool = False
    active: set[TP] = field(default_factory=lambda: {T, L, OTHER})
    _paused_partitions: set[TP] = field(default_factory=set)
    _buffered_partitions: set[TP] = field(default_factory=set)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    gaps: list[tuple[TP, int, int]] = field(default_factory=list)
    acks: list[tuple[TP, int]] = field(default_factory=list)
    _unacked_messages: set[Any] = field(default_factory=set)
    generation: int = 1
    _commit_fut: Any = None

    async def _wait_next_records(self, wait_s: float) -> tuple[Any, Any]:
        return (self.fetches.pop(0) if self.fetches else {}), self.active

    def _get_active_partitions(self) -> set[TP]:
        return self.active

    def assignment(self) -> set[TP]:
        return {T, L, OTHER}

    def _to_message(self, tp: TP, record: Record) -> Message:
        return Message(tp, record.offset, record.value)

    async def _add_gap(self, tp: TP, first: int, last: int) -> None:
        self.gaps.append((tp, first, last))

    def ack(self, message: Message) -> None:
        message.acked = True
        self._unacked_messages.discard(message)
        self.acks.append((message.tp, message.offset))

    def __post_init__(self) -> None:
        for tp in (T, L, OTHER):
            self._read_offset.setdefault(tp, None)


class App:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.flow_control = FlowControl()
        self.conf = type("Conf", (), {"broker_commit_interval": 1.0})()

    @property
    def consumer_generation_id(self) -> int:
        return self.consumer.generation


def records(tp: TP, first: int, last: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, o) for o in range(first, last + 1)]


def fetch(consumer: Consumer, batch: dict[Any, list[Record]]) -> dict[Any, list[Record]]:
    """Run one fetch through the installed hook; what Faust's own path still sees."""
    consumer.fetches.append(batch)
    left, _ = asyncio.run(consumer._wait_next_records(1.0))
    return dict(left)


def ingress(limit: int = 100) -> tuple[Consumer, App, Any, Any]:
    consumer = Consumer()
    app = App(consumer)
    bulk = BulkIngress(app)  # type: ignore[arg-type]
    return consumer, app, bulk.source(["tx"], limit), bulk.source(["labels"], limit)


def test_registered_topics_leave_the_fetch_for_their_source() -> None:
    consumer, _, tx, labels = ingress()
    left = fetch(consumer, {T: records(T, 0, 2), L: records(L, 5, 5), OTHER: records(OTHER, 0, 0)})
    assert list(left) == [OTHER]  # Faust's per-record path sees only the others
    assert [(m.offset, m.generation_id) for m in tx.buffer] == [(0, 1), (1, 1), (2, 1)]
    assert [m.offset for m in labels.buffer] == [5]
    assert consumer._read_offset[T] == 2  # as Faust's fetcher keeps it


def test_records_faust_would_drop_are_dropped_and_jumps_are_gaps() -> None:
    consumer, _, tx, _ = ingress()
    consumer._read_offset[T] = 10  # a seek to the committed offset 10
    fetch(consumer, {T: records(T, 8, 11) + records(T, 15, 15)})
    assert [m.offset for m in tx.buffer] == [10, 11, 15]
    assert consumer.gaps == [(T, 12, 14)]  # committable past, but 15 itself is not

    consumer.flow_active = False  # a rebalance: Faust seeks back to the committed offsets
    fetch(consumer, {T: records(T, 16, 17)})
    consumer.flow_active = True
    consumer.active.discard(T)  # a paused partition
    fetch(consumer, {T: records(T, 16, 17)})
    assert [m.offset for m in tx.buffer] == [10, 11, 15]


def test_a_full_source_pauses_its_partition_until_it_drained_to_half() -> None:
    consumer, _, tx, _ = ingress(limit=4)
    fetch(consumer, {T: records(T, 0, 4)})
    assert T not in consumer.active
    assert L in consumer.active
    assert [m.offset for m in tx.take(2, consumer)] == [0, 1]
    assert T not in consumer.active  # 3 left: more than half of 4
    tx.take(1, consumer)
    assert T in consumer.active

    fetch(consumer, {T: records(T, 5, 8)})
    assert T not in consumer.active
    consumer._paused_partitions.add(T)  # meanwhile Faust paused it (recovery)
    tx.take(10, consumer)
    assert T not in consumer.active  # Faust resumes it, not the source


class Step:
    """Hands over each batch; deliveries finish when the test says so."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.deliveries: list[asyncio.Future[None]] = []

    async def start(self, events: list[Any]) -> Handover:
        self.batches.append([e.message.offset for e in events])
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return Handover("test", events, delivery, None)  # type: ignore[arg-type]


async def refetch(topic: str, partition: int, start: int, end: int) -> list[Any]:
    return []


def test_batches_overlap_delivery_and_are_acked_only_once_delivered() -> None:
    async def scenario() -> None:
        consumer, app, tx, _ = ingress()
        step = Step()
        runner = asyncio.ensure_future(
            bulk_run(app, tx, step.start, 3, 0.01, refetch, depth=2)  # type: ignore[arg-type]
        )
        tx.put([Message(T, o, b"v", 1) for o in range(5)], T, consumer)
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert step.batches == [[0, 1, 2], [3, 4]]  # the second while the first is in flight
        assert consumer.acks == []  # nothing acknowledged by the broker yet
        assert len(consumer._unacked_messages) == 5  # a rebalance would wait for them
        step.deliveries[1].set_result(None)
        await asyncio.sleep(0.05)
        assert consumer.acks == []  # acks go in order: the first batch is still out
        step.deliveries[0].set_result(None)
        await asyncio.sleep(0.05)
        assert [o for _, o in consumer.acks] == [0, 1, 2, 3, 4]
        assert not consumer._unacked_messages

        consumer.generation = 2  # a rebalance: what was fetched before it is skipped
        tx.put([Message(T, o, b"v", 1) for o in range(5, 7)], T, consumer)
        tx.put([Message(T, o, b"v", 2) for o in range(5, 7)], T, consumer)
        await asyncio.sleep(0.05)
        assert [o for batch in step.batches[2:] for o in batch] == [5, 6]  # each once
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_consumer_without_the_parts_it_needs_is_refused() -> None:
    consumer = Consumer()
    app = App(consumer)
    del consumer._read_offset
    with pytest.raises(RuntimeError, match="_read_offset"):
        BulkIngress(app).source(["tx"], 10)  # type: ignore[arg-type]


class Batch:
    """aiokafka's record batch, as FaustOutputs fills it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, timestamp: Any, key: bytes | None, value: bytes | None) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        pass


class Producer:
    """aiokafka's producer as FaustOutputs uses it; each send's future is the test's."""

    def __init__(self) -> None:
        self.sends: list[tuple[str, Batch, asyncio.Future[None]]] = []
        self.client = self  # client.cluster.available_partitions_for_topic
        self.cluster = self

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def _ensure_producer(self) -> Producer:  # Faust's producer hands out this one
        return self

    def create_batch(self) -> Batch:
        return Batch()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send_batch(self, batch: Batch, topic: str, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sends.append((topic, batch, future))
        return future

    def answer(self, fail: bool) -> None:
        """Answer every send not answered yet."""
        for _, _, future in self.sends:
            if not future.done():
                if fail:
                    future.set_exception(RuntimeError("RecordTooLarge"))
                else:
                    future.set_result(None)


def test_a_refused_batch_leaves_no_trace_in_state_and_the_batch_built_on_it_is_redone(
    tmp_path: Any,
) -> None:
    """Two batches in flight; the first's outputs are refused. Its payments must count
    nowhere: not in memory, not in RocksDB, not in the changelog's last word; the second,
    computed on the refused state, is handled again on the state before it."""
    from pipelines.runtime.app import create_app
    from pipelines.runtime.metrics import StepMetrics
    from pipelines.runtime.outputs import FaustOutputs
    from pipelines.runtime.policies import FailurePolicies
    from pipelines.runtime.state import TableState, load, save
    from pipelines.runtime.steps import DeadLetterSink, start_batch
    from pipelines.settings import PolicySettings, Settings
    from tests.pipelines.runtime.test_table_state import Counter

    real = create_app(Settings(home=tmp_path, app_prefix="redo"), "transactions")
    table = real.Table("counts", default=None, partitions=1, key_type=int, value_type=bytes)
    producer = Producer()

    class Counting:
        name = "count"

        def __init__(self) -> None:
            self.state = TableState(real, table)
            outputs = FaustOutputs(real, ["dead", "out"], [self.state])
            outputs.app = type("A", (), {"producer": producer})()  # type: ignore[assignment]
            self.outputs = outputs
            self.dead = DeadLetterSink(outputs, "dead", StepMetrics())
            self.failures = FailurePolicies(PolicySettings(), self.dead)
            self.handled: list[list[int]] = []

        async def handle(self, events: Any) -> None:
            self.handled.append([e.message.offset for e in events])
            for event in events:
                counter = load(self.state, 1, Counter.from_bytes, event)
                counter.n += 1
                save(self.state, 1, counter, event)
            await self.outputs.send("out", None, b"%d" % counter.n, 0)

    async def scenario() -> None:
        consumer, app, tx, _ = ingress()
        step = Counting()

        async def start(events: list[Any]) -> Handover:
            return await start_batch(step, events)

        async def turns(until: Any, answering: bool = False) -> None:
            for _ in range(500):  # loop turns, not time
                if until():
                    return
                if answering:  # the broker takes whatever is sent from now on
                    producer.answer(fail=False)
                await asyncio.sleep(0)
            raise AssertionError("never happened")

        runner = asyncio.ensure_future(
            bulk_run(app, tx, start, 3, 0.0, refetch, depth=2)  # type: ignore[arg-type]
        )
        tx.put([Message(T, o, b"v", 1) for o in range(5)], T, consumer)
        await turns(lambda: step.handled == [[0, 1, 2], [3, 4]])
        producer.answer(fail=True)  # both batches' sends refused (the second built on 5)
        # The first batch's dead letters go out, then the second is handled again.
        await turns(lambda: len(consumer.acks) == 5, answering=True)
        assert step.handled[2:] == [[3, 4]]
        assert load(step.state, 1, Counter.from_bytes, tx_event(3)).n == 2  # not 5
        topic = step.state.changelog
        changelog = [
            value for t, batch, _ in producer.sends if t == topic for _, value in batch.records
        ]
        assert changelog[-1] == b"2"  # the changelog's last word is the kept state
        step.state.write_back()
        assert table.get(1) == b"2"
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def tx_event(offset: int) -> Any:
    from tests.pipelines.fakes import FakeEvent, FakeMessage

    return FakeEvent(FakeMessage("tx", 0, offset, None, b"v"))
