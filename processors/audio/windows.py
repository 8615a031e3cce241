"""One stream's samples cut two ways: VAD frames with context, and overlapping windows.

Silero VAD reads 512 new samples per call, preceded by the last 64 samples of the previous
frame (its context); analysis windows (0.96 s every 0.48 s by default) feed the features,
the anomaly detector and a classifier. Sample indices count from the stream's first sample,
so a window or a frame can be named by where it starts.

>>> import numpy as np
>>> buf = StreamBuffer(window=8, hop=4, frame=4, context=2)
>>> buf.append(np.arange(10, dtype=np.float32))
>>> start, frames = buf.take_frames()
>>> start, frames.tolist()
(0, [[0.0, 0.0, 0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
>>> [(s, w.tolist()) for s, w in buf.take_windows()]
[(0, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["StreamBuffer", "compact_samples", "samples_of"]

Samples = npt.NDArray[np.float32]
_PCM16: Final = 32768.0


def compact_samples(samples: Samples) -> npt.NDArray[np.float32] | npt.NDArray[np.int16]:
    """Samples to store: the int16 they came from when that is exact (half the bytes of a
    checkpoint's buffers), else the float32 themselves.

    >>> compact_samples(np.array([0.5, -1.0], np.float32)).dtype.name
    'int16'
    """
    scaled = samples * np.float32(_PCM16)
    in_range = np.all((scaled >= -32768) & (scaled <= 32767))
    if in_range and np.array_equal(np.round(scaled), scaled):
        return scaled.astype(np.int16)
    return samples


def samples_of(stored: npt.NDArray[Any]) -> Samples:
    """Back from :func:`compact_samples`: float32 samples, bit for bit."""
    if stored.dtype == np.int16:
        return stored.astype(np.float32) / np.float32(_PCM16)
    return np.asarray(stored, dtype=np.float32)


class StreamBuffer:
    """Pending samples of one stream; frames and windows are taken as soon as complete."""

    def __init__(self, window: int, hop: int, frame: int = 512, context: int = 64) -> None:
        if not 0 < hop <= window:
            raise ValueError("need 0 < hop <= window")
        self.window, self.hop, self.frame, self.context = window, hop, frame, context
        self.total = 0  # samples appended so far
        self._frame_buf = np.zeros(context, dtype=np.float32)  # context + samples not framed
        self._framed = 0  # samples already cut into frames
        self._win_buf = np.zeros(0, dtype=np.float32)
        self._win_start = 0
        self._pending: list[Samples] = []  # appended, not yet joined to both buffers

    def append(self, samples: Samples) -> None:
        """Add samples; they are joined to the buffers when frames or windows are taken,
        once per micro-batch instead of once per chunk (each join copies the window buffer)."""
        samples = np.asarray(samples, dtype=np.float32)
        self.total += len(samples)
        self._pending.append(samples)

    def _join(self) -> None:
        if self._pending:
            self._frame_buf = np.concatenate([self._frame_buf, *self._pending])
            self._win_buf = np.concatenate([self._win_buf, *self._pending])
            self._pending = []

    def take_frames(self) -> tuple[int, Samples]:
        """``(start sample of the first, [k, context + frame])`` for every complete frame."""
        self._join()
        count = (len(self._frame_buf) - self.context) // self.frame
        start = self._framed
        step = self.frame
        idx = np.arange(self.context + step)[None, :] + step * np.arange(count)[:, None]
        frames = self._frame_buf[idx] if count else np.zeros((0, self.context + step), np.float32)
        used = count * step
        self._frame_buf = self._frame_buf[used:]
        self._framed += used
        return start, frames

    @property
    def next_window_start(self) -> int:
        """Sample index where the next window will start."""
        return self._win_start

    def take_windows(self) -> list[tuple[int, Samples]]:
        """``(start sample, window)`` for every complete window, in order."""
        self._join()
        out: list[tuple[int, Samples]] = []
        offset = 0
        while len(self._win_buf) - offset >= self.window:
            out.append((self._win_start, self._win_buf[offset : offset + self.window].copy()))
            offset += self.hop
            self._win_start += self.hop
        if offset:
            self._win_buf = self._win_buf[offset:]
        return out

    def state(self) -> dict[str, Any]:
        """The sample clock and the samples not yet framed or windowed, as data."""
        return {
            "total": self.total,
            "framed": self._framed,
            "win_start": self._win_start,
            "frame_buf": compact_samples(np.concatenate([self._frame_buf, *self._pending])),
            "win_buf": compact_samples(np.concatenate([self._win_buf, *self._pending])),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`state` of a buffer of the same window, hop, frame and context."""
        self.total, self._framed = int(state["total"]), int(state["framed"])
        self._win_start = int(state["win_start"])
        self._frame_buf = samples_of(np.asarray(state["frame_buf"]))
        self._win_buf = samples_of(np.asarray(state["win_buf"]))
        self._pending = []
        if len(self._frame_buf) < self.context:
            raise ValueError("a frame buffer shorter than its context")

    def jump(self, to: int) -> None:
        """Go on at sample ``to`` past a hole: the samples before it are dropped unanalysed
        (a window across a hole would measure a discontinuity), the VAD context is silence,
        and the next window and frame start at ``to``."""
        if to < self.total:
            raise ValueError(f"cannot jump back from sample {self.total} to {to}")
        self.total = self._framed = self._win_start = to
        self._frame_buf = np.zeros(self.context, dtype=np.float32)
        self._win_buf = np.zeros(0, dtype=np.float32)
        self._pending = []
