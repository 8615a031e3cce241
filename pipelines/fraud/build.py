"""The transactions (fraud) pipeline: windows in event time, batched ONNX, a River learner.

``build(app, settings)`` declares four agents on one Faust app; run more workers to share
them (each agent's partitions are spread over the group)::

    transactions ──customer-features──▶ tx-by-terminal ─┐
    (by customer)   customer windows     (by terminal)  ├─score-transactions──▶ predictions
    transaction-labels ──route-labels──▶ labels-by-terminal┘  terminal windows,    alerts
                                                              ONNX + River scores
                                         fraud-training ◀──── labels ⨝ features
                                              │
                                         learn-fraud ──▶ fraud-learner (compacted snapshots)
                                                              │ read by every worker

Each state has one owner: customer windows live on the ``transactions`` partition of their
customer, terminal windows and pending features on the ``tx-by-terminal`` partition of their
terminal, and the learner on the single ``fraud-training`` partition (with
``STREAMWISE_TRANSACTIONS__LEARNER=separate``, only in ``streamwise worker fraud-learner``:
:func:`build_learner`). Bad input goes to ``dead-letters``, late input to the ``on_late``
policy (dead letters by default); every batch is acked only after its outputs were delivered.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from models.fraud_onnx import DEFAULT_MANIFEST, ReloadingFraudModel, find_entry
from pipelines.fraud.learning import (
    LEARN_STEP,
    LearnerReplica,
    LearnFraud,
    SnapshotFollower,
    latest_snapshot,
)
from pipelines.fraud.routing import CUSTOMER_STEP, LABEL_STEP, CustomerFeatures, RouteLabels
from pipelines.fraud.scoring import PIPELINE, STEP, ScoreTransactions
from pipelines.kafka.admin import TopicSpec
from pipelines.runtime.app import raw_topic
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import FaustOutputs
from pipelines.runtime.stages import Stages
from pipelines.runtime.state import TableState
from pipelines.settings import Settings

__all__ = [
    "PIPELINE",
    "STEP",
    "TransactionsPipeline",
    "build",
    "internal_specs",
    "internal_topics",
    "load_model",
]


# Every batch rewrites the state of each key it touched, so RocksDB's write buffers fill fast;
# at Faust's defaults (3 x 64 MiB per partition database, 12 databases per worker) a
# 45-day replay passed 900 MiB of RSS within a minute. Reads mostly come from the worker's
# own cache, so the block cache stays small too.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
}


#: Flushed values a table keeps in memory (as bytes) before it writes the oldest to RocksDB.
UNWRITTEN_MIB = 32


def internal_topics(settings: Settings) -> dict[str, str]:
    """Names of the pipeline's own topics (prefixed with the app id, like its changelogs)."""
    app_id = f"{settings.app_prefix}-{PIPELINE}"
    return {
        "tx": f"{app_id}-tx-by-terminal",
        "labels": f"{app_id}-labels-by-terminal",
        "training": f"{app_id}-fraud-training",
        "snapshots": f"{app_id}-fraud-learner",
    }


def internal_specs(settings: Settings) -> list[TopicSpec]:
    """The internal topics with their layout, created by the worker before it starts."""
    names = internal_topics(settings)
    parts = settings.topics.partitions
    big = {"max.message.bytes": "8388608", "retention.ms": str(7 * 86_400_000)}
    return [
        TopicSpec(names["tx"], parts, big, "transactions with customer features, by terminal"),
        TopicSpec(names["labels"], parts, big, "labels, by terminal"),
        TopicSpec(names["training"], 1, big, "labelled feature rows for the learner"),
        TopicSpec(
            names["snapshots"],
            1,
            {"cleanup.policy": "compact", "max.message.bytes": "8388608"},
            "learner checkpoints (compacted)",
        ),
    ]


def load_model(settings: Settings) -> ReloadingFraudModel:
    """The ONNX scorer named in settings (default: the shipped model), checksum verified."""
    conf = settings.transactions
    manifest = conf.model_manifest or DEFAULT_MANIFEST
    path = conf.model or find_entry(manifest, name="fraud_lgbm").path(manifest)
    return ReloadingFraudModel(Path(path), manifest)


@dataclass
class TransactionsPipeline:
    """Handles to what ``build`` declared, for the CLI and tests."""

    app: faust.App
    settings: Settings
    step: ScoreTransactions
    customers: CustomerFeatures
    learner: LearnFraud | None  # None: the learner runs in its own process (``separate``)
    replica: LearnerReplica
    agents: dict[str, Any]


def build(
    app: faust.App, settings: Settings, model: ReloadingFraudModel | None = None
) -> TransactionsPipeline:
    """Declare the fraud pipeline's agents, tables and topics on ``app``."""
    t = settings.topics
    names = internal_topics(settings)
    metrics: StepMetrics = app.streamwise_metrics  # type: ignore[attr-defined]

    # A window is rewritten whole at every change: a budget that holds every window of the
    # worker's partitions writes each to RocksDB about once per budget's worth of writes
    # (10,000 terminals take about 9 MiB, which an 8 MiB budget wrote back at every change).
    # A pending row whose label comes while it is still held reaches RocksDB only as a
    # delete: its tombstone takes its place.
    def table(name: str, help_: str) -> TableState:
        return TableState(
            app,
            app.Table(
                name,
                default=None,
                partitions=t.partitions,
                key_type=int,
                value_type=bytes,  # packed arrays; Faust's serializer for bytes is "raw"
                help=help_,
                options=ROCKSDB_OPTIONS,
            ),
            max_unwritten_bytes=UNWRITTEN_MIB * 1024 * 1024,
        )

    customer_state = table("customer-windows", "Per-customer payments of the last 30 days.")
    terminal_state = table("terminal-windows", "Per-terminal payments and known frauds.")
    pending_state = table("pending-by-tx", "Scored features awaiting their label, by payment.")
    # Earlier releases kept pending features in one value a terminal: read once and deleted.
    legacy_pending = table("pending-features", "Scored features of an earlier release.")

    topics = [t.predictions, t.alerts, t.dead_letters, t.model_metrics, *names.values()]

    def outputs(*states: TableState) -> FaustOutputs:
        """Each step its own outputs: it waits for its own records and flushes its own state."""
        return FaustOutputs(app, topics, states)

    # The scorer's models and the learner each get a thread of their own: a learner batch
    # (hundreds of records of up to 256 examples, tens of µs each) queued in front of a
    # scoring call held every prediction back for seconds.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=STEP)
    replica = LearnerReplica()
    follower = SnapshotFollower(settings, names["snapshots"], replica)
    customers = CustomerFeatures(
        settings, customer_state, outputs(customer_state), metrics, names["tx"], t.partitions
    )
    labels = RouteLabels(settings, outputs(), metrics, names["labels"], t.partitions)
    scorer = ScoreTransactions(
        settings,
        model or load_model(settings),
        replica,
        terminal_state,
        pending_state,
        outputs(terminal_state, pending_state, legacy_pending),
        metrics,
        names,
        executor,
        follower.ready,
        legacy_pending=legacy_pending,
    )
    size = settings.worker.batch_size
    within = settings.transactions.batch_within_s  # not the worker's: see its settings
    stages = Stages(app, settings)

    agents = {
        CUSTOMER_STEP: stages.declare(
            raw_topic(app, t.transactions, t.partitions), customers, size, within
        ),
        LABEL_STEP: stages.declare(
            raw_topic(app, t.transaction_labels, t.partitions), labels, size, within
        ),
        # Each record here holds a whole upstream batch's rows for one partition.
        STEP: stages.declare(
            app.topic(names["tx"], names["labels"], value_serializer="raw"),
            scorer,
            max(1, size // 10),
            within,
        ),
    }
    learner = None
    if settings.transactions.learner == "inline":
        learner, agents[LEARN_STEP] = _declare_learner(app, settings, stages)
    app.task(follower.run)
    return TransactionsPipeline(app, settings, scorer, customers, learner, replica, agents)


def build_learner(app: faust.App, settings: Settings) -> LearnFraud:
    """Declare only the learner stage on ``app`` (``streamwise worker fraud-learner``).

    With ``STREAMWISE_TRANSACTIONS__LEARNER=separate`` the transactions workers leave the
    learner out, and this app, in a consumer group of its own, is its one writer: it reads
    the same training topic and publishes to the same snapshot topic, which every scoring
    worker follows. It resumes from the newest checkpoint, so moving the learner between the
    two places neither loses nor repeats an example (the checkpoint's offset is what counts,
    not a group's committed offset).
    """
    learner, _ = _declare_learner(app, settings, Stages(app, settings))
    return learner


def _declare_learner(app: faust.App, settings: Settings, stages: Stages) -> tuple[LearnFraud, Any]:
    """The learner stage on ``app``, with a thread of its own, and its agent."""
    t, names = settings.topics, internal_topics(settings)
    metrics: StepMetrics = app.streamwise_metrics  # type: ignore[attr-defined]
    topics = [t.alerts, t.dead_letters, t.model_metrics, names["snapshots"]]
    learner = LearnFraud(
        settings,
        FaustOutputs(app, topics),
        metrics,
        names["snapshots"],
        lambda: latest_snapshot(settings, names["snapshots"]),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix=LEARN_STEP),
    )
    channel = raw_topic(app, names["training"], 1)
    size, wait_s = settings.worker.batch_size, settings.transactions.learner_batch_s
    return learner, stages.declare(channel, learner, size, wait_s)
