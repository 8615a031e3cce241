"""Frames from a video file, a camera device index or a folder of images, with OpenCV.

A source yields BGR frames, resized to a target width (aspect kept) when one is given.
``loop`` restarts a file or folder at its end; a camera never ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["IMAGE_SUFFIXES", "FrameSource", "open_source", "resize_to_width"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Image = npt.NDArray[np.uint8]


def resize_to_width(image: Image, width: int | None) -> Image:
    """``image`` scaled to ``width`` pixels wide (aspect kept); unchanged when None.

    >>> resize_to_width(np.zeros((272, 640, 3), np.uint8), 320).shape
    (136, 320, 3)
    """
    if width is None or image.shape[1] == width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=interpolation), np.uint8)


@dataclass(frozen=True)
class FrameSource:
    """Where frames come from and how fast the source itself runs (None: unknown)."""

    spec: str
    native_fps: float | None

    def frames(self, width: int | None = None, loop: bool = False) -> Iterator[Image]:
        while True:
            produced = 0
            for frame in self._once():
                produced += 1
                yield resize_to_width(frame, width)
            if not loop or produced == 0 or self.spec.isdigit():
                return

    def _once(self) -> Iterator[Image]:
        path = Path(self.spec)
        if path.is_dir():
            for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is not None:
                    yield np.asarray(image, np.uint8)
            return
        capture = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
        try:
            ok, frame = capture.read()
            while ok:
                yield np.asarray(frame, np.uint8)
                ok, frame = capture.read()
        finally:
            capture.release()


def open_source(spec: str) -> FrameSource:
    """A source for a file path, a folder of images or a camera index (``"0"``)."""
    path = Path(spec)
    if path.is_dir():
        return FrameSource(spec, None)
    if not spec.isdigit() and not path.exists():
        raise FileNotFoundError(f"no video file, image folder or camera index {spec!r}")
    capture = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
    try:
        if not capture.isOpened():
            raise OSError(f"OpenCV cannot open {spec!r}")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    return FrameSource(spec, fps if 0 < fps < 1000 else None)
