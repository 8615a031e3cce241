"""Starting one worker process for one pipeline: settings printed, app built, Faust run."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.settings import Settings

if TYPE_CHECKING:  # importing faust parses sys.argv (``--loop``, ``--datadir``): only on use
    import faust

__all__ = ["PIPELINES", "build_app", "run_worker"]

log = logging.getLogger(__name__)


def _create_internal_topics(settings: Settings) -> None:
    """The fraud pipeline's own topics (tx-by-terminal, labels, training, checkpoints)."""
    from kafka.errors import KafkaError

    from pipelines.fraud import build as transactions
    from pipelines.kafka.admin import create_topics

    try:
        create_topics(settings, transactions.internal_specs(settings))
    except KafkaError as exc:
        log.warning("could not create the pipeline's internal topics (%s); they must exist", exc)


def _build_transactions(app: faust.App, settings: Settings) -> object:
    from pipelines.fraud import build as transactions

    _create_internal_topics(settings)
    return transactions.build(app, settings)


def _build_fraud_learner(app: faust.App, settings: Settings) -> object:
    from pipelines.fraud import build as transactions

    if settings.transactions.learner != "separate":  # two writers of one learner: refuse
        raise SystemExit(
            "streamwise worker fraud-learner needs STREAMWISE_TRANSACTIONS__LEARNER=separate"
            " (for it and for every transactions worker, which then leave the learner out);"
            f" it is {settings.transactions.learner!r}, so the transactions workers learn too"
        )
    _create_internal_topics(settings)
    return transactions.build_learner(app, settings)


def _create_state_topic(settings: Settings, pipeline: str) -> None:
    """A media pipeline's compacted per-entity state topic (pipelines/runtime/checkpoints.py)."""
    from kafka.errors import KafkaError

    from pipelines.kafka.admin import create_topics
    from pipelines.runtime.checkpoints import state_spec

    try:
        create_topics(settings, [state_spec(settings, pipeline)])
    except KafkaError as exc:
        log.warning("could not create the %s state topic (%s); it must exist", pipeline, exc)


def _build_audio(app: faust.App, settings: Settings) -> object:
    from pipelines.audio import build as audio

    _create_state_topic(settings, "audio")
    return audio.build(app, settings)


def _build_video(app: faust.App, settings: Settings) -> object:
    from pipelines.video import build as video

    _create_state_topic(settings, "video")
    return video.build(app, settings)


PIPELINES: dict[str, Callable[[faust.App, Settings], object]] = {
    "transactions": _build_transactions,
    "fraud-learner": _build_fraud_learner,
    "audio": _build_audio,
    "video": _build_video,
}


def build_app(settings: Settings, pipeline: str) -> faust.App:
    """The Faust app of ``pipeline`` with its agents declared."""
    if pipeline not in PIPELINES:
        raise KeyError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")
    from pipelines.runtime.app import create_app

    app = create_app(settings, pipeline)
    PIPELINES[pipeline](app, settings)
    return app


def _ensure_topics(settings: Settings) -> None:
    """Create missing topics (as ``streamwise topics create``); warn if not allowed to."""
    from kafka.errors import KafkaError

    from pipelines.kafka.admin import create_topics

    try:
        create_topics(settings)
    except KafkaError as exc:
        log.warning("could not create topics (%s); they must exist already", exc)


def _tune_gc() -> None:
    """Fewer, cheaper full garbage collections: they stop the event loop.

    A worker keeps its state's windows in memory, and with CPython's default thresholds a
    full collection ran about once a second under load, walking every object (100-500 ms
    each, measured with ``gc.callbacks`` under ``streamwise bench transactions``). What
    exists once the app is built (modules, models) is frozen out of collections, and the
    young generations are collected less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings, pipeline: str) -> None:
    """Run a Faust worker for ``pipeline`` until SIGINT/SIGTERM (blocks).

    Refuses (``SystemExit``) faust-streaming or aiokafka versions the runtime's hooks into
    their internals were not checked on, unless ``settings.worker.allow_unchecked_versions``.
    """
    from pipelines.runtime.compat import check_versions

    check_versions(settings.worker.allow_unchecked_versions)
    _ensure_topics(settings)
    sys.setswitchinterval(settings.worker.switch_interval_s)
    app = build_app(settings, pipeline)
    import faust

    worker = faust.Worker(app, loglevel=settings.worker.loglevel, quiet=True)
    # Faust's terminal spinner lowers the root logger to DEBUG so it can spin on every record;
    # that made every per-message debug call in aiokafka and Faust build a log record.
    worker.spinner = None
    _tune_gc()
    worker.execute_from_commandline()
