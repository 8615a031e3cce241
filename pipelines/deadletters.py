"""Routing of bad input to the ``dead-letters`` topic: reason, step, source and raw bytes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pipelines.metrics import StepMetrics
from pipelines.outputs import Outputs
from processors.schemas import DeadLetter, encode

__all__ = ["DeadLetterSink"]

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
