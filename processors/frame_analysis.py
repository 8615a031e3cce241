"""The blocking half of the video step: decode, features, batched detection, blurring.

:func:`analyze_frames` runs in an executor thread, one micro-batch at a time. It decodes
every frame (rejecting undecodable images and sizes that disagree with the envelope),
computes its features, runs the detector once for the frames that need it (all of them, or
only those with motion when gating is on) and, when asked, re-encodes frames with faces
blurred. ``cameras`` carries each camera's previous thumbnail and last faces between batches;
only this function writes it, so it has a single owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from processors.face_boxes import BatchModel, Boxes, blur_boxes, detect_faces
from processors.frame_features import FrameFeatures, Gray, frame_features
from processors.schemas import Rejected
from processors.video_frames import VideoFrame

__all__ = ["AnalysisConfig", "Analyzed", "CameraMemory", "analyze_frames", "decode_image"]


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    detect_width: int = 320
    detect_height: int = 256
    face_threshold: float = 0.5
    motion_gating: bool = True
    motion_threshold: float = 0.002
    anonymize: bool = False
    jpeg_quality: int = 85


@dataclass
class CameraMemory:
    """What the analysis remembers of a camera between frames."""

    thumb: Gray | None = None
    faces: Boxes = field(default_factory=lambda: np.empty((0, 5), np.float32))
    faces_frame: int | None = None  # the frame the remembered faces were detected on


@dataclass(frozen=True, slots=True)
class Analyzed:
    """One decoded frame: its features, its faces and, if asked, its anonymized bytes."""

    frame: VideoFrame
    features: FrameFeatures
    faces: Boxes
    detected: bool  # False: gating skipped detection and ``faces`` are the camera's last
    faces_frame: int | None
    anonymized: bytes | None = None


def decode_image(frame: VideoFrame) -> npt.NDArray[np.uint8] | Rejected:
    """The BGR pixels of ``frame``, or why they cannot be used."""
    data = np.frombuffer(frame.image, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        return Rejected("undecodable_image", f"{frame.encoding} image of {len(data)} bytes")
    h, w = image.shape[:2]
    if (w, h) != (frame.width, frame.height):
        detail = f"image is {w}x{h}, envelope says {frame.width}x{frame.height}"
        return Rejected("size_mismatch", detail)
    return np.ascontiguousarray(image, np.uint8)


def analyze_frames(
    frames: Sequence[VideoFrame],
    model: BatchModel,
    cameras: dict[str, CameraMemory],
    config: AnalysisConfig,
) -> list[Analyzed | Rejected]:
    """Results in the order of ``frames``; see the module docstring."""
    results: list[Analyzed | Rejected] = []
    pending: list[tuple[int, VideoFrame, npt.NDArray[np.uint8], FrameFeatures, bool]] = []
    for frame in frames:
        image = decode_image(frame)
        if isinstance(image, Rejected):
            results.append(image)
            continue
        memory = cameras.setdefault(frame.camera_id, CameraMemory())
        first = memory.thumb is None
        features, memory.thumb = frame_features(image, memory.thumb)
        detect = not config.motion_gating or first or features.motion >= config.motion_threshold
        pending.append((len(results), frame, image, features, detect))
        results.append(Rejected("pending", ""))  # replaced below
    chosen = [image for _, _, image, _, detect in pending if detect]
    found = iter(
        detect_faces(
            model, chosen, config.detect_width, config.detect_height, config.face_threshold
        )
    )
    for index, frame, image, features, detect in pending:
        memory = cameras[frame.camera_id]
        if detect:
            memory.faces, memory.faces_frame = next(found), frame.frame_no
        anonymized = None
        if config.anonymize:
            ok, encoded = cv2.imencode(
                ".jpg",
                blur_boxes(image, memory.faces),
                [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality],
            )
            anonymized = encoded.tobytes() if ok else None
        results[index] = Analyzed(
            frame, features, memory.faces, detect, memory.faces_frame, anonymized
        )
    return results
