"""The step contract and what every batch step shares: decoding a batch into good events and
rejections, the dead-letter sink (reason, step, source and raw bytes to ``dead-letters``), and
the runner that hands a batch to a step and its failures to the step's policies
(:mod:`pipelines.runtime.policies`) instead of crashing the agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import Outputs
from pipelines.runtime.policies import FailurePolicies, StopWorker
from processors.common.schemas import DeadLetter, Rejected, encode

__all__ = [
    "DeadLetterSink",
    "Handover",
    "Step",
    "run_batch",
    "split_events",
    "start_batch",
]

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


class Step(Protocol):
    """What a stage runs (:mod:`pipelines.runtime.stages`): ``handle`` one micro-batch of
    events, whose outputs go through the step's own outputs (``dead.outputs``); its
    failures go to its failure policies. ``name`` labels its agent, metrics and dead letters."""

    @property
    def name(self) -> str: ...

    @property
    def dead(self) -> DeadLetterSink: ...

    @property
    def failures(self) -> FailurePolicies: ...

    async def handle(self, events: Sequence[Any]) -> None: ...


Stop = Callable[[StopWorker], Awaitable[None]]


async def run_batch(step: Step, events: Sequence[Any]) -> None:
    """Run ``step.handle(events)`` and wait until its outputs were acknowledged.

    If it raises (a bug, a failing model), or the broker refuses its outputs, the step's
    policies decide (by default the batch goes to ``dead-letters`` with reason
    ``processing_error`` and the exception as detail, and the worker goes on). It returns
    only once the batch may be acked; if it may not (a ``stop`` policy, or even the dead
    letters were refused) it raises, and the batch stays unacked to be read again.
    """
    await (await start_batch(step, events)).confirmed()


@dataclass
class Handover:
    """A batch whose outputs were handed to the producer (see :func:`start_batch`)."""

    step: str
    events: Sequence[Any]
    delivery: asyncio.Future[None]  # done once the broker answered (and, exactly_once, committed)
    failures: FailurePolicies  # the step's, with its dead-letter sink and outputs
    on_stop: Stop | None = None  # told before a StopWorker is raised
    rolled_back: bool = False  # set by confirmed(): the step's state was rolled back

    async def confirmed(self) -> bool:
        """Wait for the broker; ``True`` if it took the outputs. If it refused them, apply
        the delivery policy and return ``False`` (raises if the batch may not be acked). Run
        it in the step's own task: it may send."""
        try:
            await self.delivery
            return True
        except StopWorker as stop:
            await _stopping(self.on_stop, stop)
            raise
        except Exception as exc:
            try:
                self.rolled_back = await self.failures.delivery_error(self.step, self.events, exc)
                await (await self.failures.dead.outputs.hand_over())  # exactly_once: commits
            except StopWorker as stop:
                await _stopping(self.on_stop, stop)
                raise
            return False


async def _stopping(on_stop: Stop | None, stop: StopWorker) -> None:
    if on_stop is not None:
        await on_stop(stop)


async def start_batch(step: Step, events: Sequence[Any], on_stop: Stop | None = None) -> Handover:
    """:func:`run_batch` in two halves: this returns once ``handle`` ran and its outputs were
    handed to the producer, and :meth:`Handover.confirmed` once they were acknowledged. A
    worker computes its next batch in between. ``on_stop`` is awaited before a ``stop``
    policy's :class:`StopWorker` (or one the step raised) leaves either half."""
    name, failures = step.name, step.failures
    outputs = step.dead.outputs
    try:
        outputs.begin(events)
        await step.handle(events)
        delivery = await outputs.hand_over()
    except StopWorker as stop:
        await _stopping(on_stop, stop)
        raise
    except Exception as exc:
        try:
            await failures.processing_error(name, events, exc)
            delivery = await outputs.hand_over()  # exactly_once: commits the dead letters
        except StopWorker as stop:
            await _stopping(on_stop, stop)
            raise
    return Handover(name, events, delivery, failures, on_stop)
