"""The stream's offset watch: a skipped range is read back, in-order streams cost nothing."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from pipelines.batching import OffsetWatch, RecoveredMessage


class Kafka:
    """A partition whose offsets 0..99 hold records, except 40..44 (transaction markers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    async def refetch(
        self, topic: str, partition: int, start: int, end: int
    ) -> list[RecoveredMessage]:
        self.calls.append((topic, partition, start, end))
        return [
            RecoveredMessage(topic, partition, o, b"k", b"v%d" % o)
            for o in range(start, end)
            if not 40 <= o < 45
        ]


P0 = TP("t", 0)


def see(watch: OffsetWatch, offsets: list[int], tp: TP = P0) -> list[int]:
    """Offsets in the order the batch would handle them."""

    async def go() -> list[int]:
        handled: list[int] = []
        for offset in offsets:
            handled += [e.message.offset for e in await watch.check(tp, offset)]
            handled.append(offset)
        return handled

    return asyncio.run(go())


def test_consecutive_offsets_and_rereads_fetch_nothing() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [0, 1, 2, 3, 1, 2, 3, 4]) == [0, 1, 2, 3, 1, 2, 3, 4]
    assert see(watch, [50, 51], TP("t", 1)) == [50, 51]  # a partition may start anywhere
    assert (kafka.calls, watch.holes) == ([], 0)


def test_a_skipped_range_is_read_back_before_the_event_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [10, 11, 15, 16]) == [10, 11, 12, 13, 14, 15, 16]
    assert kafka.calls == [("t", 0, 12, 15)]
    assert (watch.holes, watch.recovered) == (1, 3)
    assert "offsets 12..14 never reached the stream; read 3 record(s) back" in caplog.text


def test_a_real_gap_reads_back_only_what_exists() -> None:
    kafka = Kafka()
    watch = OffsetWatch(kafka.refetch)
    assert see(watch, [38, 39, 45]) == [38, 39, 45]  # 40..44 hold no records
    assert watch.recovered == 0


class FakeState:
    def __init__(self, position: int) -> None:
        self._position = position


class FakeApp:
    """What BatchReader's sweep reads of a Faust app: positions, commits, generation."""

    def __init__(self, positions: dict[TP, int], committed: dict[TP, int]) -> None:
        from types import SimpleNamespace

        self.gaps: list[tuple[TP, int, int]] = []
        states = {tp: FakeState(p) for tp, p in positions.items()}
        assignment = SimpleNamespace(_tp_state=states)
        aiokafka = SimpleNamespace(
            _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        )

        async def add_gap(tp: TP, start: int, end: int) -> None:
            self.gaps.append((tp, start, end))

        self.consumer = SimpleNamespace(
            _thread=SimpleNamespace(_ensure_consumer=lambda: aiokafka),
            _committed_offset=committed,
            _add_gap=add_gap,
            _active_partitions=set(positions),
            _paused_partitions=set(),
            _buffered_partitions=set(),
        )
        self.log_end: dict[TP, int] = {}
        self.consumer_generation_id = 1
        self.flow_control = SimpleNamespace(is_active=lambda: True)
        self.states = states


def sweeper(app: FakeApp, kafka: Kafka) -> object:
    from types import SimpleNamespace

    from pipelines.batching import BatchReader

    reader = BatchReader.__new__(BatchReader)
    reader.app = app  # type: ignore[assignment]
    reader.name = "test"
    reader.channel = SimpleNamespace(topics=["t"])
    reader.watch = OffsetWatch(kafka.refetch)
    reader.getter = None
    reader.suspects = {}
    reader.sweep_generation = 1
    reader.gaps = []

    async def ends(tps: list[TP]) -> dict[TP, int]:
        return {tp: app.log_end.get(tp, app.states[tp]._position) for tp in tps}

    reader.ends = ends
    return reader


def test_a_range_skipped_at_the_end_of_a_partition_is_read_back_on_the_second_idle_sweep() -> None:
    """Nothing arrives after the hole, so only the idle sweep can find it."""
    kafka = Kafka()
    app = FakeApp({P0: 60, TP("t", 1): 10, TP("other", 0): 99}, {P0: 30, TP("t", 1): 10})
    reader: object = sweeper(app, kafka)
    queue = asyncio.Queue()  # type: ignore[var-annotated]

    async def sweep() -> list[int]:
        found = await reader._sweep(queue)  # type: ignore[attr-defined]
        return [e.message.offset for e in found]

    # Partition 0: committed 30, fetched up to 59, nothing delivered. The first sweep only
    # suspects it (the records may be in flight); the second reads 30..59 back (40..44 are
    # markers), files the gap for the commit and remembers what it saw.
    assert asyncio.run(sweep()) == []
    assert asyncio.run(sweep()) == [o for o in range(30, 60) if not 40 <= o < 45]
    assert kafka.calls == [("t", 0, 30, 60)]
    assert reader.gaps == [(P0, 30, 59)]  # type: ignore[attr-defined]  # filed once handled
    assert asyncio.run(sweep()) == []  # caught up: nothing more to read
    # Partition 1 is caught up (position == committed); topic "other" is not this reader's.


def test_records_that_arrive_between_sweeps_are_not_read_back() -> None:
    kafka = Kafka()
    app = FakeApp({P0: 60}, {P0: 30})
    reader: object = sweeper(app, kafka)
    queue = asyncio.Queue()  # type: ignore[var-annotated]
    assert asyncio.run(reader._sweep(queue)) == []  # type: ignore[attr-defined]
    reader.watch.last[P0] = 59  # type: ignore[attr-defined]  # the stream delivered them
    assert asyncio.run(reader._sweep(queue)) == []  # type: ignore[attr-defined]
    app.states[P0]._position = 70  # more fetched: a new suspicion, not yet a hole
    assert asyncio.run(reader._sweep(queue)) == []  # type: ignore[attr-defined]
    assert kafka.calls == []
    assert app.gaps == []
    assert reader.gaps == []  # type: ignore[attr-defined]


def test_an_assigned_partition_faust_stopped_fetching_is_fetched_again_not_read_back() -> None:
    kafka = Kafka()
    p1, p2 = TP("t", 1), TP("t", 2)
    app = FakeApp({P0: 60, p1: 10, p2: 10}, {P0: 30, p1: 10, p2: 10})
    app.consumer._active_partitions = {p1}  # type: ignore[attr-defined]
    app.consumer._paused_partitions = {p2}  # type: ignore[attr-defined]  # paused on purpose
    app.consumer._buffered_partitions = {P0}  # type: ignore[attr-defined]
    reader: object = sweeper(app, kafka)
    queue = asyncio.Queue()  # type: ignore[var-annotated]
    for _ in range(2):  # reactivated, then only suspected: its records may still come
        assert asyncio.run(reader._sweep(queue)) == []  # type: ignore[attr-defined]
    assert app.consumer._active_partitions == {P0, p1}  # type: ignore[attr-defined]
    assert app.consumer._buffered_partitions == set()  # type: ignore[attr-defined]
    # Its records are in the consumer's buffer and now come through: nothing read back yet.
    assert kafka.calls == []


def test_a_partition_that_is_not_fetched_at_all_is_read_back_up_to_its_log_end() -> None:
    kafka = Kafka()
    app = FakeApp({P0: 30}, {P0: 30})  # fetch position stuck at the committed offset
    app.log_end[P0] = 50
    reader: object = sweeper(app, kafka)
    queue = asyncio.Queue()  # type: ignore[var-annotated]
    assert asyncio.run(reader._sweep(queue)) == []  # type: ignore[attr-defined]
    found = asyncio.run(reader._sweep(queue))  # type: ignore[attr-defined]
    assert [e.message.offset for e in found] == [o for o in range(30, 50) if not 40 <= o < 45]
    assert reader.gaps == [(P0, 30, 49)]  # type: ignore[attr-defined]
