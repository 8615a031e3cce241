"""Micro-batches from a Faust stream, acked only after the batch was handled.

Faust's ``Stream.take_events`` acks a batch in a ``finally`` clause, so a batch whose
handler raised or was cancelled is acked, and then committed, without its outputs.
:func:`take_batches` is the same buffering with one change: a batch is acked when the
consumer asks for the next one, that is, after the handler returned normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
from faust.types import StreamT

from pipelines.runtime.offsets import (
    CommitBarrier,
    OffsetWatch,
    RecoveredEvent,
    Refetch,
    faust_committed,
    file_gap,
    kafka_refetch,
)
from pipelines.settings import Settings

__all__ = ["batch_agent", "take_batches"]


async def take_batches(
    stream: StreamT[Any], max_: int, within: float, refetch: Refetch
) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_`` events, waiting at most ``within`` s for a full one."""
    events: list[Any] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    s: Any = stream
    enable_acks = s.enable_acks

    async def batch_taken() -> None:
        """Wait while a batch that was cut is handled: ``events`` is cleared after it."""
        nonlocal consuming
        while consuming is not None:
            try:
                await consuming
            finally:
                consuming = None

    async def add_to_buffer(value: Any) -> Any:
        await batch_taken()
        event = s.current_event
        if event is None:
            raise RuntimeError("take_batches found no current event")
        message = event.message
        before = await watch.admit(message.tp, message.offset, s.app.consumer_generation_id)
        if before is None:  # a repeat (see OffsetWatch): acked, not handled twice
            if watch.needs_ack(message.tp, message.offset):
                await s.ack(event)
            return value
        await file_gap(s.app.consumer, before)
        # admit and file_gap may have waited (the committed offset, a read back): a batch
        # cut meanwhile would clear this event with its own once handled.
        await batch_taken()
        events.extend(before)
        events.append(event)
        if len(events) >= max_:
            buffer_full.set()
            buffer_consumed.clear()
            await s.wait(buffer_consumed)
        return value

    barrier = CommitBarrier(s.app.consumer, float(s.app.conf.broker_commit_interval))
    watch = OffsetWatch(refetch, faust_committed(s.app))
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
                watch.done(batch)
                for event in batch:
                    if not isinstance(event, RecoveredEvent):
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


def batch_agent(
    app: faust.App,
    source: Any,
    name: str,
    step: Callable[[list[Any]], Awaitable[None]],
    settings: Settings,
    *,
    size: int | None = None,
    within: float | None = None,
) -> Any:
    """Declare agent ``name`` on ``source`` handing each micro-batch to ``step``.

    Batches hold at most ``size`` events (default ``STREAMWISE_WORKER__BATCH_SIZE``) and wait
    at most ``within`` seconds (default ``…__BATCH_WITHIN_S``); skipped records are read back
    from the broker (:func:`kafka_refetch`).
    """
    refetch = kafka_refetch(settings)
    most = size or settings.worker.batch_size
    wait = within or settings.worker.batch_within_s

    async def agent(stream: StreamT[Any]) -> None:
        async for events in take_batches(stream, most, wait, refetch):
            await step(events)

    return app.agent(source, name=name)(agent)
