"""The audio pipeline: PCM chunks in, one prediction per window and sound alerts out.

``build(app, settings)`` declares the ``audio-chunks`` source, the agent ``analyze-audio``
and a timer that notices streams whose chunks stopped. The agent takes micro-batches and
hands each to :class:`AnalyzeAudio`: bad chunks go to ``dead-letters``, the rest are
analysed off the event loop by :class:`~processors.audio.analyzer.AudioAnalyzer` (VAD
batched across every stream of the batch), and predictions and alerts are produced before
the batch is acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import faust
from prometheus_client import Counter

from models.silero_vad import RATE, SileroVad
from models.sound_classifier import OnnxSoundClassifier, SoundClassifier
from pipelines.runtime.app import raw_topic
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import FaustOutputs, Outputs
from pipelines.runtime.steps import DeadLetterSink, guarded, split_events
from pipelines.runtime.streams import batch_agent
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer, BatchResult, Finding, VadModel
from processors.audio.codec import AudioChunk, accept_chunk
from processors.common.schemas import Alert, Prediction, Rejected, encode

__all__ = ["PIPELINE", "STEP", "AnalyzeAudio", "AudioPipeline", "build", "load_models"]

STEP = "analyze-audio"
PIPELINE = "audio"
STALL_CHECK_S = 1.0

log = logging.getLogger(__name__)


class AnalyzeAudio:
    """The step behind the agent: one micro-batch of chunk events at a time."""

    def __init__(
        self,
        settings: Settings,
        analyzer: AudioAnalyzer,
        outputs: Outputs,
        metrics: StepMetrics,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.outputs = outputs
        self.metrics = metrics
        self.executor = executor
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)
        self.lock = asyncio.Lock()  # the analyzer's state has one writer at a time
        self.max_frames = round(settings.audio.max_chunk_s * RATE)
        self.gaps = Counter(
            "streamwise_audio_gap_chunks",
            "Missing chunks replaced by silence",
            ["step"],
            registry=metrics.registry,
        )
        self.versions = {"vad": analyzer.vad.version, "anomaly": "river-halfspacetrees/0.26"}
        if analyzer.classifier is not None:
            self.versions["classifier"] = analyzer.classifier.version

    async def __call__(self, events: Sequence[Any]) -> None:
        """Handle a batch; an unexpected failure dead-letters the batch instead of crashing."""
        await guarded(STEP, events, self.handle, self.dead)

    def split(
        self, events: Sequence[Any]
    ) -> tuple[list[tuple[Any, AudioChunk]], list[tuple[Any, Rejected]]]:
        """Decode a batch: ``(event, chunk)`` pairs and ``(event, why)`` rejections."""
        return split_events(
            events,
            self.settings.worker.max_event_bytes,
            lambda raw, key: accept_chunk(raw, key, RATE, self.max_frames),
        )

    async def handle(self, events: Sequence[Any]) -> None:
        started = perf_counter()
        valid, rejected = self.split(events)
        for event, why in rejected:
            await self.dead.send(event, STEP, why.reason, why.detail)
        if valid:
            chunks = [chunk for _, chunk in valid]
            loop = asyncio.get_running_loop()
            async with self.lock:
                result = await loop.run_in_executor(
                    self.executor, self.analyzer.process, chunks, time.monotonic()
                )
            last = {chunk.stream_id: event for event, chunk in valid}
            await self.emit(result, last)
        m = self.metrics
        m.events.labels(STEP, "ok").inc(len(valid))
        m.events.labels(STEP, "dead_letter").inc(len(rejected))
        m.batch_size.labels(STEP).observe(len(events))
        m.batch_seconds.labels(STEP).observe(perf_counter() - started)

    async def emit(self, result: BatchResult, last: dict[str, Any]) -> None:
        """Predictions for every window, alerts for every finding, in the streams' scopes."""
        now = datetime.now(UTC)
        conf = self.settings.audio
        topics = self.settings.topics
        m = self.metrics
        m.events.labels(STEP, "duplicate").inc(result.duplicates)
        m.events.labels(STEP, "late").inc(result.late)
        self.gaps.labels(STEP).inc(result.gap_chunks)
        for w in result.windows:
            prediction = Prediction(
                pipeline=PIPELINE,
                event_id=f"{w.stream_id}:{w.index}",
                entity=f"stream:{w.stream_id}",
                score=w.anomaly_score,
                threshold=conf.anomaly_threshold,
                model_versions=self.versions,
                event_time=w.event_time,
                emit_time=now,
                features=w.features,
            )
            with self.outputs.scope(last[w.stream_id]):
                await self.outputs.send(
                    topics.predictions, w.stream_id.encode(), encode(prediction)
                )
        for finding in result.findings:
            with self.outputs.scope(last[finding.stream_id]):
                await self.send_alert(finding, now)
        if result.windows:
            newest = max(w.event_time for w in result.windows)
            m.event_time_lag.labels(STEP).set((now - newest).total_seconds())

    async def send_alert(
        self, finding: Finding, now: datetime, outputs: Outputs | None = None
    ) -> None:
        alert = Alert(
            pipeline=PIPELINE,
            kind=finding.kind,
            event_id=finding.event_id,
            entity=f"stream:{finding.stream_id}",
            score=finding.score,
            threshold=finding.threshold,
            model_versions=self.versions,
            reasons=finding.reasons,
            event_time=finding.event_time,
            emit_time=now,
        )
        await (outputs or self.outputs).send(
            self.settings.topics.alerts, finding.stream_id.encode(), encode(alert)
        )
        self.metrics.alerts.labels(STEP, finding.kind).inc()

    async def check_stalled(self, outputs: Outputs | None = None) -> None:
        """Alert on streams without chunks for ``dead_after_s`` (run by a timer).

        The worker's timer passes its own ``outputs``: waiting for delivery here must not
        take the records of a batch in flight out of that batch's own delivery check.
        """
        loop = asyncio.get_running_loop()
        async with self.lock:
            findings = await loop.run_in_executor(
                self.executor, self.analyzer.check_stalled, time.monotonic()
            )
        now = datetime.now(UTC)
        for finding in findings:
            await self.send_alert(finding, now, outputs)
        if findings:
            await (outputs or self.outputs).delivered()


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


@dataclass
class AudioPipeline:
    """Handles to what ``build`` declared, for the CLI and tests."""

    app: faust.App
    settings: Settings
    step: AnalyzeAudio
    agent: Any


def build(app: faust.App, settings: Settings) -> AudioPipeline:
    """Declare the audio pipeline on ``app``."""
    t = settings.topics
    metrics: StepMetrics = app.streamwise_metrics  # type: ignore[attr-defined]
    vad, classifier = load_models(settings)
    analyzer = AudioAnalyzer(settings.audio, vad, classifier)
    source = raw_topic(app, t.audio_chunks, t.partitions)
    outputs = FaustOutputs(app, [t.predictions, t.alerts, t.dead_letters])
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=STEP)
    step = AnalyzeAudio(settings, analyzer, outputs, metrics, executor)

    analyze_audio = batch_agent(app, source, STEP, step, settings)

    stall_outputs = FaustOutputs(app, [t.alerts])

    async def stalled() -> None:
        await step.check_stalled(stall_outputs)

    app.timer(interval=STALL_CHECK_S, name=f"{STEP}-stalled")(stalled)

    return AudioPipeline(app, settings, step, analyze_audio)
