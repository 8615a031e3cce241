"""The video step when its input partitions move to another worker and back (no broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from pipelines.video.settings import VideoSettings
from pipelines.video.step import AnalyzeFrames
from processors.video.frames import VideoFrame, encode_frame
from tests.pipelines.fakes import FakeEvent, FakeMessage
from tests.pipelines.video.test_analyze_frames import NOW, TOPIC, jpeg
from tests.video_media import clip, detector


class Assignment:
    """What the build's ``assigned()`` would say; tests move partitions by hand."""

    def __init__(self, *partitions: int) -> None:
        self.held = frozenset(partitions)

    def __call__(self) -> frozenset[int]:
        return self.held


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def make_step(home: Path, assigned: Assignment) -> tuple[AnalyzeFrames, RecordingOutputs, Clock]:
    settings = Settings(home=home, video=VideoSettings(silent_after_s=5.0, mode="complete"))
    outputs, clock = RecordingOutputs(), Clock()
    step = AnalyzeFrames(
        settings, detector(), outputs, StepMetrics(), clock=clock, assigned=assigned
    )
    return step, outputs, clock


def frames(camera: str, partition: int, numbers: range) -> list[FakeEvent]:
    images = clip("carphone.mp4")
    out = []
    for n in numbers:
        image = images[n % len(images)]
        h, w = image.shape[:2]
        raw = encode_frame(VideoFrame(camera, n, NOW, "jpeg", w, h, jpeg(image)))
        out.append(FakeEvent(FakeMessage(TOPIC, partition, n, camera.encode(), raw)))
    return out


def alerts(out: RecordingOutputs) -> list[tuple[str, str]]:
    return [(a["entity"], a["kind"]) for a in (orjson.loads(s.value) for s in out.on("alerts"))]


def evicted(step: AnalyzeFrames) -> float:
    name = "streamwise_video_cameras_evicted_total"
    return step.metrics.registry.get_sample_value(name, {"step": "analyze-video"}) or 0.0


def test_a_camera_whose_partition_moved_away_is_not_reported_silent(home: Path) -> None:
    assigned = Assignment(0, 1)
    step, out, clock = make_step(home, assigned)
    asyncio.run(run_batch(step, frames("a", 0, range(3)) + frames("b", 1, range(3))))
    assert set(step.monitors) == set(step.memory) == set(step.seen) == {"a", "b"}

    assigned.held = frozenset({0})
    clock.now += 6.0
    assert asyncio.run(step.check_silent()) == 0  # forgets b; the pause is excused for a
    assert set(step.monitors) == set(step.memory) == set(step.seen) == {"a"}
    assert step.assignment.partitions == {"a": 0}
    assert evicted(step) == 1.0
    clock.now += 6.0
    assert asyncio.run(step.check_silent()) == 1
    assert [k for k in alerts(out) if k[1] == "camera_silent"] == [("camera:a", "camera_silent")]


def test_a_camera_whose_partition_comes_back_starts_afresh(home: Path) -> None:
    assigned = Assignment(0, 1)
    step, out, clock = make_step(home, assigned)
    asyncio.run(run_batch(step, frames("b", 1, range(6))))
    assert step.monitors["b"].learned == 6
    assigned.held = frozenset({0})
    asyncio.run(run_batch(step, frames("a", 0, range(2))))  # the batch sees b's partition go
    assert "b" not in step.monitors
    assigned.held = frozenset({0, 1})  # back, after another worker had frames 6..29
    asyncio.run(run_batch(step, frames("b", 1, range(30, 33))))
    assert step.monitors["b"].learned == 3  # nothing stale: a new window and learner
    clock.now += 3.0
    assert asyncio.run(step.check_silent()) == 0
    assert ("camera:b", "camera_silent") not in alerts(out)
