"""What every batch step shares: decoding a batch into good events and rejections, the
dead-letter sink (reason, step, source and raw bytes to ``dead-letters``), and a guard that
turns an unexpected failure into dead letters instead of a crashed agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import Outputs, completed
from processors.common.schemas import DeadLetter, Rejected, encode

__all__ = ["DeadLetterSink", "Handover", "guarded", "guarded_start", "split_events"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class DeadLetterSink:
    """Sends a :class:`DeadLetter` for an event; the caller keeps processing the rest."""

    def __init__(self, outputs: Outputs, topic: str, metrics: StepMetrics) -> None:
        self.outputs = outputs
        self.topic = topic
        self.metrics = metrics

    async def send(
        self,
        event: Any,
        step: str,
        reason: str,
        detail: str,
        original: tuple[bytes | None, bytes | None] | None = None,
    ) -> None:
        """Dead-letter ``event``; ``original`` ``(key, value)`` replaces the event's own bytes
        when the event is an internal record carrying many inputs (the input's bytes travel
        with it)."""
        message = event.message
        value = message.value if isinstance(message.value, bytes) else None
        key = message.key if isinstance(message.key, bytes) else None
        if original is not None:
            key, value = original
        letter = DeadLetter(
            reason=reason,
            detail=detail,
            step=step,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            value=value,
            failed_at=datetime.now(UTC),
        )
        log.warning(
            "[%s] dead letter %s from %s/%s@%s: %s",
            step,
            reason,
            message.topic,
            message.partition,
            message.offset,
            detail,
        )
        self.metrics.dead_letters.labels(step, reason).inc()
        with self.outputs.scope(event):
            await self.outputs.send(self.topic, key, encode(letter))


def split_events(
    events: Sequence[Any], max_bytes: int, decode: Callable[[bytes, Any], T | Rejected]
) -> tuple[list[tuple[Any, T]], list[tuple[Any, Rejected]]]:
    """``(event, decoded)`` pairs and ``(event, why)`` rejections, in input order.

    Empty and oversized values are rejected before ``decode(value, key)`` sees them.
    """
    valid: list[tuple[Any, T]] = []
    rejected: list[tuple[Any, Rejected]] = []
    for event in events:
        raw = event.message.value
        if not isinstance(raw, bytes) or not raw:
            rejected.append((event, Rejected("empty", "message has no value")))
        elif len(raw) > max_bytes:
            rejected.append((event, Rejected("oversized", f"{len(raw)} bytes > limit {max_bytes}")))
        else:
            decoded = decode(raw, event.message.key)
            if isinstance(decoded, Rejected):
                rejected.append((event, decoded))
            else:
                valid.append((event, decoded))
    return valid, rejected


async def guarded(
    step: str,
    events: Sequence[Any],
    handle: Callable[[Sequence[Any]], Awaitable[None]],
    dead: DeadLetterSink,
) -> None:
    """Run ``handle(events)``; if it raises (a bug, a failing model), dead-letter the batch.

    The events keep their original bytes in ``dead-letters`` with reason ``processing_error``
    and the exception as detail, and the worker goes on with the next batch. It returns only
    once the broker acknowledged every record sent meanwhile (``outputs.delivered``), so the
    batch is acked after its outputs exist; if even the dead letters cannot be delivered it
    raises, and the batch stays unacked to be read again.
    """
    await (await guarded_start(step, events, handle, dead)).confirmed()


@dataclass
class Handover:
    """A batch whose outputs were handed to the producer (see :func:`guarded_start`)."""

    step: str
    events: Sequence[Any]
    dead: DeadLetterSink
    delivery: asyncio.Future[None]  # done once the broker answered

    async def confirmed(self) -> None:
        """Wait for the broker; if it refused the outputs, dead-letter the batch (raises if
        even that fails). Run it in the step's own task: it may send."""
        try:
            await self.delivery
        except Exception as exc:
            await _dead_letter(self.step, self.events, self.dead, exc)


async def guarded_start(
    step: str,
    events: Sequence[Any],
    handle: Callable[[Sequence[Any]], Awaitable[None]],
    dead: DeadLetterSink,
) -> Handover:
    """:func:`guarded` in two halves: this returns once ``handle`` ran and its outputs were
    handed to the producer, and :meth:`Handover.confirmed` once they were acknowledged. A
    worker computes its next batch in between."""
    try:
        await handle(events)
        delivery = await dead.outputs.hand_over()
    except Exception as exc:
        await _dead_letter(step, events, dead, exc)
        delivery = completed()
    return Handover(step, events, dead, delivery)


async def _dead_letter(
    step: str, events: Sequence[Any], dead: DeadLetterSink, exc: Exception
) -> None:
    log.error(
        "[%s] batch of %d failed; sending it to dead-letters",
        step,
        len(events),
        exc_info=exc,
    )
    dead.outputs.discard()  # its half-made state changes are not kept
    detail = f"{type(exc).__name__}: {exc}"[:500]
    for event in events:
        await dead.send(event, step, "processing_error", detail)
    await dead.outputs.delivered()  # raises if even these fail: the batch is not acked
