"""One camera's state as data: what a worker needs to go on with it where another stopped.

A camera's state lives with its partition of ``video-frames`` (checkpointed by the video
step to a compacted topic). It is everything that shapes the camera's next verdicts: the
analysis memory (the thumbnail motion is measured against, the last faces), the tampering
window (its frames, hence its baseline and reference histogram, and the condition streak of
an open episode), the alert cooldowns, the anomaly streak and learner, and the last capture
time. Not the wall-clock silence clock: a restored camera counts its silence from the
moment it is restored, as after any rebalance.

:func:`pack_camera` writes it with :func:`processors.common.state_codec.pack` (kind
``video-camera``, version 1); :func:`unpack_camera` rebuilds fresh objects from it and
refuses, with :class:`StateCodecError`, a state made under other limits (another
``window_frames``, another anomaly window): the camera then starts afresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np

from processors.common.state_codec import StateCodecError, pack, unpack
from processors.video.camera_monitor import AnomalyModel, CameraMonitor, MonitorLimits
from processors.video.camera_window import TAMPER_KINDS, CameraWindow
from processors.video.frame_analysis import CameraMemory
from processors.video.frame_features import HIST_BINS, FrameFeatures

__all__ = ["KIND", "VERSION", "CameraState", "camera_data", "pack_camera", "unpack_camera"]

KIND: Final = "video-camera"
VERSION: Final = 1
_SCALARS: Final = ("motion", "brightness", "contrast", "sharpness")


@dataclass
class CameraState:
    """What one camera leaves behind: its analysis memory, its monitor, its last capture."""

    monitor: CameraMonitor
    capture_time: datetime  # of the last frame seen, for ``camera_silent``'s event time
    memory: CameraMemory = field(default_factory=CameraMemory)


def _window_data(window: CameraWindow) -> dict[str, Any]:
    frames = list(window.frames)
    scalars = np.array([[getattr(f, n) for n in _SCALARS] for f in frames], np.float64)
    histograms = np.array([f.histogram for f in frames], np.float32)
    return {
        "scalars": scalars.reshape(len(frames), len(_SCALARS)),
        "histograms": histograms.reshape(len(frames), HIST_BINS),
        "streak_kind": window.streak_kind,
        "streak": window.streak,
    }


def camera_data(state: CameraState) -> dict[str, Any]:
    """``state`` as plain data (nested dicts, numbers, strings and numpy arrays)."""
    m, memory = state.monitor, state.memory
    return {
        "limits": {"window_frames": m.limits.window_frames},
        "memory": {
            "thumb": memory.thumb,
            "faces": np.asarray(memory.faces, np.float32),
            "faces_frame": memory.faces_frame,
        },
        "window": _window_data(m.window),
        "learned": m.learned,
        "anomaly_streak": m.anomaly_streak,
        "last_alert": {kind: at.isoformat() for kind, at in m.last_alert.items()},
        "anomaly": m.anomaly.state(),
        "capture_time": state.capture_time.isoformat(),
    }


def pack_camera(state: CameraState) -> bytes:
    """``state`` as a checkpoint's bytes (data only)."""
    return pack(KIND, VERSION, camera_data(state))


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StateCodecError(f"bad {what} {value!r}")
    return value


def _array(
    value: Any, dtype: str, shape: tuple[int | None, ...], what: str
) -> np.ndarray[Any, Any]:
    """``value`` if it is an array of ``dtype`` and ``shape`` (None: any length there)."""
    ok = isinstance(value, np.ndarray) and value.dtype.name == dtype and value.ndim == len(shape)
    if not ok or any(n is not None and n != got for n, got in zip(shape, value.shape, strict=True)):
        raise StateCodecError(f"bad {what} in a camera state")
    array: np.ndarray[Any, Any] = value
    return array


def _memory(data: Mapping[str, Any]) -> CameraMemory:
    thumb = data["thumb"]
    if thumb is not None:
        thumb = _array(thumb, "uint8", (None, None), "thumbnail")
    faces = _array(data["faces"], "float32", (None, 5), "faces")
    frame = data["faces_frame"]
    return CameraMemory(thumb, faces, None if frame is None else _count(frame, "faces frame"))


def _restore_window(window: CameraWindow, data: Mapping[str, Any]) -> None:
    scalars = _array(data["scalars"], "float64", (None, len(_SCALARS)), "window features")
    histograms = _array(data["histograms"], "float32", (len(scalars), HIST_BINS), "histograms")
    if len(scalars) > (window.frames.maxlen or 0):
        raise StateCodecError(
            f"{len(scalars)} window frames for a window of {window.frames.maxlen}"
        )
    for (motion, brightness, contrast, sharpness), histogram in zip(
        scalars.tolist(), histograms, strict=True
    ):
        window.frames.append(FrameFeatures(motion, brightness, contrast, sharpness, histogram))
    kind = data["streak_kind"]
    if kind is not None and kind not in TAMPER_KINDS:
        raise StateCodecError(f"bad tampering condition {kind!r}")
    window.streak_kind, window.streak = kind, _count(data["streak"], "tampering streak")


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise StateCodecError(f"bad time {text!r} in a camera state")
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise StateCodecError(f"time {text!r} without a zone in a camera state")
    return at


def unpack_camera(raw: bytes, limits: MonitorLimits, anomaly: AnomalyModel) -> CameraState:
    """The camera ``raw`` (of :func:`pack_camera`) holds, in fresh objects made with
    ``limits`` and the fresh learner ``anomaly``; :class:`StateCodecError` if it is not one,
    or one made under other limits."""
    data = unpack(raw, KIND, VERSION)
    try:
        made = data["limits"]["window_frames"]
        if made != limits.window_frames:
            raise StateCodecError(
                f"camera state of a {made}-frame window, not {limits.window_frames}"
            )
        anomaly.restore(data["anomaly"])
        monitor = CameraMonitor(limits, anomaly)
        _restore_window(monitor.window, data["window"])
        monitor.learned = _count(data["learned"], "learned count")
        monitor.anomaly_streak = _count(data["anomaly_streak"], "anomaly streak")
        monitor.last_alert = {str(k): _time(v) for k, v in dict(data["last_alert"]).items()}
        return CameraState(monitor, _time(data["capture_time"]), _memory(data["memory"]))
    except (KeyError, TypeError, ValueError) as exc:  # StateCodecError is a ValueError
        if isinstance(exc, StateCodecError):
            raise
        raise StateCodecError(f"bad camera state: {exc!r}") from exc
