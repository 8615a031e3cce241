"""A camera's sliding window of recent frame features, and tampering judged against it.

The window holds the features of the last ``size`` normal frames; its baseline is their
median brightness and sharpness and their mean histogram. A new frame is compared with the
baseline before it joins: a covered lens (dark and flat), a sudden drop or rise of
brightness, a loss of sharpness (defocus) or a histogram far from the reference (the view
moved). A condition becomes an alert once it held for ``persist_frames`` frames in a row,
once per episode; tampered frames stay out of the window, so the baseline does not drift
towards them, until the condition has lasted a whole window: then it is the new normal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Final

import numpy as np

from processors.video.frame_features import FrameFeatures, Histogram, histogram_distance

__all__ = ["TAMPER_KINDS", "Baseline", "CameraWindow", "Observation", "TamperLimits", "classify"]

TAMPER_KINDS: Final = ("covered", "dark", "bright", "defocus", "moved")


@dataclass(frozen=True, slots=True)
class TamperLimits:
    """When a frame counts as tampered, compared with its camera's baseline."""

    covered_brightness: float = 35.0  # mean gray level below which, with low contrast,
    covered_contrast: float = 12.0  # ... the lens counts as covered
    brightness_jump: float = 50.0  # gray levels of sudden change (dark or bright)
    defocus_ratio: float = 0.25  # sharpness below this fraction of the baseline
    moved_distance: float = 0.3  # histogram distance to the reference
    persist_frames: int = 3
    min_frames: int = 10  # no judgement before the window has this many frames


@dataclass(frozen=True, slots=True)
class Baseline:
    brightness: float
    sharpness: float
    histogram: Histogram


@dataclass(frozen=True, slots=True)
class Observation:
    """What one frame did to its window: distance to the reference and any tampering."""

    histogram_distance: float
    tamper: str | None  # the condition this frame shows, if any
    alert: str | None  # set on the frame where a condition became an alert
    reasons: tuple[str, ...] = ()


def classify(
    f: FrameFeatures, base: Baseline, limits: TamperLimits
) -> tuple[str | None, str, float]:
    """The tampering condition ``f`` shows against ``base`` (or None), a reason and the distance."""
    distance = histogram_distance(base.histogram, f.histogram)
    if f.brightness < limits.covered_brightness and f.contrast < limits.covered_contrast:
        return "covered", f"brightness {f.brightness:.1f} and contrast {f.contrast:.1f}", distance
    change = f.brightness - base.brightness
    if change <= -limits.brightness_jump:
        return "dark", f"brightness {f.brightness:.1f} vs baseline {base.brightness:.1f}", distance
    if change >= limits.brightness_jump:
        return (
            "bright",
            f"brightness {f.brightness:.1f} vs baseline {base.brightness:.1f}",
            distance,
        )
    if f.sharpness < limits.defocus_ratio * base.sharpness:
        return "defocus", f"sharpness {f.sharpness:.1f} vs baseline {base.sharpness:.1f}", distance
    if distance > limits.moved_distance:
        return "moved", f"histogram distance {distance:.3f} to the reference", distance
    return None, "", distance


class CameraWindow:
    """The recent normal frames of one camera; :meth:`observe` judges and then admits a frame."""

    def __init__(self, size: int, limits: TamperLimits) -> None:
        self.frames: deque[FrameFeatures] = deque(maxlen=size)
        self.limits = limits
        self.streak_kind: str | None = None
        self.streak = 0

    def baseline(self) -> Baseline | None:
        if len(self.frames) < self.limits.min_frames:
            return None
        hist = np.mean([f.histogram for f in self.frames], axis=0).astype(np.float32)
        return Baseline(
            brightness=median(f.brightness for f in self.frames),
            sharpness=median(f.sharpness for f in self.frames),
            histogram=hist,
        )

    def observe(self, f: FrameFeatures) -> Observation:
        base = self.baseline()
        if base is None:
            self.frames.append(f)
            return Observation(0.0, None, None)
        kind, reason, distance = classify(f, base, self.limits)
        if kind is None:
            self.streak_kind, self.streak = None, 0
            self.frames.append(f)
            return Observation(distance, None, None)
        self.streak = self.streak + 1 if kind == self.streak_kind else 1
        self.streak_kind = kind
        alert = kind if self.streak == self.limits.persist_frames else None
        if self.streak >= (self.frames.maxlen or 1):  # lasted a whole window: the new normal
            self.frames.clear()
            self.streak_kind, self.streak = None, 0
        return Observation(distance, kind, alert, (reason,) if reason else ())
