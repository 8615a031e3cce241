"""Per-frame image features: motion, brightness, contrast, sharpness and a gray histogram.

Every feature is computed on a fixed-size gray copy of the frame, so values are comparable
across a camera's frames whatever their resolution. Motion is frame differencing against the
camera's previous thumbnail (the caller keeps it): the fraction of pixels that changed.

>>> still = np.full((120, 160, 3), 90, np.uint8)
>>> first, thumb = frame_features(still, None)
>>> first.motion, first.brightness
(0.0, 90.0)
>>> frame_features(still, thumb)[0].motion
0.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "ANALYSIS_SIZE",
    "FrameFeatures",
    "frame_features",
    "histogram_distance",
    "motion_fraction",
]

ANALYSIS_SIZE: Final = (320, 240)  # width, height of the gray image sharpness is measured on
THUMB_SIZE: Final = (160, 120)  # motion and histograms
HIST_BINS: Final = 32
DIFF_LEVEL: Final = 25  # a pixel "moved" when its blurred gray level changed by more

Gray = npt.NDArray[np.uint8]
Histogram = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    """What the window and the tampering checks need of one frame."""

    motion: float  # fraction of thumbnail pixels that changed since the previous frame
    brightness: float  # mean gray level, 0..255
    contrast: float  # standard deviation of the gray level
    sharpness: float  # variance of the Laplacian at ANALYSIS_SIZE
    histogram: Histogram  # HIST_BINS gray-level bins summing to 1


def motion_fraction(previous: Gray | None, current: Gray) -> float:
    """Fraction of pixels whose (blurred) gray level changed by more than ``DIFF_LEVEL``."""
    if previous is None or previous.shape != current.shape:
        return 0.0
    changed = cv2.absdiff(previous, current) > DIFF_LEVEL
    return round(float(np.count_nonzero(changed)) / changed.size, 6)


def histogram_distance(a: Histogram, b: Histogram) -> float:
    """Bhattacharyya (Hellinger) distance of two normalized histograms: 0 same, 1 disjoint."""
    distance = cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA)
    return round(min(1.0, max(0.0, float(distance))), 6)


def frame_features(
    image: npt.NDArray[np.uint8], previous: Gray | None
) -> tuple[FrameFeatures, Gray]:
    """Features of a BGR (or gray) frame and its blurred thumbnail, for the next frame's motion."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if gray.shape[1::-1] == ANALYSIS_SIZE:  # e.g. a 640x480 JPEG decoded at half size
        analysis = gray
    else:
        analysis = cv2.resize(gray, ANALYSIS_SIZE, interpolation=cv2.INTER_AREA)
    small = cv2.resize(analysis, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    thumb = np.asarray(cv2.GaussianBlur(small, (5, 5), 0), dtype=np.uint8)
    mean, std = cv2.meanStdDev(analysis)
    # The 3x3 Laplacian of 8-bit pixels fits in int16 (|v| <= 4 * 255): no float64 image; its
    # variance is the square of its standard deviation, which OpenCV sums in double.
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(analysis, cv2.CV_16S))
    sharpness = float(lap_std[0, 0]) ** 2
    hist = cv2.calcHist([thumb], [0], None, [HIST_BINS], [0, 256]).ravel()
    histogram: Histogram = (hist / max(float(hist.sum()), 1.0)).astype(np.float32)
    features = FrameFeatures(
        motion=motion_fraction(previous, thumb),
        brightness=round(float(mean[0, 0]), 4),
        contrast=round(float(std[0, 0]), 4),
        sharpness=round(sharpness, 4),
        histogram=histogram,
    )
    return features, thumb
