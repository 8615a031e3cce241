"""The blocking half of the video step: decode, features, batched detection, blurring.

:func:`analyze_frames` runs in an executor thread, one micro-batch at a time. It decodes
every frame (rejecting undecodable images and sizes that disagree with the envelope),
computes its features, runs the detector once for the frames that need it (all of them, or
only those with motion when gating is on) and, when asked, re-encodes frames with faces
blurred. ``cameras`` carries each camera's previous thumbnail and last faces between batches;
only this function writes it, so it has a single owner.

Features and detection only need a small image (``ANALYSIS_SIZE`` and the detector input),
so a large JPEG is decoded straight at 1/2, 1/4 or 1/8 of its size (libjpeg scales in the
DCT, far cheaper than a full decode and a resize): :func:`reduction` picks the largest factor
that keeps both. Faces are returned in the frame's own pixels whatever the factor. Only with
``anonymize`` is the full frame decoded, to blur and re-encode it; the small image is then
area-resized from it, so features and faces do not depend on the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from processors.common.schemas import Rejected
from processors.video.face_boxes import BatchModel, Boxes, blur_boxes, detect_faces
from processors.video.frame_features import ANALYSIS_SIZE, FrameFeatures, Gray, frame_features
from processors.video.frames import VideoFrame

__all__ = [
    "AnalysisConfig",
    "Analyzed",
    "CameraMemory",
    "analyze_frames",
    "decode_image",
    "jpeg_size",
    "reduction",
]

Image = npt.NDArray[np.uint8]

_REDUCED: Final = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# start-of-frame markers (baseline, progressive, lossless, arithmetic...): not DHT, JPG, DAC
_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    detect_width: int = 256
    detect_height: int = 192
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


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's start-of-frame header, or None if not found.

    >>> ok, data = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    >>> jpeg_size(data.tobytes()), jpeg_size(b"not a jpeg")
    ((64, 48), None)
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return None
        elif marker in _SOF:  # length (2), precision (1), height (2), width (2)
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def reduction(frame: VideoFrame, config: AnalysisConfig) -> int:
    """The largest of 8, 4, 2 a JPEG ``frame`` can be decoded reduced by, else 1.

    The reduced image must still be at least ``ANALYSIS_SIZE`` and at least what the detector
    letterboxes the frame to, and divide exactly, so faces scale back to whole-frame pixels.

    >>> frame = VideoFrame("a", 0, None, "jpeg", 640, 480, b"")  # type: ignore[arg-type]
    >>> reduction(frame, AnalysisConfig(256, 192)), reduction(frame, AnalysisConfig(640, 480))
    (2, 1)
    """
    w, h = frame.width, frame.height
    if frame.encoding != "jpeg" or w <= 0 or h <= 0:
        return 1
    fit = min(config.detect_width / w, config.detect_height / h)  # the detector's scale
    for k in (8, 4, 2):
        if w % k or h % k or w // k < ANALYSIS_SIZE[0] or h // k < ANALYSIS_SIZE[1]:
            continue
        if k * fit <= 1:
            return k
    return 1


def decode_image(frame: VideoFrame, reduce: int = 1) -> Image | Rejected:
    """The BGR pixels of ``frame`` (``reduce`` times smaller: a JPEG only), or why not.

    A reduced decode checks the envelope's size against the JPEG header instead of the
    pixels; a header that cannot be read falls back to a full decode.
    """
    data = np.frombuffer(frame.image, np.uint8)
    expected = (frame.width, frame.height)
    if reduce > 1:
        header = jpeg_size(frame.image)
        if header is None:
            reduce = 1
        elif header != expected:
            detail = f"image is {header[0]}x{header[1]}, envelope says {expected[0]}x{expected[1]}"
            return Rejected("size_mismatch", detail)
    image = cv2.imdecode(data, _REDUCED[reduce] if reduce > 1 else cv2.IMREAD_COLOR)
    if image is None:
        return Rejected("undecodable_image", f"{frame.encoding} image of {len(data)} bytes")
    h, w = image.shape[:2]
    if (w * reduce, h * reduce) != expected:
        detail = f"image is {w}x{h} at 1/{reduce}, envelope says {expected[0]}x{expected[1]}"
        return Rejected("size_mismatch", detail)
    return np.ascontiguousarray(image, np.uint8)


def _small_and_full(
    frame: VideoFrame, config: AnalysisConfig
) -> tuple[Image, Image, int] | Rejected:
    """The image features and detection use, the full frame (only when anonymizing: else
    the small one) and the factor between them."""
    k = reduction(frame, config)
    if not config.anonymize:
        small = decode_image(frame, k)
        return small if isinstance(small, Rejected) else (small, small, k)
    full = decode_image(frame)
    if isinstance(full, Rejected) or k == 1:
        return full if isinstance(full, Rejected) else (full, full, 1)
    size = (frame.width // k, frame.height // k)
    small = np.asarray(cv2.resize(full, size, interpolation=cv2.INTER_AREA), np.uint8)
    return small, full, k


def analyze_frames(
    frames: Sequence[VideoFrame],
    model: BatchModel,
    cameras: dict[str, CameraMemory],
    config: AnalysisConfig,
) -> list[Analyzed | Rejected]:
    """Results in the order of ``frames``; see the module docstring."""
    results: list[Analyzed | Rejected] = []
    chosen: list[Image] = []
    pending: list[tuple[int, VideoFrame, Image, int, FrameFeatures, bool]] = []
    for frame in frames:
        decoded = _small_and_full(frame, config)
        if isinstance(decoded, Rejected):
            results.append(decoded)
            continue
        small, full, k = decoded
        memory = cameras.setdefault(frame.camera_id, CameraMemory())
        first = memory.thumb is None
        features, memory.thumb = frame_features(small, memory.thumb)
        detect = not config.motion_gating or first or features.motion >= config.motion_threshold
        pending.append((len(results), frame, full, k, features, detect))
        results.append(Rejected("pending", ""))  # replaced below
        if detect:
            chosen.append(small)
    found = iter(
        detect_faces(
            model, chosen, config.detect_width, config.detect_height, config.face_threshold
        )
    )
    for index, frame, full, k, features, detect in pending:
        memory = cameras[frame.camera_id]
        if detect:
            faces = next(found)
            if k != 1:
                faces[:, :4] *= k
            memory.faces, memory.faces_frame = faces, frame.frame_no
        anonymized = None
        if config.anonymize:
            ok, encoded = cv2.imencode(
                ".jpg",
                blur_boxes(full, memory.faces),
                [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality],
            )
            anonymized = encoded.tobytes() if ok else None
        results[index] = Analyzed(
            frame, features, memory.faces, detect, memory.faces_frame, anonymized
        )
    return results
