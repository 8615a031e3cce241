"""Face detection around an ONNX ``predict_batch``: letterboxing, decoding, NMS and blurring.

A detector model maps ``[N, 3, H, W]`` RGB pixels to CenterFace-style heads ``[N, 15, H/4,
W/4]`` (heatmap, scale, offset, landmarks); :func:`detect_faces` letterboxes frames of any
size into one batch, runs the model once and returns boxes in each frame's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["BatchModel", "blur_boxes", "decode_heads", "detect_faces", "letterbox", "nms"]

Image = npt.NDArray[np.uint8]
Boxes = npt.NDArray[np.float32]  # [k, 5]: x1, y1, x2, y2, score


class BatchModel(Protocol):
    """What detection needs of a model: a version and ``predict_batch``."""

    @property
    def version(self) -> str: ...

    def predict_batch(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


def _fit(image: Image, width: int, height: int) -> tuple[Image, float]:
    """``image`` scaled (aspect kept) to fit ``width`` x ``height``, and the scale."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return image, scale
    # Area averaging where it matters (shrinking by more than half); bilinear is 4x cheaper
    # and alias-free enough above that (a reduced-decoded 320x240 frame to 256x192).
    method = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (new_w, new_h), interpolation=method), np.uint8), scale


def _into(blob: npt.NDArray[np.float32], fitted: Image) -> None:
    """Copy BGR ``fitted`` into the top left of the CHW RGB float ``blob`` (rest stays 0)."""
    h, w = fitted.shape[:2]
    blob[::-1, :h, :w] = fitted.transpose(2, 0, 1)  # BGR to RGB by reversing the channels


def letterbox(image: Image, width: int, height: int) -> tuple[npt.NDArray[np.float32], float]:
    """A BGR frame scaled to fit ``width`` x ``height`` (aspect kept, zero padded), as CHW RGB.

    >>> blob, scale = letterbox(np.zeros((480, 640, 3), np.uint8), 320, 256)
    >>> blob.shape, scale
    ((3, 256, 320), 0.5)
    """
    fitted, scale = _fit(image, width, height)
    blob = np.zeros((3, height, width), np.float32)
    _into(blob, fitted)
    return blob, scale


def nms(boxes: Boxes, iou: float) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap < iou]
    return np.asarray(keep, dtype=np.intp)


def decode_heads(heads: npt.NDArray[np.float32], threshold: float, iou: float = 0.3) -> Boxes:
    """Boxes ``[k, 5]`` in input pixels from one image's ``[15, h, w]`` CenterFace heads."""
    heat = heads[0]
    rows, cols = np.nonzero(heat > threshold)
    if rows.size == 0:
        return np.empty((0, 5), np.float32)
    size_h = np.exp(heads[1, rows, cols]) * 4
    size_w = np.exp(heads[2, rows, cols]) * 4
    cy = (rows + heads[3, rows, cols] + 0.5) * 4
    cx = (cols + heads[4, rows, cols] + 0.5) * 4
    height, width = heat.shape[0] * 4, heat.shape[1] * 4
    x1 = np.clip(cx - size_w / 2, 0, width)
    y1 = np.clip(cy - size_h / 2, 0, height)
    x2 = np.minimum(x1 + size_w, width)
    y2 = np.minimum(y1 + size_h, height)
    boxes = np.stack([x1, y1, x2, y2, heat[rows, cols]], axis=1).astype(np.float32)
    return boxes[nms(boxes, iou)]


def detect_faces(
    model: BatchModel,
    frames: Sequence[Image],
    width: int,
    height: int,
    threshold: float,
) -> list[Boxes]:
    """Faces ``[k, 5]`` per BGR frame, in that frame's pixels, from one batched model call."""
    if not frames:
        return []
    batch = np.zeros((len(frames), 3, height, width), np.float32)
    scales = []
    for blob, frame in zip(batch, frames, strict=True):
        fitted, scale = _fit(frame, width, height)
        _into(blob, fitted)
        scales.append(scale)
    heads = model.predict_batch(batch)
    found = []
    for frame, head, scale in zip(frames, heads, scales, strict=True):
        boxes = decode_heads(head, threshold)
        boxes[:, :4] /= scale
        h, w = frame.shape[:2]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        found.append(boxes)
    return found


def blur_boxes(image: Image, boxes: Boxes, margin: float = 0.15) -> Image:
    """A copy of ``image`` with each box (grown by ``margin``) pixelated beyond recognition."""
    out = image.copy()
    h, w = image.shape[:2]
    for x1, y1, x2, y2, _ in boxes.tolist():
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
        right, bottom = min(w, int(x2 + dx) + 1), min(h, int(y2 + dy) + 1)
        if right - left < 2 or bottom - top < 2:
            continue
        region = out[top:bottom, left:right]
        small = cv2.resize(region, (4, 4), interpolation=cv2.INTER_AREA)
        out[top:bottom, left:right] = cv2.resize(
            small, (right - left, bottom - top), interpolation=cv2.INTER_NEAREST
        )
    return out
