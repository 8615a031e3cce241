"""The audio pipeline on a Faust app: PCM chunks in, one prediction per window and alerts out.

``build(app, settings)`` declares the ``audio-chunks`` source, the stage ``analyze-audio``
(:class:`~pipelines.audio.step.AnalyzeAudio`, fed micro-batches from whole fetches like
every stage: :mod:`pipelines.runtime.stages`) and a timer that notices streams whose chunks
stopped (not while the worker rebalances: it reads nothing then). The step learns which
partitions of ``audio-chunks`` this worker holds from the assignor
(:func:`assigned_partitions`), and checkpoints each stream's state to the compacted
``<app_prefix>-audio-state`` topic every ``STREAMWISE_AUDIO__CHECKPOINT_S`` seconds
(:mod:`pipelines.runtime.checkpoints`; the worker creates the topic). This is the only
module of the audio pipeline that imports Faust.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust

from models.silero_vad import SileroVad
from models.sound_classifier import OnnxSoundClassifier, SoundClassifier
from pipelines.audio.step import STEP, AnalyzeAudio
from pipelines.runtime.app import raw_topic
from pipelines.runtime.checkpoints import Checkpoints, state_topic
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import FaustOutputs
from pipelines.runtime.stages import Stages
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer, VadModel

__all__ = ["AudioPipeline", "assigned_partitions", "build", "load_models"]

STALL_CHECK_S = 1.0


def load_models(settings: Settings) -> tuple[VadModel, SoundClassifier | None]:
    """The VAD (sha256-checked against the manifest) and the optional classifier."""
    conf = settings.audio
    vad = SileroVad(conf.vad_path or settings.assets_dir / "silero_vad.onnx")
    classifier = None
    if conf.classifier_path is not None and conf.classifier_classes is not None:
        classifier = OnnxSoundClassifier(
            conf.classifier_path, conf.classifier_classes, conf.classifier_sha256
        )
    return vad, classifier


def assigned_partitions(app: faust.App, topic: str) -> Callable[[], frozenset[int]]:
    """The partitions of ``topic`` this worker holds now, from Faust's assignor."""

    def assigned() -> frozenset[int]:
        actives = app.assignor.assigned_actives()
        return frozenset(tp.partition for tp in actives if tp.topic == topic)

    return assigned


@dataclass
class AudioPipeline:
    """Handles to what ``build`` declared, for the CLI and tests."""

    app: faust.App
    settings: Settings
    step: AnalyzeAudio
    agent: Any


def build(app: faust.App, settings: Settings) -> AudioPipeline:
    """Declare the audio pipeline on ``app``."""
    t, worker = settings.topics, settings.worker
    metrics: StepMetrics = app.streamwise_metrics  # type: ignore[attr-defined]
    vad, classifier = load_models(settings)
    analyzer = AudioAnalyzer(settings.audio, vad, classifier)
    source = raw_topic(app, t.audio_chunks, t.partitions)
    checkpoints = Checkpoints(settings, state_topic(settings, "audio"), settings.audio.checkpoint_s)
    outputs = FaustOutputs(app, [t.predictions, t.alerts, t.dead_letters, checkpoints.topic])
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=STEP)
    assigned = assigned_partitions(app, t.audio_chunks)
    step = AnalyzeAudio(settings, analyzer, outputs, metrics, executor, assigned, checkpoints)

    stages = Stages(app, settings)
    analyze_audio = stages.declare(source, step, worker.batch_size, worker.batch_within_s)

    stall_outputs = FaustOutputs(app, [t.alerts])

    async def stalled() -> None:
        if not app.rebalancing:
            await step.check_stalled(stall_outputs)

    app.timer(interval=STALL_CHECK_S, name=f"{STEP}-stalled")(stalled)

    return AudioPipeline(app, settings, step, analyze_audio)
