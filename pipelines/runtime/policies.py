"""Failure policies, one object per step: what happens to a late event, a batch whose
handling raised, and a batch whose outputs the broker refused (``STREAMWISE_POLICIES__*``).

Steps never write these branches themselves: they report the case (``failures.late(...)``)
and the runner reports the other two (:func:`~pipelines.runtime.steps.start_batch`). Each
policy is named in :class:`~pipelines.settings.PolicySettings`:

* ``dead_letter`` (every default): the input's original bytes go to ``dead-letters`` with the
  reason, labelled with the step in ``streamwise_dead_letters_total``, and the worker goes on;
* ``drop``: logged and counted in ``streamwise_dropped_total`` (step, reason), nothing sent,
  and the batch is acked;
* ``stop``: :class:`StopWorker` is raised, the batch is not acked, and the stage stops the
  worker (:mod:`pipelines.runtime.stages`), so the batch is read again after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pipelines.settings import PolicySettings

if TYPE_CHECKING:  # steps.py runs batches through these policies
    from pipelines.runtime.steps import DeadLetterSink

__all__ = ["FailurePolicies", "StopWorker"]

log = logging.getLogger(__name__)

Outcome = Literal["dead_letter", "dropped"]


class StopWorker(RuntimeError):
    """A policy said ``stop``: the batch stays unacked and the worker must stop."""


class FailurePolicies:
    """The policies of ``conf`` applied for one step, whose dead letters go to ``dead``."""

    def __init__(self, conf: PolicySettings, dead: DeadLetterSink) -> None:
        self.conf = conf
        self.dead = dead

    async def late(
        self,
        event: Any,
        step: str,
        detail: str,
        original: tuple[bytes | None, bytes | None] | None = None,
    ) -> Outcome:
        """An input ``step`` rejects as late (older than its window's grace); what was done
        with it. ``original`` as in :meth:`DeadLetterSink.send`."""
        if self.conf.on_late == "dead_letter":
            await self.dead.send(event, step, "late", detail, original)
            return "dead_letter"
        message = event.message
        log.warning(
            "[%s] dropped late event %s/%s@%s: %s",
            step,
            message.topic,
            message.partition,
            message.offset,
            detail,
        )
        self.dead.metrics.dropped.labels(step, "late").inc()
        return "dropped"

    async def processing_error(self, step: str, events: Sequence[Any], exc: Exception) -> None:
        """``step``'s handling of ``events`` raised ``exc``; its half-made outputs and state
        changes are discarded. Returns once the batch may be acked; raises if it may not."""
        self.dead.outputs.discard()
        policy = self.conf.on_processing_error
        if policy == "stop":
            log.error(
                "[%s] batch of %d failed; stopping the worker", step, len(events), exc_info=exc
            )
            raise StopWorker(f"{step}: a batch failed ({_describe(exc)})") from exc
        if policy == "drop":
            log.error("[%s] batch of %d failed; dropped", step, len(events), exc_info=exc)
            self.dead.metrics.dropped.labels(step, "processing_error").inc(len(events))
            return
        log.error(
            "[%s] batch of %d failed; sending it to dead-letters", step, len(events), exc_info=exc
        )
        await self._dead_letter(step, events, exc)

    async def delivery_error(self, step: str, events: Sequence[Any], exc: Exception) -> bool:
        """The broker refused outputs of ``step``'s batch ``events``. Returns once the batch
        may be acked (whether the step's state was rolled back: a later batch built on it is
        then handled again); raises if it may not (``stop``, or dead letters refused too)."""
        if self.conf.on_delivery_error == "stop":
            log.error(
                "[%s] outputs of a batch of %d refused; stopping the worker",
                step,
                len(events),
                exc_info=exc,
            )
            raise StopWorker(f"{step}: outputs refused ({_describe(exc)})") from exc
        log.error(
            "[%s] outputs of a batch of %d refused; sending it to dead-letters",
            step,
            len(events),
            exc_info=exc,
        )
        rolled_back = self.dead.outputs.rollback()  # none of its state changes are kept
        await self._dead_letter(step, events, exc)
        return rolled_back

    async def _dead_letter(self, step: str, events: Sequence[Any], exc: Exception) -> None:
        detail = _describe(exc)
        for event in events:
            await self.dead.send(event, step, "processing_error", detail)
        await self.dead.outputs.delivered()  # raises if even these fail: the batch is not acked


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
