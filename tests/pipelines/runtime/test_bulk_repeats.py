"""When the bulk reader acks a record delivered again (a repeat): never before the records
read back ahead of it, or handled in a batch still in flight."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pipelines.runtime.ingress import bulk_run
from pipelines.runtime.offsets import RecoveredMessage
from tests.pipelines.runtime.test_bulk import Message, Step, T, ingress


async def refetch(topic: str, partition: int, start: int, end: int) -> list[RecoveredMessage]:
    return [RecoveredMessage(topic, partition, o, None, b"v") for o in range(start, end)]


async def turns(until: Any) -> None:
    for _ in range(500):  # loop turns, not time
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def test_a_repeat_after_a_hole_is_acked_only_with_the_batch_that_read_the_hole_back() -> None:
    """Generation 1: the coordinator does not answer, the partition starts at 1 (batch [1]).
    Generation 2 (committed 0): 1 comes again before 2; 0 is read back into the batch, and 1
    is acked only once that batch was delivered (acked at once, Faust could commit past 0)."""

    async def scenario() -> None:
        consumer, app, tx, _ = ingress()
        step = Step()
        answer: list[int | None] = [None]

        async def committed(tp: Any) -> int | None:
            return answer[0]

        runner = asyncio.ensure_future(
            bulk_run(app, tx, step.start, 3, 0.0, refetch, 2, committed)  # type: ignore[arg-type]
        )
        tx.put([Message(T, 1, b"v", 1)], T, consumer)
        await turns(lambda: step.batches == [[1]])
        step.deliveries[0].set_result(None)
        await turns(lambda: consumer.acks == [(T, 1)])

        consumer.generation, answer[0] = 2, 0
        tx.put([Message(T, o, b"v", 2) for o in (1, 2)], T, consumer)
        await turns(lambda: step.batches[1:] == [[0, 2]])
        assert consumer.gaps == [(T, 0, 0)]  # 0 is not Faust's message: done with the batch
        for _ in range(20):
            await asyncio.sleep(0)
        assert consumer.acks == [(T, 1)]  # the repeat waits for the batch
        step.deliveries[1].set_result(None)
        await turns(lambda: len(consumer.acks) == 3)
        assert consumer.acks == [(T, 1), (T, 2), (T, 1)]
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_repeat_with_no_batch_of_its_own_waits_for_the_batch_in_flight() -> None:
    """[0, 1, 2] in flight; a seek delivers 1 and 2 again: they are acked after 0..2."""

    async def scenario() -> None:
        consumer, app, tx, _ = ingress()
        step = Step()
        runner = asyncio.ensure_future(
            bulk_run(app, tx, step.start, 3, 0.0, refetch, depth=2)  # type: ignore[arg-type]
        )
        tx.put([Message(T, o, b"v", 1) for o in range(3)], T, consumer)
        await turns(lambda: step.batches == [[0, 1, 2]])
        tx.put([Message(T, o, b"v", 1) for o in (1, 2)], T, consumer)
        await turns(lambda: not tx.buffer)
        for _ in range(20):
            await asyncio.sleep(0)
        assert consumer.acks == []
        step.deliveries[0].set_result(None)
        await turns(lambda: len(consumer.acks) == 5)
        assert [o for _, o in consumer.acks] == [0, 1, 2, 1, 2]
        assert step.batches == [[0, 1, 2]]  # handled once
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
