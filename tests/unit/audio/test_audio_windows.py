"""A stream's frames and windows do not depend on how its samples were chunked."""

from __future__ import annotations

import numpy as np

from processors.audio.windows import StreamBuffer


def _cut(buf: StreamBuffer, samples: np.ndarray, sizes: list[int]) -> tuple[list, list]:
    frames, windows, at = [], [], 0
    for size in sizes:
        buf.append(samples[at : at + size])
        at += size
        start, got = buf.take_frames()
        frames += [(start + i * buf.frame, f.tolist()) for i, f in enumerate(got)]
        windows += [(s, w.tolist()) for s, w in buf.take_windows()]
    return frames, windows


def test_chunking_does_not_change_frames_or_windows() -> None:
    samples = np.random.default_rng(0).normal(size=5000).astype(np.float32)
    whole = _cut(StreamBuffer(960, 480, 512, 64), samples, [5000])
    # Several appends between takes, as in a micro-batch, then one sample at a time.
    sizes = [100] * 10 + [1] * 50 + [3950]
    assert _cut(StreamBuffer(960, 480, 512, 64), samples, sizes) == whole
    buf = StreamBuffer(960, 480, 512, 64)
    for piece in np.split(samples, [700, 1300, 4100]):
        buf.append(piece)
    start, frames = buf.take_frames()
    assert (start, len(frames), buf.total) == (0, 5000 // 512, 5000)
    assert [s for s, _ in buf.take_windows()] == [s for s, _ in whole[1]]
