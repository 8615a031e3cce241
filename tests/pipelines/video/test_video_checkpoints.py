"""Cameras that move to another step instance go on from their checkpoint (no broker).

Two instances of the video step stand for two workers. The first checkpoints its cameras
through its outputs; the second's :class:`Checkpoints` reads what the first sent (a fake
``read`` over the recorded state records), as the compacted topic would give it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.runtime.checkpoints import Checkpoints, Stored, state_topic
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from pipelines.video.settings import VideoSettings
from pipelines.video.step import STEP, AnalyzeFrames
from processors.video.frames import VideoFrame, encode_frame
from tests.pipelines.fakes import FakeEvent, FakeMessage
from tests.pipelines.video.test_analyze_frames import NOW, TOPIC, jpeg
from tests.pipelines.video.test_video_rebalances import Assignment, Clock
from tests.video_media import clip, detector

Store = dict[int, dict[str, bytes]]  # the state topic: partition -> key -> newest value


class StoredCheckpoints(Checkpoints):
    """Checkpoints whose ``read`` answers from ``store`` instead of the broker."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        super().__init__(
            settings, state_topic(settings, "video"), settings.video.checkpoint_s, clock
        )
        self.store = store
        self.reads: list[list[int]] = []
        self.age_s = 0.0  # how long ago the stored checkpoints were written

    async def stored(self, partitions: Iterable[int]) -> dict[str, Stored]:
        wanted = sorted(partitions)
        self.reads.append(wanted)
        written = self.clock() - self.age_s
        return {k: Stored(v, p, written) for p in wanted for k, v in self.store.get(p, {}).items()}


def settings_of(home: Path, **video: Any) -> Settings:
    base = VideoSettings(silent_after_s=5.0, mode="complete", checkpoint_s=5.0)
    return Settings(home=home, video=base.model_copy(update=video))


def make_step(
    settings: Settings, assigned: Assignment, store: Store, clock: Clock
) -> tuple[AnalyzeFrames, RecordingOutputs, StoredCheckpoints]:
    outputs = RecordingOutputs()
    checkpoints = StoredCheckpoints(settings, store, clock)
    step = AnalyzeFrames(
        settings, detector(), outputs, StepMetrics(), clock=clock, assigned=assigned,
        checkpoints=checkpoints,
    )  # fmt: skip
    return step, outputs, checkpoints


def frames(camera: str, partition: int, numbers: range) -> list[FakeEvent]:
    """Frames of ``carphone`` (a face in view throughout), 10 per second of capture time."""
    images = clip("carphone.mp4")
    out = []
    for n in numbers:
        image = images[n % len(images)]
        h, w = image.shape[:2]
        at = NOW + timedelta(seconds=n / 10)
        raw = encode_frame(VideoFrame(camera, n, at, "jpeg", w, h, jpeg(image)))
        out.append(FakeEvent(FakeMessage(TOPIC, partition, n, camera.encode(), raw)))
    return out


def stored(outputs: RecordingOutputs, topic: str) -> Store:
    store: Store = {}
    for sent in outputs.on(topic):
        assert sent.key is not None
        assert sent.partition is not None
        store.setdefault(sent.partition, {})[sent.key.decode()] = sent.value
    return store


def predictions(out: RecordingOutputs) -> list[dict[str, Any]]:
    return [orjson.loads(s.value) for s in out.on("predictions")]


def alerts(out: RecordingOutputs) -> list[tuple[str, str]]:
    return [(a["entity"], a["kind"]) for a in (orjson.loads(s.value) for s in out.on("alerts"))]


def restored(step: AnalyzeFrames) -> float:
    name = "streamwise_video_cameras_restored_total"
    return step.metrics.registry.get_sample_value(name, {"step": STEP}) or 0.0


def first_worker(home: Path) -> tuple[Settings, RecordingOutputs, Clock, list[FakeEvent]]:
    """Camera ``a`` (partition 1) for 24 frames in three batches at the first worker, which
    checkpoints it after the first and the last (5 s of wall clock apart); then the
    partition is revoked."""
    settings = settings_of(home)
    assigned, clock = Assignment(0, 1), Clock()
    step, out, _ = make_step(settings, assigned, {}, clock)
    batches = [frames("a", 1, range(i, i + 8)) for i in (0, 8, 16)]
    for batch in batches:
        asyncio.run(run_batch(step, batch))
        clock.now += 2.5
    assert alerts(out) == [("camera:a", "faces_present")]
    assigned.held = frozenset({0})
    clock.now += 6.0
    assert asyncio.run(step.check_silent()) == 0  # forgotten, not silent
    assert step.monitors == {}
    return settings, out, clock, batches[-1]


def test_a_moved_camera_goes_on_from_its_checkpoint_at_the_other_worker(home: Path) -> None:
    settings, first, clock, last_batch = first_worker(home)
    topic = state_topic(settings, "video")
    checkpoints = first.on(topic)
    assert [(s.key, s.partition) for s in checkpoints] == [(b"a", 1), (b"a", 1)]
    assert first.sources[first.sent.index(checkpoints[-1])] is last_batch[-1]
    examples = [p["features"]["anomaly_examples"] for p in predictions(first)]
    assert examples == [float(n) for n in range(24)]

    second, out, reads = make_step(settings, Assignment(1), stored(first, topic), clock)
    asyncio.run(run_batch(second, frames("a", 1, range(24, 32))))
    assert reads.reads == [[1]]
    assert restored(second) == 1.0
    examples = [p["features"]["anomaly_examples"] for p in predictions(out)]
    assert examples == [float(n) for n in range(24, 32)]  # the learner went on
    assert alerts(out) == []  # no tampering for the same scene; the face within cooldown
    clock.now += 3.0
    assert asyncio.run(second.check_silent()) == 0
    clock.now += 3.0  # now silent at the new worker: its clock counts from the restore
    assert asyncio.run(second.check_silent()) == 1
    assert alerts(out) == [("camera:a", "camera_silent")]


def test_without_a_checkpoint_the_camera_starts_afresh(home: Path) -> None:
    settings, _, clock, _ = first_worker(home)
    second, out, _ = make_step(settings, Assignment(1), {}, clock)
    asyncio.run(run_batch(second, frames("a", 1, range(24, 32))))
    assert restored(second) == 0.0
    assert predictions(out)[0]["features"]["anomaly_examples"] == 0.0
    assert alerts(out) == [("camera:a", "faces_present")]  # what the checkpoint prevents


def test_a_checkpoint_made_under_other_limits_is_refused_with_a_log_line(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, first, clock, _ = first_worker(home)
    store = stored(first, state_topic(settings, "video"))
    other = settings_of(home, window_frames=60)
    second, out, _ = make_step(other, Assignment(1), store, clock)
    with caplog.at_level(logging.WARNING, logger="pipelines.video.step"):
        asyncio.run(run_batch(second, frames("a", 1, range(24, 32))))
    assert restored(second) == 0.0
    assert any("camera a starts afresh" in r.getMessage() for r in caplog.records)
    assert predictions(out)[0]["features"]["anomaly_examples"] == 0.0
    assert [s.topic for s in out.sent].count("dead-letters") == 0


def test_checkpoints_follow_the_cadence_and_only_held_partitions(home: Path) -> None:
    settings = settings_of(home)
    assigned, clock = Assignment(0, 1), Clock()
    step, out, _ = make_step(settings, assigned, {}, clock)
    topic = state_topic(settings, "video")
    asyncio.run(run_batch(step, frames("a", 1, range(4)) + frames("b", 0, range(4))))
    assert sorted((s.key, s.partition) for s in out.on(topic)) == [(b"a", 1), (b"b", 0)]
    clock.now += 1.0
    asyncio.run(run_batch(step, frames("a", 1, range(4, 8))))
    assert len(out.on(topic)) == 2  # a was checkpointed 1 s ago
    clock.now += 5.0
    assigned.held = frozenset({0})  # a's partition revoked while its records were in flight
    asyncio.run(run_batch(step, frames("a", 1, range(8, 12)) + frames("b", 0, range(4, 8))))
    assert [(s.key, s.partition) for s in out.on(topic)[2:]] == [(b"b", 0)]
    assert set(step.monitors) == {"b"}


def test_a_camera_checkpointed_long_ago_comes_back_silent_and_an_expired_one_not_at_all(
    home: Path,
) -> None:
    """A camera that stopped before its partition moved raised its ``camera_silent`` where
    it was; the next worker restores it as silent already (no second alert), and a
    checkpoint older than the input's retention is not restored."""
    settings, first, clock, _ = first_worker(home)
    store = stored(first, state_topic(settings, "video"))
    second, out, checkpoints = make_step(settings, Assignment(1), store, clock)
    checkpoints.age_s = 2 * settings.video.silent_after_s
    assert asyncio.run(second.check_silent()) == 0
    assert restored(second) == 1.0
    clock.now += 60.0
    assert asyncio.run(second.check_silent()) == 0
    assert alerts(out) == []

    third, _, checkpoints = make_step(settings, Assignment(1), store, clock)
    checkpoints.age_s = settings.topics.retention_hours * 3600.0 + 1.0
    asyncio.run(third.check_silent())
    assert restored(third) == 0.0
    assert third.monitors == {}
