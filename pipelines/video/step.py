"""The video pipeline's step: camera frames in; faces, tampering and unusual activity out.

:class:`AnalyzeFrames` handles one micro-batch of frames at a time: bad envelopes go to
``dead-letters``; in real-time mode frames older
than ``max_lag_s`` are skipped and counted (the newest frame of each camera in a batch is
always kept, so alerts stay current); decoding, features, batched face detection and
blurring run in an executor (:func:`~processors.video.frame_analysis.analyze_frames`); then each
frame's camera monitor judges it, and predictions, alerts and anonymized frames are sent
before the batch is acked. :meth:`AnalyzeFrames.check_silent` raises ``camera_silent`` (run
by a timer). :mod:`pipelines.video.build` declares it on a Faust app.

The step follows its input partitions (``assigned()``, given by the build, through
:class:`~pipelines.runtime.assignment.Assignment`): at the start of each batch and of each
silence check, a camera whose partition went to another worker is forgotten without an
alert, and so is a camera of a partition assigned anew (another worker had it meanwhile,
so what this worker remembers of it is stale). Each camera's state
(:mod:`processors.video.camera_state`) is checkpointed with its partition at the end of a
batch that handled it, at most every ``checkpoint_s``
(:class:`~pipelines.runtime.checkpoints.Checkpoints`); the cameras of a partition newly
held are restored from those checkpoints before anything else, so they go on without a
warm-up, without a repeated alert and without ``camera_silent``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from prometheus_client import Counter

from models.camera_anomaly import CameraAnomaly
from pipelines.runtime.assignment import Assignment
from pipelines.runtime.checkpoints import Checkpoints
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import Outputs
from pipelines.runtime.policies import FailurePolicies
from pipelines.runtime.steps import DeadLetterSink, split_events
from pipelines.settings import Settings
from pipelines.video.records import PIPELINE, alert_record, prediction_record, silent_record
from processors.common.schemas import Rejected
from processors.common.state_codec import StateCodecError
from processors.video.camera_monitor import AlertDue, CameraMonitor, MonitorLimits
from processors.video.camera_state import CameraState, pack_camera, unpack_camera
from processors.video.camera_window import TamperLimits
from processors.video.face_boxes import BatchModel
from processors.video.frame_analysis import AnalysisConfig, Analyzed, CameraMemory, analyze_frames
from processors.video.frames import VideoFrame, decode_frame, encode_frame

__all__ = ["PIPELINE", "STEP", "AnalyzeFrames", "CameraSeen", "monitor_limits"]

STEP = "analyze-video"

log = logging.getLogger(__name__)


@dataclass
class CameraSeen:
    """When a camera last sent a frame (wall clock), for ``camera_silent``."""

    wall: float
    capture_time: datetime
    silent: bool = False
    skipped: int = 0  # stale frames skipped since the last processed one


def monitor_limits(settings: Settings) -> MonitorLimits:
    """The camera monitors' limits from ``STREAMWISE_VIDEO__*``."""
    v = settings.video
    tamper = TamperLimits(
        covered_brightness=v.covered_brightness,
        covered_contrast=v.covered_contrast,
        brightness_jump=v.brightness_jump,
        defocus_ratio=v.defocus_ratio,
        moved_distance=v.moved_distance,
        persist_frames=v.persist_frames,
    )
    zone = tuple(v.face_zone) if v.face_zone is not None else None
    return MonitorLimits(
        tamper=tamper,
        window_frames=v.window_frames,
        face_threshold=v.face_threshold,
        face_zone=zone,  # type: ignore[arg-type]
        anomaly_threshold=v.anomaly_threshold,
        anomaly_warmup=2 * v.anomaly_window,
        cooldown_s=v.alert_cooldown_s,
    )


class AnalyzeFrames:
    """The step behind the agent: one micro-batch of frame events at a time."""

    name = STEP

    def __init__(
        self,
        settings: Settings,
        detector: BatchModel,
        outputs: Outputs,
        metrics: StepMetrics,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        assigned: Callable[[], frozenset[int]] | None = None,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        v = settings.video
        self.settings = settings
        self.detector = detector
        self.outputs = outputs
        self.metrics = metrics
        self.executor = executor
        self.clock = clock
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)
        self.failures = FailurePolicies(settings.policies, self.dead)
        self.config = AnalysisConfig(
            v.detect_width,
            v.detect_height,
            v.face_threshold,
            v.motion_gating,
            v.motion_threshold,
            v.anonymize,
            v.jpeg_quality,
        )
        self.limits = monitor_limits(settings)
        self.memory: dict[str, CameraMemory] = {}  # written only inside the executor call
        self.monitors: dict[str, CameraMonitor] = {}
        self.seen: dict[str, CameraSeen] = {}
        self.lock = asyncio.Lock()  # a batch, or an eviction and restore, at a time
        # the input partitions this worker holds (None: all of them), each camera's partition
        self.assignment = Assignment(assigned)
        self.checkpoints = checkpoints  # None: no camera state leaves this process
        self.restored = Counter(
            "streamwise_video_cameras_restored",
            "Cameras restored from their partition's checkpoint when it was assigned",
            ["step"],
            registry=metrics.registry,
        )
        self.evicted = Counter(
            "streamwise_video_cameras_evicted",
            "Cameras forgotten because their partition moved to another worker or came back",
            ["step"],
            registry=metrics.registry,
        )
        self.versions = {"detector": detector.version, "anomaly": CameraAnomaly.version}

    def _parse(
        self, events: Sequence[Any]
    ) -> tuple[list[tuple[Any, VideoFrame]], list[tuple[Any, Rejected]]]:
        limit = self.settings.video.max_frame_bytes
        return split_events(events, limit, lambda raw, _key: decode_frame(raw))

    def _skip_stale(
        self, valid: list[tuple[Any, VideoFrame]], now: float
    ) -> list[tuple[Any, VideoFrame]]:
        """Real-time mode: drop frames older than ``max_lag_s``, except each camera's newest."""
        for _, frame in valid:
            seen = self.seen.get(frame.camera_id)
            if seen is None:
                self.seen[frame.camera_id] = CameraSeen(now, frame.capture_time)
            else:
                seen.wall, seen.capture_time, seen.silent = now, frame.capture_time, False
        if self.settings.video.mode == "complete":
            return valid
        newest = {frame.camera_id: i for i, (_, frame) in enumerate(valid)}
        max_lag = self.settings.video.max_lag_s
        kept = []
        for i, (event, frame) in enumerate(valid):
            if newest[frame.camera_id] != i and now - frame.capture_time.timestamp() > max_lag:
                self.seen[frame.camera_id].skipped += 1
            else:
                kept.append((event, frame))
        return kept

    async def handle(self, events: Sequence[Any]) -> None:
        async with self.lock:
            await self._handle(events)

    async def _handle(self, events: Sequence[Any]) -> None:
        started = perf_counter()
        valid, rejected = self._parse(events)
        for event, why in rejected:
            await self.dead.send(event, STEP, why.reason, why.detail)
        await self.follow_assignment()
        for event, frame in valid:
            self.assignment.note(frame.camera_id, event.message.partition)
        kept = self._skip_stale(valid, self.clock())
        skipped = len(valid) - len(kept)
        results: list[Analyzed | Rejected] = []
        if kept:
            loop = asyncio.get_running_loop()
            frames = [frame for _, frame in kept]
            results = await loop.run_in_executor(
                self.executor, analyze_frames, frames, self.detector, self.memory, self.config
            )
        handled: dict[str, Any] = {}  # each camera judged in this batch: its last event
        for (event, _), result in zip(kept, results, strict=True):
            if isinstance(result, Rejected):
                await self.dead.send(event, STEP, result.reason, result.detail)
            else:
                await self.emit(event, result)
                handled[result.frame.camera_id] = event
        ok = sum(isinstance(result, Analyzed) for result in results)
        self.evict(self.assignment.unheld({event.message.partition for event, _ in valid}))
        await self.checkpoint(handled)
        m = self.metrics
        m.events.labels(STEP, "ok").inc(ok)
        m.events.labels(STEP, "skipped").inc(skipped)
        m.events.labels(STEP, "dead_letter").inc(len(events) - ok - skipped)
        m.batch_size.labels(STEP).observe(len(events))
        m.batch_seconds.labels(STEP).observe(perf_counter() - started)
        if kept:
            newest = max(frame.capture_time for _, frame in kept)
            m.event_time_lag.labels(STEP).set(self.clock() - newest.timestamp())

    async def emit(self, event: Any, result: Analyzed) -> None:
        frame = result.frame
        camera = frame.camera_id
        monitor = self.monitors.get(camera)
        if monitor is None:
            window = self.settings.video.anomaly_window
            monitor = self.monitors[camera] = CameraMonitor(self.limits, CameraAnomaly(window))
        f = result.features
        verdict = monitor.update(f, result.faces, frame.width, frame.height, frame.capture_time)
        seen = self.seen[camera]
        skipped, seen.skipped = seen.skipped, 0
        now = datetime.now(UTC)
        topics = self.settings.topics
        key = camera.encode()
        with self.outputs.scope(event):
            threshold = self.limits.anomaly_threshold
            prediction = prediction_record(result, verdict, skipped, threshold, self.versions, now)
            await self.outputs.send(topics.predictions, key, prediction)
            for due in verdict.alerts:
                await self.send_alert(frame, due, now)
            if result.anonymized is not None:
                blurred = VideoFrame(
                    camera, frame.frame_no, frame.capture_time, "jpeg",
                    frame.width, frame.height, result.anonymized,
                )  # fmt: skip
                await self.outputs.send(topics.video_anonymized, key, encode_frame(blurred))

    async def send_alert(self, frame: VideoFrame, due: AlertDue, now: datetime) -> None:
        record = alert_record(frame, due, self.versions, now)
        await self.outputs.send(self.settings.topics.alerts, frame.camera_id.encode(), record)
        self.metrics.alerts.labels(STEP, due.kind).inc()

    async def follow_assignment(self) -> list[str]:
        """Forget the cameras of partitions no longer held or newly assigned, restore those
        of the partitions newly held from their checkpoints; on any change count every
        camera's silence afresh (the worker did not read while rebalancing). Call with
        ``self.lock`` held; returns the cameras forgotten."""
        change = self.assignment.follow()
        if change is None:
            return []
        evicted = self.evict(change.forget)
        wall = self.clock()
        for seen in self.seen.values():
            seen.wall = max(seen.wall, wall)
        restored = await self.restore(change.restore)
        log.info(
            "%s: input partitions now %s (were %s); forgot %d cameras, restored %d",
            STEP,
            sorted(change.held),
            sorted(change.before) if change.before is not None else "unknown",
            len(evicted),
            restored,
        )
        return evicted

    async def restore(self, partitions: Iterable[int]) -> int:
        """Take back the checkpointed cameras of ``partitions`` (decoded in the executor:
        the lock keeps ``analyze_frames`` off the memory meanwhile); a refused checkpoint
        (damaged, or made under other limits) leaves its camera to start afresh."""
        if self.checkpoints is None:
            return 0
        stored = await self.checkpoints.stored(partitions)
        wall = self.clock()
        keep_s = self.settings.topics.retention_hours * 3600.0
        found = [(s.partition, cam, s.value) for cam, s in stored.items() if s.age_s(wall) < keep_s]
        quiet = {
            cam for cam, s in stored.items() if s.age_s(wall) >= self.settings.video.silent_after_s
        }
        if not found:
            return 0
        loop = asyncio.get_running_loop()
        raws = [(cam, raw) for _, cam, raw in found]
        decoded = await loop.run_in_executor(self.executor, self.decode_states, raws)
        wall = self.clock()
        restored = 0
        for (partition, camera, _), state in zip(found, decoded, strict=True):
            if isinstance(state, str):
                log.warning("%s: camera %s starts afresh: %s", STEP, camera, state)
                continue
            self.monitors[camera], self.memory[camera] = state.monitor, state.memory
            self.seen[camera] = CameraSeen(wall, state.capture_time, silent=camera in quiet)
            self.assignment.note(camera, partition)
            restored += 1
        self.restored.labels(STEP).inc(restored)
        return restored

    def decode_states(self, raws: Sequence[tuple[str, bytes]]) -> list[CameraState | str]:
        """Each checkpoint as a camera's state in fresh objects, or why it was refused."""
        out: list[CameraState | str] = []
        for _, raw in raws:
            try:
                anomaly = CameraAnomaly(self.settings.video.anomaly_window)
                out.append(unpack_camera(raw, self.limits, anomaly))
            except StateCodecError as exc:
                out.append(f"its checkpoint is refused ({exc})")
        return out

    async def checkpoint(self, handled: Mapping[str, Any]) -> None:
        """Checkpoint the cameras of ``handled`` (camera: its last event of the batch) not
        checkpointed within ``checkpoint_s``, each to its input partition's number, in the
        batch's outputs with that event as source (packed in the executor)."""
        if self.checkpoints is None:
            return
        due = [cam for cam in self.checkpoints.due(handled) if cam in self.monitors]
        if not due:
            return
        states = [
            CameraState(self.monitors[c], self.seen[c].capture_time, self.memory[c]) for c in due
        ]
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(self.executor, pack_states, states)
        for camera, value in zip(due, values, strict=True):
            source = handled[camera]
            partition = source.message.partition
            await self.checkpoints.send(self.outputs, camera, partition, value, source)
        self.checkpoints.written(due)

    def evict(self, cameras: Iterable[str]) -> list[str]:
        """Forget everything about ``cameras`` (frame memory, monitor and learner, silence
        clock, partition, when last checkpointed), raising nothing for them; return those
        that were known."""
        cameras = list(cameras)
        evicted = []
        for cam in cameras:
            known = self.seen.pop(cam, None) is not None
            known |= self.monitors.pop(cam, None) is not None
            known |= self.memory.pop(cam, None) is not None
            if known:
                evicted.append(cam)
        self.assignment.forget(cameras)
        if self.checkpoints is not None:
            self.checkpoints.forget(cameras)
        self.evicted.labels(STEP).inc(len(evicted))
        return evicted

    async def check_silent(self, outputs: Outputs | None = None) -> int:
        """Alert ``camera_silent`` once for each camera quiet for ``silent_after_s``.

        Cameras whose partition moved away are forgotten first, so they raise nothing. The
        worker's timer passes its own ``outputs``: waiting for delivery here must not take
        the records of a batch in flight out of that batch's own delivery check.
        """
        async with self.lock:
            await self.follow_assignment()
        out = outputs or self.outputs
        limit = self.settings.video.silent_after_s
        wall = self.clock()
        raised = 0
        for camera, seen in list(self.seen.items()):  # sends await: handle may add cameras
            quiet = wall - seen.wall
            if seen.silent or quiet < limit:
                continue
            seen.silent = True
            record = silent_record(
                camera, seen.wall, seen.capture_time, quiet, limit, self.versions, datetime.now(UTC)
            )
            await out.send(self.settings.topics.alerts, camera.encode(), record)
            self.metrics.alerts.labels(STEP, "camera_silent").inc()
            raised += 1
        if raised:
            await out.delivered()
        return raised


def pack_states(states: Sequence[CameraState]) -> list[bytes]:
    """Checkpoints of ``states``, in their order (run in the executor)."""
    return [pack_camera(state) for state in states]
