"""The one way a pipeline declares a stage: a step fed micro-batches from whole fetches.

Every pipeline's ``build`` makes one :class:`Stages` for its app and declares each step with
:meth:`Stages.declare`: the agent reads its channel's records out of the consumer's fetches
(:mod:`pipelines.runtime.ingress`), not through Faust's record-at-a-time streams, and runs
the step through :func:`~pipelines.runtime.steps.start_batch`, so every step has the same
entry point (:class:`~pipelines.runtime.steps.Step`) and the same failure policies. A
``stop`` policy crashes the app, which stops the worker; the failed batch and any after it
stay unacked and are read again after a restart.

A failure of the ingestion loop itself (records that cannot be read back, a failed
transaction under ``exactly_once``, a bug) stops the worker the same way. A stopped stage
does not raise into Faust: its agent would be restarted, and Faust's
supervisor (faust-streaming 0.15.3) never stops a restarted agent, so the worker's stop
waited for it forever. The stage waits instead, until the worker's stop cancels it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn

import faust

from pipelines.runtime.ingress import BulkIngress, bulk_agent
from pipelines.runtime.offsets import kafka_refetch
from pipelines.runtime.policies import StopWorker
from pipelines.runtime.steps import Handover, Step, start_batch
from pipelines.settings import Settings

__all__ = ["Stages"]

log = logging.getLogger(__name__)


class Stages:
    """Declares stages on ``app``; all of them share one bulk reader of its consumer."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.ingress = BulkIngress(app)
        self.refetch = kafka_refetch(settings)
        self.stopped: StopWorker | None = None  # set once a policy stopped the worker

    def declare(self, channel: faust.TopicT, step: Step, most: int, within: float) -> Any:
        """Agent ``step.name`` on ``channel``: batches of at most ``most`` records, waiting at
        most ``within`` s for a full one, each acked once its outputs were acknowledged
        (under ``exactly_once`` one batch in flight at a time: :func:`bulk_agent`)."""

        async def start(events: list[Any]) -> Handover:
            return await self.start(step, events)

        return bulk_agent(
            self.app,
            self.ingress,
            channel,
            step.name,
            start,
            most,
            within,
            self.refetch,
            on_stop=self.stop,
        )

    async def start(self, step: Step, events: list[Any]) -> Handover:
        """Hand ``events`` to ``step`` (:func:`start_batch`); once a policy stopped the worker,
        hold every batch unhandled, so none is acked while the worker stops."""
        if self.stopped is not None:
            await self.stop(self.stopped)
        return await start_batch(step, events, self.stop)

    async def stop(self, reason: StopWorker) -> NoReturn:
        """A ``stop`` policy: crash the app once (the worker exits with ``reason``), then wait
        until the worker's stop cancels this stage's agent."""
        if self.stopped is None:
            self.stopped = reason
            log.critical("stopping the worker: %s", reason)
            await self.app.crash(reason)
        await asyncio.get_running_loop().create_future()  # never set: only cancelled
        raise reason
