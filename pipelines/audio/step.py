"""The audio pipeline's step: one micro-batch of PCM chunks in, predictions and alerts out.

:class:`AnalyzeAudio` sends bad chunks to ``dead-letters`` and chunks that came too late
for their place in the stream to the ``on_late`` policy; the rest are analysed off the event
loop by :class:`~processors.audio.analyzer.AudioAnalyzer` (VAD batched across every stream
of the batch), and one prediction per window and the alerts are sent before the batch is
acked. :mod:`pipelines.audio.build` declares it on a Faust app.

The step follows its input partitions (``assigned()``, given by the build): at the start of
each batch and of each stall check, a stream whose partition went to another worker is
forgotten without an alert, and so is a stream of a partition assigned anew (another
worker had it meanwhile, so what this worker remembers of it is stale).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from prometheus_client import Counter

from models.silero_vad import RATE
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import Outputs
from pipelines.runtime.policies import FailurePolicies
from pipelines.runtime.steps import DeadLetterSink, split_events
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer, BatchResult, Finding
from processors.audio.codec import AudioChunk, accept_chunk
from processors.common.schemas import Alert, Prediction, Rejected, encode

__all__ = ["PIPELINE", "STEP", "AnalyzeAudio"]

STEP = "analyze-audio"
PIPELINE = "audio"

log = logging.getLogger(__name__)


class AnalyzeAudio:
    """The step behind the agent: one micro-batch of chunk events at a time."""

    name = STEP

    def __init__(
        self,
        settings: Settings,
        analyzer: AudioAnalyzer,
        outputs: Outputs,
        metrics: StepMetrics,
        executor: Executor | None = None,
        assigned: Callable[[], frozenset[int]] | None = None,
    ) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.outputs = outputs
        self.metrics = metrics
        self.executor = executor
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)
        self.failures = FailurePolicies(settings.policies, self.dead)
        self.lock = asyncio.Lock()  # the analyzer's state has one writer at a time
        self.max_frames = round(settings.audio.max_chunk_s * RATE)
        self.gaps = Counter(
            "streamwise_audio_gap_chunks",
            "Missing chunks replaced by silence",
            ["step"],
            registry=metrics.registry,
        )
        self.evicted = Counter(
            "streamwise_audio_streams_evicted",
            "Streams forgotten because their partition moved to another worker or came back",
            ["step"],
            registry=metrics.registry,
        )
        self.assigned = assigned  # the input partitions this worker holds; None: all of them
        self.held: frozenset[int] | None = None  # as last seen
        self.partition_of: dict[str, int] = {}  # each known stream's input partition
        self.versions = {"vad": analyzer.vad.version, "anomaly": "river-halfspacetrees/0.26"}
        if analyzer.classifier is not None:
            self.versions["classifier"] = analyzer.classifier.version

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
                self.follow_assignment()
                for event, chunk in valid:
                    self.partition_of[chunk.stream_id] = event.message.partition
                result = await loop.run_in_executor(
                    self.executor, self.analyzer.process, chunks, time.monotonic()
                )
                self.forget_unheld({event.message.partition for event, _ in valid})
            for index, detail in result.late_chunks:  # came after their place was filled
                await self.failures.late(valid[index][0], STEP, detail)
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
                event_id=w.event_id,
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

    def follow_assignment(self) -> list[str]:
        """Forget the streams of partitions no longer held or newly assigned; on any change
        count every stream's silence afresh (the worker did not read while rebalancing).
        Call with ``self.lock`` held; returns the streams forgotten."""
        if self.assigned is None:
            return []
        held = self.assigned()
        if held == self.held:
            return []
        before, self.held = self.held, held
        fresh = held - before if before is not None else frozenset()
        drop = [sid for sid, p in self.partition_of.items() if p not in held or p in fresh]
        evicted = self._evict(drop)
        self.analyzer.restart_stall_clocks(time.monotonic())
        log.info(
            "%s: input partitions now %s (were %s); forgot %d streams",
            STEP,
            sorted(held),
            sorted(before) if before is not None else "unknown",
            len(evicted),
        )
        return evicted

    def forget_unheld(self, partitions: set[int]) -> list[str]:
        """Forget streams of ``partitions`` not held (records fetched before a revocation)."""
        if self.held is None or partitions <= self.held:
            return []
        gone = partitions - self.held
        return self._evict([sid for sid, p in self.partition_of.items() if p in gone])

    def _evict(self, ids: list[str]) -> list[str]:
        for sid in ids:
            del self.partition_of[sid]
        evicted = self.analyzer.evict(ids)
        self.evicted.labels(STEP).inc(len(evicted))
        return evicted

    async def check_stalled(self, outputs: Outputs | None = None) -> None:
        """Alert on streams without chunks for ``dead_after_s`` (run by a timer).

        Streams whose partition moved away are forgotten first, so they raise nothing. The
        worker's timer passes its own ``outputs``: waiting for delivery here must not take
        the records of a batch in flight out of that batch's own delivery check.
        """
        loop = asyncio.get_running_loop()
        async with self.lock:
            self.follow_assignment()
            findings = await loop.run_in_executor(
                self.executor, self.analyzer.check_stalled, time.monotonic()
            )
        now = datetime.now(UTC)
        for finding in findings:
            await self.send_alert(finding, now, outputs)
        if findings:
            await (outputs or self.outputs).delivered()
