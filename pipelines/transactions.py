"""The transactions pipeline: every payment in, one prediction out, alerts above a threshold.

``build(app, settings)`` declares the topics, the per-customer state table and the agent
``score-transactions``. The agent takes micro-batches (:func:`~pipelines.batching.take_batches`)
and hands each to :class:`ScoreTransactions`, which routes bad events to ``dead-letters``,
updates customer state, scores the batch off the event loop and produces predictions and
alerts. The batch is acked only after that, and Faust commits only after its producer has
flushed, so nothing is committed before its outputs exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Protocol

import faust
import numpy as np
import numpy.typing as npt

from models.amount_rule import AmountRule
from pipelines.app import raw_topic
from pipelines.batching import take_batches
from pipelines.deadletters import DeadLetterSink
from pipelines.metrics import StepMetrics
from pipelines.outputs import FaustOutputs, Outputs
from pipelines.settings import Settings
from pipelines.steps import guarded, split_events
from processors.customer_stats import CustomerStats, explain
from processors.schemas import Alert, Prediction, Transaction, decode_transaction, encode

__all__ = ["PIPELINE", "STEP", "BatchScorer", "ScoreTransactions", "TransactionsPipeline", "build"]

STEP = "score-transactions"
PIPELINE = "transactions"
ALERT_KIND = "fraud_suspected"

log = logging.getLogger(__name__)


class BatchScorer(Protocol):
    """What the step needs of a model: a version and ``predict_batch``."""

    @property
    def version(self) -> str: ...

    def predict_batch(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...


class ScoreTransactions:
    """The step behind the agent: one micro-batch of transaction events at a time."""

    def __init__(
        self,
        settings: Settings,
        scorer: BatchScorer,
        state: MutableMapping[int, Any],
        outputs: Outputs,
        metrics: StepMetrics,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.state = state
        self.outputs = outputs
        self.metrics = metrics
        self.executor = executor
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)

    async def __call__(self, events: Sequence[Any]) -> None:
        """Handle a batch; an unexpected failure dead-letters the batch instead of crashing."""
        await guarded(STEP, events, self.handle, self.dead)

    async def handle(self, events: Sequence[Any]) -> None:
        started = perf_counter()
        valid, rejected = split_events(
            events, self.settings.worker.max_event_bytes, lambda raw, _key: decode_transaction(raw)
        )
        for event, why in rejected:
            await self.dead.send(event, STEP, why.reason, why.detail)
        befores: list[CustomerStats] = []
        for event, tx in valid:
            with self.outputs.scope(event):
                before = CustomerStats.from_list(self.state.get(tx.customer_id))
                self.state[tx.customer_id] = before.add(tx.amount).to_list()
            befores.append(before)
        if valid:
            features = np.array(
                [[tx.amount, b.mean, b.count] for (_, tx), b in zip(valid, befores, strict=True)],
                dtype=np.float64,
            )
            loop = asyncio.get_running_loop()
            scores = await loop.run_in_executor(self.executor, self.scorer.predict_batch, features)
            await self.emit(valid, befores, scores)
        m = self.metrics
        m.events.labels(STEP, "ok").inc(len(valid))
        m.events.labels(STEP, "dead_letter").inc(len(rejected))
        m.batch_size.labels(STEP).observe(len(events))
        m.batch_seconds.labels(STEP).observe(perf_counter() - started)

    async def emit(
        self,
        valid: list[tuple[Any, Transaction]],
        befores: list[CustomerStats],
        scores: npt.NDArray[np.float64],
    ) -> None:
        now = datetime.now(UTC)
        conf = self.settings.transactions
        topics = self.settings.topics
        threshold = conf.alert_threshold
        versions = {"scorer": self.scorer.version}
        for (event, tx), before, score in zip(valid, befores, scores.tolist(), strict=True):
            entity = f"customer:{tx.customer_id}"
            key = str(tx.customer_id).encode()
            score = round(float(score), 6)
            prediction = Prediction(
                pipeline=PIPELINE,
                event_id=str(tx.tx_id),
                entity=entity,
                score=score,
                threshold=threshold,
                model_versions=versions,
                event_time=tx.tx_time,
                emit_time=now,
                features={
                    "amount": tx.amount,
                    "customer_mean_before": round(before.mean, 4),
                    "customer_count_before": float(before.count),
                },
            )
            with self.outputs.scope(event):
                await self.outputs.send(topics.predictions, key, encode(prediction))
                if score >= threshold:
                    alert = Alert(
                        pipeline=PIPELINE,
                        kind=ALERT_KIND,
                        event_id=str(tx.tx_id),
                        entity=entity,
                        score=score,
                        threshold=threshold,
                        model_versions=versions,
                        reasons=explain(tx.amount, conf.amount_rule_limit, before),
                        event_time=tx.tx_time,
                        emit_time=now,
                    )
                    await self.outputs.send(topics.alerts, key, encode(alert))
                    self.metrics.alerts.labels(STEP, ALERT_KIND).inc()
        newest = max(tx.tx_time for _, tx in valid)
        self.metrics.event_time_lag.labels(STEP).set((now - newest).total_seconds())


@dataclass
class TransactionsPipeline:
    """Handles to what ``build`` declared, for the CLI and tests."""

    app: faust.App
    settings: Settings
    step: ScoreTransactions
    customers: Any
    agent: Any


def build(
    app: faust.App, settings: Settings, scorer: BatchScorer | None = None
) -> TransactionsPipeline:
    """Declare the transactions pipeline on ``app``."""
    t = settings.topics
    metrics: StepMetrics = app.streamwise_metrics  # type: ignore[attr-defined]
    model: BatchScorer = scorer or AmountRule(limit=settings.transactions.amount_rule_limit)
    source = raw_topic(app, t.transactions, t.partitions)
    outputs = FaustOutputs(app, [t.predictions, t.alerts, t.dead_letters])
    customers = app.Table(
        "customer-stats",
        default=None,
        partitions=t.partitions,
        key_type=int,
        help="Per-customer [count, total] of payments, the baseline scorer's context.",
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=STEP)
    step = ScoreTransactions(settings, model, customers, outputs, metrics, executor)

    @app.agent(source, name=STEP)
    async def score_transactions(stream: faust.StreamT[bytes]) -> None:
        size, within = settings.worker.batch_size, settings.worker.batch_within_s
        async for events in take_batches(stream, size, within):
            await step(events)

    return TransactionsPipeline(app, settings, step, customers, score_transactions)
