"""The video pipeline on a Faust app: camera frames in; faces, tampering and activity out.

``build(app, settings)`` declares the stage ``analyze-video`` on ``video-frames``
(:class:`~pipelines.video.step.AnalyzeFrames`, fed micro-batches of
``STREAMWISE_VIDEO__BATCH_SIZE`` frames from whole fetches like every stage:
:mod:`pipelines.runtime.stages`) and a timer that raises ``camera_silent`` (not while the
worker rebalances: it reads nothing then). The step learns which partitions of
``video-frames`` this worker holds from the assignor (:func:`assigned_partitions`) and
checkpoints each camera's state to ``<app_prefix>-video-state`` (compacted; the worker
creates it) every ``STREAMWISE_VIDEO__CHECKPOINT_S`` at most, restoring the cameras of the
partitions it is assigned from there. This is the only module of the video pipeline that
imports Faust.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from pipelines.runtime.app import raw_topic
from pipelines.runtime.checkpoints import Checkpoints, state_topic
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import FaustOutputs
from pipelines.runtime.stages import Stages
from pipelines.settings import Settings
from pipelines.video.step import STEP, AnalyzeFrames
from processors.video.face_boxes import BatchModel

__all__ = ["VideoPipeline", "assigned_partitions", "build", "load_detector"]


def load_detector(settings: Settings) -> BatchModel:
    """CenterFace from ``detector_path`` (default: the fetched asset), sha256 checked."""
    from models.assets import load_manifest
    from models.centerface import CenterFace

    v = settings.video
    path = v.detector_path or settings.assets_dir / "centerface.onnx"
    sha256 = v.detector_checksum
    if sha256 is None:
        manifest = Path(__file__).resolve().parents[2] / "models" / "video.toml"
        pinned = {a.name: a.sha256 for a in load_manifest(manifest)}
        sha256 = pinned["centerface.onnx"]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `streamwise assets fetch` first")
    return CenterFace(path, sha256, threads=v.detector_threads)


def assigned_partitions(app: faust.App, topic: str) -> Callable[[], frozenset[int]]:
    """The partitions of ``topic`` this worker holds now, from Faust's assignor."""

    def assigned() -> frozenset[int]:
        actives = app.assignor.assigned_actives()
        return frozenset(tp.partition for tp in actives if tp.topic == topic)

    return assigned


@dataclass
class VideoPipeline:
    """Handles to what ``build`` declared, for the CLI and tests."""

    app: faust.App
    settings: Settings
    step: AnalyzeFrames
    agent: Any
    timer: Any = field(default=None)


def build(app: faust.App, settings: Settings, detector: BatchModel | None = None) -> VideoPipeline:
    """Declare the video pipeline on ``app``."""
    t = settings.topics
    metrics: StepMetrics = app.streamwise_metrics  # type: ignore[attr-defined]
    source = raw_topic(app, t.video_frames, t.partitions)
    checkpoints = Checkpoints(settings, state_topic(settings, "video"), settings.video.checkpoint_s)
    topics = [t.predictions, t.alerts, t.dead_letters, t.video_anonymized, checkpoints.topic]
    outputs = FaustOutputs(app, topics)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=STEP)
    step = AnalyzeFrames(
        settings,
        detector or load_detector(settings),
        outputs,
        metrics,
        executor,
        assigned=assigned_partitions(app, t.video_frames),
        checkpoints=checkpoints,
    )

    stages = Stages(app, settings)
    within = settings.worker.batch_within_s
    analyze_video = stages.declare(source, step, settings.video.batch_size, within)

    silence = FaustOutputs(app, [t.alerts])

    async def camera_silent() -> None:
        if not app.rebalancing:
            await step.check_silent(silence)

    timer = app.timer(interval=1.0)(camera_silent)

    return VideoPipeline(app, settings, step, analyze_video, timer)
