"""The Faust app factory: one configured :class:`faust.App` per worker, built from settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.types import EventT
from faust.web import Request, Response, View

from pipelines.runtime import compat
from pipelines.runtime.metrics import StepMetrics
from pipelines.settings import Settings

__all__ = ["create_app", "event_scope", "raw_topic"]


def _credentials(settings: Settings) -> Any:
    sec = settings.security
    if sec.protocol == "PLAINTEXT":
        return None
    from pipelines.kafka.admin import client_config

    context = client_config(settings).get("ssl_context")
    if sec.protocol.startswith("SASL"):
        password = sec.sasl_password.get_secret_value() if sec.sasl_password else ""
        return faust.SASLCredentials(
            username=sec.sasl_username or "",
            password=password,
            mechanism=sec.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(settings: Settings, pipeline: str) -> faust.App:
    """A Faust app for ``pipeline`` with RocksDB state, metrics and health pages.

    The app's metrics live in ``app.streamwise_metrics`` (a :class:`StepMetrics`); under
    ``exactly_once`` its transactions in ``app.streamwise_transactions`` (a
    :class:`~pipelines.runtime.transactions.Transactions`).
    """
    # One folder per app id: table files are named by table and partition only, so two apps
    # (prefixes) sharing a folder would read each other's state.
    datadir = settings.state_dir.resolve() / f"{settings.app_prefix}-{pipeline}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_prefix}-{pipeline}",
        broker=settings.broker_url,
        broker_credentials=_credentials(settings),
        store="rocksdb://",
        datadir=str(datadir),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        topic_allow_declare=True,
        web_enabled=True,
        web_host=settings.worker.web_host,
        web_bind=settings.worker.web_host,
        web_port=settings.worker.web_port,
        web_in_thread=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Outputs of one micro-batch leave in a few produce requests, not one per record.
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        producer_max_request_size=8 * 1024 * 1024,
        # One fetch per partition holds at most a producer batch. Faust hands every record of
        # a fetch to its stream before it takes the next fetch, and waits whenever a stream's
        # buffer is full, so one fetch is how long a busy input can keep every other topic of
        # the worker waiting: at 8 MiB a backlog of payments held the internal topics (and
        # with them every prediction) back until the whole backlog was read.
        consumer_max_fetch_size=256 * 1024,
        broker_commit_interval=1.0,
        # A worker that dies without leaving the group holds its partitions this long; Faust's
        # 60 s default kept a restarted worker waiting a minute for the dead one to expire.
        broker_session_timeout=settings.worker.session_timeout_s,
        broker_heartbeat_interval=settings.worker.session_timeout_s / 5,
        stream_buffer_maxsize=max(4096, settings.worker.batch_size * 2),
    )
    compat.mark_worker(app)  # before anything reads app.in_transaction
    # Table writes queue their changelog records in the producer's buffer; let one whole
    # micro-batch fit before Faust pauses the stream to drain it.
    compat.set_producer_buffer(app, max(100, settings.worker.batch_size * 4))
    metrics = StepMetrics()
    app.streamwise_metrics = metrics  # type: ignore[attr-defined]
    if settings.processing_guarantee == "exactly_once":
        from pipelines.runtime.transactions import Transactions

        app.streamwise_transactions = Transactions(app, settings)  # type: ignore[attr-defined]

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(), content_type="text/plain")

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = sorted(str(tp) for tp in app.assignor.assigned_actives())
            return self.json({"status": "ok", "pipeline": pipeline, "assigned": assigned})

    return app


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A topic whose keys and values stay bytes: the steps own their codecs."""
    return app.topic(name, partitions=partitions, key_serializer="raw", value_serializer="raw")


@contextmanager
def event_scope(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` current so table writes and sends work inside a ``take_events`` batch.

    Faust binds a table's changelog partition (and, under exactly-once, the transaction) to
    the current event, which ``take_events`` leaves unset; this sets it for one event.
    """
    token = compat.bind_event(event)
    try:
        yield
    finally:
        compat.unbind_event(token)
