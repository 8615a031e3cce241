"""The audio pipeline's step: one micro-batch of PCM chunks in, predictions and alerts out.

:class:`AnalyzeAudio` sends bad chunks to ``dead-letters`` and chunks that came too late
for their place in the stream to the ``on_late`` policy; the rest are analysed off the event
loop by :class:`~processors.audio.analyzer.AudioAnalyzer` (VAD batched across every stream
of the batch), and one prediction per window and the alerts are sent before the batch is
acked. :mod:`pipelines.audio.build` declares it on a Faust app.

The step follows its input partitions (:class:`~pipelines.runtime.assignment.Assignment`
over ``assigned()``, given by the build): at the start of each batch and of each stall
check, a stream whose partition went to another worker is forgotten without an alert, and so
is a stream of a partition assigned anew; then the streams of each newly held partition are
restored from its partition of the state topic (:mod:`pipelines.runtime.checkpoints`,
:mod:`processors.audio.snapshot`). At the end of a batch, each stream it touched is
checkpointed there when its last checkpoint is older than ``checkpoint_s``, and at once when
the batch raised an alert for it: so the state a worker restores never disagrees with the
alerts already committed (no speech segment ended twice, no level raised twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from prometheus_client import Counter

from models.silero_vad import RATE
from pipelines.runtime.assignment import Assignment
from pipelines.runtime.checkpoints import Checkpoints
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
        checkpoints: Checkpoints | None = None,
    ) -> None:
        """``assigned``: the input partitions held now (None: all, for good);
        ``checkpoints``: where streams' state goes and comes back from (None: nowhere)."""
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
        self.skipped = Counter(
            "streamwise_audio_skipped_chunks",
            "Chunks a restored stream went on past (analysed after its checkpoint, elsewhere)",
            ["step"],
            registry=metrics.registry,
        )
        self.restored = Counter(
            "streamwise_audio_streams_restored",
            "Streams taken back from their checkpoint when their partition was assigned",
            ["step"],
            registry=metrics.registry,
        )
        self.checkpointed = Counter(
            "streamwise_audio_checkpoints",
            "Stream checkpoints sent to the state topic",
            ["step"],
            registry=metrics.registry,
        )
        self.checkpoint_bytes = Counter(
            "streamwise_audio_checkpoint_bytes",
            "Bytes of stream checkpoints sent to the state topic",
            ["step"],
            registry=metrics.registry,
        )
        self.assignment = Assignment(assigned)  # each known stream's input partition
        self.checkpoints = checkpoints
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
            last = {chunk.stream_id: event for event, chunk in valid}
            async with self.lock:
                await self.follow_assignment()
                for event, chunk in valid:
                    self.assignment.note(chunk.stream_id, event.message.partition)
                result = await loop.run_in_executor(
                    self.executor, self.analyzer.process, chunks, time.monotonic()
                )
                self._evict(self.assignment.unheld({e.message.partition for e, _ in valid}))
                states = await self.snapshot(result, last)
            for index, detail in result.late_chunks:  # came after their place was filled
                await self.failures.late(valid[index][0], STEP, detail)
            await self.emit(result, last)
            await self.send_checkpoints(states, last)
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
        self.skipped.labels(STEP).inc(result.skipped_chunks)
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

    async def snapshot(self, result: BatchResult, last: dict[str, Any]) -> dict[str, bytes]:
        """The checkpoints due of the streams of this batch (those with an alert, always),
        made off the loop. Call with ``self.lock`` held, right after ``process``."""
        if self.checkpoints is None:
            return {}
        held = [sid for sid in last if sid in self.analyzer.streams]
        alerted = {f.stream_id for f in result.findings}
        due = set(self.checkpoints.due(held)) | (alerted & set(held))
        if not due:
            return {}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.analyzer.snapshot, sorted(due))

    async def send_checkpoints(self, states: dict[str, bytes], last: dict[str, Any]) -> None:
        """Each state to its input partition's number of the state topic, in the batch of
        its stream's last event (so in that partition's transaction under exactly_once)."""
        if self.checkpoints is None or not states:
            return
        for sid, value in states.items():
            source = last[sid]
            await self.checkpoints.send(self.outputs, sid, source.message.partition, value, source)
            self.checkpoint_bytes.labels(STEP).inc(len(value))
        self.checkpointed.labels(STEP).inc(len(states))
        self.checkpoints.written(states)

    async def follow_assignment(self) -> list[str]:
        """On a change of the partitions held: forget the streams of partitions no longer
        held or newly assigned, count every stream's silence afresh (the worker did not read
        while rebalancing), and restore the streams of the newly held partitions from their
        checkpoints. Call with ``self.lock`` held; returns the streams restored."""
        change = self.assignment.follow()
        if change is None:
            return []
        evicted = self._evict(change.forget)
        self.analyzer.restart_stall_clocks(time.monotonic())
        restored = await self.restore(change.restore)
        log.info(
            "%s: input partitions now %s (were %s); forgot %d streams, restored %d",
            STEP,
            sorted(change.held),
            sorted(change.before) if change.before is not None else "unknown",
            len(evicted),
            len(restored),
        )
        return restored

    async def restore(self, partitions: Iterable[int]) -> list[str]:
        """Take back the streams checkpointed in ``partitions`` (decoding off the loop),
        each noted on its partition so that it is forgotten when that partition goes.

        A checkpoint older than the input's retention is not restored (that stream's chunks
        are gone); one older than ``dead_after_s`` comes back as already stalled, so a stream
        that ended before the move raises no second ``dead_microphone`` here."""
        if self.checkpoints is None:
            return []
        stored = await self.checkpoints.stored(partitions)
        wall = time.time()
        keep_s = self.settings.topics.retention_hours * 3600.0
        fresh = {sid: s for sid, s in stored.items() if s.age_s(wall) < keep_s}
        quiet = {
            sid for sid, s in fresh.items() if s.age_s(wall) >= self.settings.audio.dead_after_s
        }
        if not fresh:
            return []
        loop = asyncio.get_running_loop()
        states = {sid: s.value for sid, s in fresh.items()}
        ids = await loop.run_in_executor(
            self.executor, self.analyzer.restore, states, time.monotonic(), quiet
        )
        for sid in ids:
            self.assignment.note(sid, fresh[sid].partition)
        self.restored.labels(STEP).inc(len(ids))
        return ids

    def _evict(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
        self.assignment.forget(ids)
        if self.checkpoints is not None:
            self.checkpoints.forget(ids)
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
            await self.follow_assignment()
            findings = await loop.run_in_executor(
                self.executor, self.analyzer.check_stalled, time.monotonic()
            )
        now = datetime.now(UTC)
        for finding in findings:
            await self.send_alert(finding, now, outputs)
        if findings:
            await (outputs or self.outputs).delivered()
