"""Frame features on synthetic frames: motion, darkness, sharpness, histogram distance."""

from __future__ import annotations

import cv2
import numpy as np

from processors.video.frame_features import frame_features, histogram_distance


def textured(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(60, 200, size=(size[0] // 8, size[1] // 8), dtype=np.uint8)
    big = cv2.resize(noise, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return np.asarray(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR), np.uint8)


def square_at(x: int) -> np.ndarray:
    frame = np.full((240, 320, 3), 40, np.uint8)
    frame[80:160, x : x + 80] = 220
    return frame


def run(frames: list[np.ndarray]) -> list[float]:
    previous = None
    motions = []
    for frame in frames:
        features, previous = frame_features(frame, previous)
        motions.append(features.motion)
    return motions


def test_a_moving_square_moves_and_a_still_one_does_not() -> None:
    moving = run([square_at(x) for x in range(0, 200, 20)])
    still = run([square_at(100)] * 10)
    assert moving[0] == 0.0  # no previous frame
    assert min(moving[1:]) > 0.02
    assert max(still) == 0.0


def test_motion_is_the_changed_fraction() -> None:
    moving = run([square_at(0), square_at(160)])
    # two 80x80 regions of a 320x240 frame changed (old and new place): about 1/6
    assert 0.12 < moving[1] < 0.22


def test_darkness_lowers_brightness_and_contrast() -> None:
    frame = textured()
    bright, _ = frame_features(frame, None)
    dark, _ = frame_features((frame * 0.1).astype(np.uint8), None)
    black, _ = frame_features(np.zeros_like(frame), None)
    assert bright.brightness > 100
    assert dark.brightness < bright.brightness * 0.15
    assert dark.contrast < bright.contrast * 0.15
    assert black.brightness == 0.0
    assert black.contrast == 0.0


def test_blur_lowers_sharpness() -> None:
    frame = textured(1)
    sharp, _ = frame_features(frame, None)
    soft, _ = frame_features(cv2.GaussianBlur(frame, (0, 0), 2), None)
    softer, _ = frame_features(cv2.GaussianBlur(frame, (0, 0), 5), None)
    assert sharp.sharpness > soft.sharpness > softer.sharpness
    assert softer.sharpness < 0.1 * sharp.sharpness


def test_features_do_not_depend_on_resolution() -> None:
    frame = textured(2, (480, 640))
    big, _ = frame_features(frame, None)
    small, _ = frame_features(cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA), None)
    assert abs(big.brightness - small.brightness) < 1.0


def test_histogram_distance_is_zero_for_the_same_scene_and_large_for_another() -> None:
    a, _ = frame_features(textured(3), None)
    b, _ = frame_features(textured(3), None)
    dark, _ = frame_features((textured(3) * 0.3).astype(np.uint8), None)
    assert abs(float(a.histogram.sum()) - 1) < 1e-5
    assert histogram_distance(a.histogram, b.histogram) == 0.0
    assert histogram_distance(a.histogram, dark.histogram) > 0.5
