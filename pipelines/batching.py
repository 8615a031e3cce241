"""Micro-batches of Faust events that are acked only after the batch was handled.

Faust's ``Stream.take_events`` acks a batch in a ``finally`` clause, so a batch whose
handler raised or was cancelled (a worker stopping mid-batch) is acked, and then committed,
without its outputs. :func:`take_batches` is the same buffering (fill in the background,
flush when full or after ``within`` seconds) with one change: a batch is acked when the
consumer asks for the next one, that is, after the handler returned normally. An
unfinished batch stays unacked, so its offsets are not committed and it is read again.

It also keeps Faust's periodic commit out of a batch in flight (:class:`CommitBarrier`) and
commits at batch boundaries instead. Under ``exactly_once`` a commit ends the Kafka
transactions; one that fell in the middle of a batch would commit half of the batch's
outputs with none of its offsets, and a crash then would repeat them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faust.types import EventT, StreamT

__all__ = ["CommitBarrier", "take_batches"]


class CommitBarrier:
    """Holds Faust's consumer commits while a batch is handled; commits between batches.

    Faust lets one commit run at a time: ``Consumer.commit`` waits for ``_commit_fut`` and
    then skips. Holding that future for the span of a batch makes a periodic commit that
    fires meanwhile wait and skip; :meth:`commit_if_due` then commits once the batch is
    acked, at most every ``interval`` seconds, so commits cannot starve under load.
    """

    def __init__(self, consumer: Any, interval: float) -> None:
        self.consumer = consumer
        self.interval = interval
        self.last_commit = time.monotonic()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        while (running := self.consumer._commit_fut) is not None:
            await asyncio.wait([running])  # a commit in progress finishes first
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.consumer._commit_fut = held
        try:
            yield
        finally:
            if self.consumer._commit_fut is held:
                self.consumer._commit_fut = None
            held.set_result(None)

    async def commit_if_due(self) -> None:
        if time.monotonic() - self.last_commit >= self.interval:
            self.last_commit = time.monotonic()
            await self.consumer.commit()


async def take_batches(
    stream: StreamT[Any], max_: int, within: float
) -> AsyncIterator[list[EventT[Any]]]:
    """Yield lists of at most ``max_`` events, waiting at most ``within`` s for a full one."""
    events: list[EventT[Any]] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    s: Any = stream
    enable_acks = s.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        event = s.current_event
        if event is None:
            raise RuntimeError("take_batches found no current event")
        events.append(event)
        if len(events) >= max_:
            buffer_full.set()
            buffer_consumed.clear()
            await s.wait(buffer_consumed)
        return value

    barrier = CommitBarrier(s.app.consumer, float(s.app.conf.broker_commit_interval))
    s.enable_acks = False
    s.add_processor(add_to_buffer)
    s._enable_passive(s.channel.__aiter__())
    try:
        while not s.should_stop:
            await s.wait_for_stopped(buffer_full, timeout=within)
            if not events:
                continue
            consuming = asyncio.get_running_loop().create_future()
            batch = list(events)
            async with barrier.holding():
                yield batch  # returns here only once the handler finished without raising
                for event in batch:
                    await s.ack(event)
            events.clear()
            if not consuming.done():
                consuming.set_result(None)
            buffer_full.clear()
            buffer_consumed.set()
            await barrier.commit_if_due()  # the next batch fills meanwhile; it is not acked
    finally:
        s.enable_acks = enable_acks
        s._processors.remove(add_to_buffer)
