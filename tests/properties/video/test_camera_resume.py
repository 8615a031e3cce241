"""Any camera history, checkpointed anywhere, resumes with the same verdicts (hypothesis).

Frames are drawn as features directly (a steady scene with noise, dark or bright jumps,
blur, busy motion, faces), so every path of the monitor (tampering streaks and episodes,
the anomaly streak, cooldowns, the learner's window pivots) is reached cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.camera_anomaly import CameraAnomaly
from processors.video.camera_monitor import CameraMonitor, MonitorLimits
from processors.video.camera_state import CameraState, pack_camera, unpack_camera
from processors.video.camera_window import TamperLimits
from processors.video.frame_analysis import CameraMemory
from processors.video.frame_features import HIST_BINS, FrameFeatures

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = MonitorLimits(
    tamper=TamperLimits(persist_frames=2, min_frames=4),
    window_frames=8,
    anomaly_threshold=0.5,
    anomaly_warmup=10,
    cooldown_s=0.5,
)
FACE = np.array([[10.0, 10.0, 40.0, 50.0, 0.8]], np.float32)
NONE = np.empty((0, 5), np.float32)
BASE = np.linspace(1.0, 2.0, HIST_BINS, dtype=np.float32)

Frame = tuple[FrameFeatures, np.ndarray[Any, Any]]


@st.composite
def frame(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(["steady", "steady", "steady", "dark", "bright", "blur", "busy"]))
    noise = draw(st.floats(0, 5))
    brightness = {"dark": 10.0, "bright": 190.0}.get(kind, 110.0 + noise)
    sharpness = 20.0 if kind == "blur" else 300.0 + 10 * noise
    motion = draw(st.floats(0.2, 1.0)) if kind == "busy" else noise / 1000
    histogram = BASE + np.float32(noise)
    histogram = (histogram / histogram.sum()).astype(np.float32)
    contrast = 5.0 if kind == "dark" else 40.0
    faces = FACE if draw(st.booleans()) and kind != "dark" else NONE
    return FrameFeatures(motion, brightness, contrast, sharpness, histogram), faces


def fresh() -> CameraState:
    return CameraState(CameraMonitor(LIMITS, CameraAnomaly(window_size=6, n_trees=5)), T0)


def feed(state: CameraState, frames: Sequence[Frame], start: int) -> list[Any]:
    out = []
    for i, (features, faces) in enumerate(frames, start):
        at = T0 + timedelta(seconds=i / 10)
        v = state.monitor.update(features, faces, 64, 64, at)
        state.capture_time = at
        out.append((v.anomaly_score, v.examples, v.observation, v.alerts, v.faces.tolist()))
    return out


@settings(max_examples=40)
@given(st.lists(frame(), min_size=1, max_size=80), st.data())
def test_resuming_from_a_checkpoint_changes_no_verdict(
    frames: list[Frame], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(frames)), label="checkpoint after")
    straight = feed(fresh(), frames, 0)
    first = fresh()
    first.memory = CameraMemory(
        np.full((12, 16), k % 256, np.uint8), FACE.copy(), k if k % 2 else None
    )
    before = feed(first, frames[:k], 0)
    restored = unpack_camera(pack_camera(first), LIMITS, CameraAnomaly(window_size=6, n_trees=5))
    assert restored.capture_time == first.capture_time
    assert before + feed(restored, frames[k:], k) == straight
    thumb = restored.memory.thumb
    assert thumb is not None
    assert thumb.dtype == np.uint8
    assert np.array_equal(thumb, np.full((12, 16), k % 256, np.uint8))
    assert np.array_equal(restored.memory.faces, first.memory.faces)
    assert restored.memory.faces_frame == first.memory.faces_frame
