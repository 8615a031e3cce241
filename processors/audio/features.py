"""Window features with numpy: log-mel spectrogram, level, peak, clipping, flatness, centroid.

All functions take a batch of windows ``[W, N]`` (float32 samples in [-1, 1], 16 kHz) so a
micro-batch of many streams is one set of array operations. Levels are in dBFS relative to
full scale RMS 1.0 (a full-scale square wave), so a full-scale sine is -3.01 dBFS.

The spectral features are sums and means over a window's STFT frames, so they are computed
in two steps: per-frame statistics (:func:`frame_stats`), then per-window aggregates
(:func:`stats_features`). Overlapping windows of one stream share most of their frames;
:func:`shared_window_stats` keeps each stream's frame statistics in a :class:`FrameCache` so a
frame is transformed once, not once per window that contains it (twice at 50 % overlap).

>>> import numpy as np
>>> t = np.arange(16000) / 16000
>>> round(float(rms_dbfs(0.5 * np.sin(2 * np.pi * 440 * t)[None])[0]), 2)
-9.03
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "FEATURE_NAMES",
    "FLOOR_DB",
    "FrameCache",
    "LogMel",
    "clipping_ratio",
    "frame_flatness",
    "frame_stats",
    "mel_centres",
    "mel_filterbank",
    "peak_dbfs",
    "rms_dbfs",
    "shared_window_stats",
    "spectral_centroid",
    "spectral_flatness",
    "stats_features",
    "stats_log_mels",
    "window_features",
]

Array = npt.NDArray[np.float32]
Array64 = npt.NDArray[np.float64]
FLOOR_DB: Final = -120.0  # digital silence is reported at this level, not -inf
_EPS: Final = 1e-12
FEATURE_NAMES: Final = (
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "spectral_flatness",
    "centroid_khz",
    "low_band_db",
    "high_band_db",
)


def _db(power: Array64) -> Array64:
    return np.maximum(10.0 * np.log10(np.maximum(power, _EPS)), FLOOR_DB)


def rms_dbfs(windows: Array | Array64) -> Array64:
    """Root-mean-square level of each window in dBFS (floor -120)."""
    return _db(np.mean(np.square(windows, dtype=np.float64), axis=-1))


def peak_dbfs(windows: Array | Array64) -> Array64:
    """Largest absolute sample of each window in dBFS (floor -120)."""
    return _db(np.square(np.max(np.abs(windows), axis=-1).astype(np.float64)))


def clipping_ratio(windows: Array | Array64, level: float = 0.999) -> Array64:
    """Fraction of samples at or beyond ``level`` of full scale: a clipped input's plateau."""
    return np.asarray(np.mean(np.abs(windows) >= level, axis=-1, dtype=np.float64))


def hz_to_mel(hz: Array64 | float) -> Array64:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0))


def mel_to_hz(mel: Array64) -> Array64:
    return np.asarray(700.0 * (10.0 ** (mel / 2595.0) - 1.0))


def mel_centres(n_mels: int, fmin: float, fmax: float) -> Array64:
    """Centre frequency (Hz) of each triangular band."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    return edges[1:-1]


@cache
def mel_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Array64:
    """Triangular filters ``[n_fft // 2 + 1, n_mels]`` on the HTK mel scale (peak 1)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    bank = np.ascontiguousarray(np.maximum(0.0, np.minimum(rising, falling)).T)
    bank.setflags(write=False)  # cached and shared: nobody may change it
    return bank


@cache
def _hann(frame: int) -> Array:
    window = np.hanning(frame).astype(np.float32)
    window.setflags(write=False)
    return window


@cache
def _stats_matrix(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Array64:
    """``[bins, n_mels + 2]``: the mel filters, then bin frequencies (Hz), then ones.

    One product with a power spectrum gives its mel energies, its power-weighted frequency
    sum (the centroid's numerator) and its total power (the denominator).
    """
    bank = mel_filterbank(rate, n_fft, n_mels, fmin, fmax)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)[:, None]
    matrix = np.ascontiguousarray(np.hstack([bank, freqs, np.ones_like(freqs)]))
    matrix.setflags(write=False)
    return matrix


@dataclass(frozen=True)
class LogMel:
    """Log-mel spectrogram: 25 ms Hann frames every 10 ms, 64 bands 125-7500 Hz by default.

    A 0.96 s window at 16 kHz gives a ``[96, 64]`` patch, the shape of the common
    AudioSet-style classifiers.
    """

    rate: int = 16000
    frame: int = 400
    step: int = 160
    n_fft: int = 512
    n_mels: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0

    def frame_count(self, samples: int) -> int:
        """Frames of a window of ``samples``: one every ``step``, ``samples // step`` in all."""
        return samples // self.step

    def full_frames(self, samples: int) -> int:
        """How many of a window's first frames lie wholly inside it (the rest are padded)."""
        if samples < self.frame:
            return 0
        return min(self.frame_count(samples), (samples - self.frame) // self.step + 1)

    def power(self, frames: Array) -> Array64:
        """Power spectra ``[..., n_fft // 2 + 1]`` of raw frames ``[..., frame]`` (Hann first).

        scipy's pocketfft transforms float32 in float32, about 3x faster than numpy's here.
        """
        spectrum: npt.NDArray[np.complex64] = scipy.fft.rfft(
            frames * _hann(self.frame), n=self.n_fft, axis=-1
        )
        return np.square(np.abs(spectrum), dtype=np.float64)

    def frames(self, windows: Array) -> Array64:
        """Power spectra ``[W, T, n_fft // 2 + 1]``, ``T = samples // step`` Hann frames.

        The window's end is padded with ``frame - step`` zeros so a 0.96 s window gives
        96 frames.
        """
        count = self.frame_count(windows.shape[-1])
        padded = np.pad(windows, ((0, 0), (0, self.frame - self.step)))
        idx = np.arange(self.frame)[None, :] + self.step * np.arange(count)[:, None]
        return self.power(padded[:, idx])

    def __call__(self, windows: Array) -> Array:
        """``[W, T, n_mels]`` natural-log mel energies (offset 1e-6 against log 0)."""
        bank = mel_filterbank(self.rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        return np.log(self.frames(windows) @ bank + 1e-6).astype(np.float32)


def frame_flatness(power: Array64) -> Array64:
    """Geometric over arithmetic mean of each frame's power spectrum ``[..., bins] -> [...]``.

    The DC bin is left out (it carries offset, not spectrum shape); frames of digital silence
    count as 0.
    """
    bins = power[..., 1:]
    arith = np.mean(bins, axis=-1)
    geo = np.exp(np.mean(np.log(bins + _EPS), axis=-1))
    return np.asarray(np.where(arith > 1e-10, geo / np.maximum(arith, _EPS), 0.0))


def spectral_flatness(power: Array64) -> Array64:
    """Geometric over arithmetic mean of each frame's power spectrum, averaged per window.

    Near 0 for a tone, about 0.56 for white noise (the periodogram of noise is exponential).
    Frames of digital silence count as 0.
    """
    return np.asarray(np.mean(frame_flatness(power), axis=-1))


def spectral_centroid(power: Array64, rate: int, n_fft: int) -> Array64:
    """Power-weighted mean frequency (Hz) of each window."""
    spectrum = power.sum(axis=-2)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    total = spectrum.sum(axis=-1)
    return np.asarray(np.where(total > 0, spectrum @ freqs / np.maximum(total, _EPS), 0.0))


def frame_stats(power: Array64, logmel: LogMel) -> Array64:
    """Per-frame statistics ``[..., n_mels + 3]`` of power spectra ``[..., bins]``.

    Columns: the ``n_mels`` mel energies, the spectral flatness, the power-weighted frequency
    sum and the total power: everything :func:`stats_features` needs, so a frame's spectrum
    can be dropped once its statistics are known.
    """
    matrix = _stats_matrix(logmel.rate, logmel.n_fft, logmel.n_mels, logmel.fmin, logmel.fmax)
    mixed = power @ matrix
    return np.concatenate(
        [
            mixed[..., : logmel.n_mels],
            frame_flatness(power)[..., None],
            mixed[..., logmel.n_mels :],
        ],
        axis=-1,
    )


def stats_log_mels(stats: Array64, logmel: LogMel) -> Array:
    """``[..., n_mels]`` natural-log mel energies (offset 1e-6) from :func:`frame_stats` rows."""
    return np.log(stats[..., : logmel.n_mels] + 1e-6).astype(np.float32)


def stats_features(
    windows: Array, stats: Array64, logmel: LogMel, clip_level: float = 0.999
) -> Array64:
    """``[W, len(FEATURE_NAMES)]`` features of windows ``[W, N]`` and their frames' stats.

    ``stats`` is ``[W, T, n_mels + 3]`` from :func:`frame_stats`; the level features come
    from the samples themselves.
    """
    n = logmel.n_mels
    band_db = _db(stats[..., :n].mean(axis=1))  # [W, n_mels], level of each band over the window
    third = max(1, n // 3)
    weighted, total = stats[..., n + 1].sum(axis=1), stats[..., n + 2].sum(axis=1)
    centroid = np.where(total > 0, weighted / np.maximum(total, _EPS), 0.0)
    return np.stack(
        [
            rms_dbfs(windows),
            peak_dbfs(windows),
            clipping_ratio(windows, clip_level),
            stats[..., n].mean(axis=1),
            centroid / 1000.0,
            band_db[:, :third].mean(axis=1),
            band_db[:, -third:].mean(axis=1),
        ],
        axis=1,
    )


def window_features(
    windows: Array, logmel: LogMel, clip_level: float = 0.999
) -> tuple[Array64, Array]:
    """``([W, len(FEATURE_NAMES)] features, [W, T, n_mels] log-mel)`` of a batch of windows."""
    stats = frame_stats(logmel.frames(windows), logmel)
    return stats_features(windows, stats, logmel, clip_level), stats_log_mels(stats, logmel)


@dataclass
class FrameCache:
    """:func:`frame_stats` rows of one stream's full frames: row ``i`` is the frame whose
    first sample is ``start + i * step`` in the stream.

    Kept between micro-batches so the next window reuses the frames it shares with the
    previous one; :meth:`forget_before` drops what no later window needs.
    """

    start: int = 0
    rows: Array64 = field(default_factory=lambda: np.zeros((0, 0)))

    def end(self, step: int) -> int:
        """First sample of the frame after the last cached one."""
        return self.start + len(self.rows) * step

    def forget_before(self, sample: int, step: int) -> None:
        """Drop the rows of frames that start before ``sample``."""
        drop = min(len(self.rows), max(0, -(-(sample - self.start) // step)))
        if drop:
            self.rows = self.rows[drop:]
            self.start += drop * step


def shared_window_stats(
    caches: Sequence[FrameCache], starts: Sequence[int], windows: Array, logmel: LogMel
) -> Array64:
    """:func:`frame_stats` ``[W, T, n_mels + 3]`` of ``windows``, each frame computed once.

    Window ``i`` starts at sample ``starts[i]`` of the stream whose cache is ``caches[i]``;
    a stream's windows come in order. A window's full frames come from its stream's cache,
    and the ones not there yet are computed and added; its last frames, which reach past its
    end and are zero-padded, are its own and computed every time. The result equals
    ``frame_stats(logmel.frames(windows), logmel)`` (same frames, same arithmetic).
    """
    count, length = windows.shape
    out = np.empty((count, logmel.frame_count(length), logmel.n_mels + 3))
    rounds: list[list[int]] = []  # the k-th window of each stream, so a cache appears once
    seen: dict[int, int] = {}
    for i, frames in enumerate(caches):
        k = seen[id(frames)] = seen.get(id(frames), -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    if len(rounds) == 1:
        return _round_stats(list(caches), list(starts), windows, logmel)
    for idx in rounds:
        out[idx] = _round_stats(
            [caches[i] for i in idx], [starts[i] for i in idx], windows[idx], logmel
        )
    return out


def _strided_frames(samples: Array, frame: int, step: int, count: int) -> Array:
    """A view ``[W, count, frame]`` of the first ``count`` frames of each row, every ``step``."""
    if count == 0:
        return np.zeros((len(samples), 0, frame), samples.dtype)
    return sliding_window_view(samples, frame, axis=-1)[:, ::step][:, :count]


def _round_stats(
    caches: list[FrameCache], starts: list[int], windows: Array, logmel: LogMel
) -> Array64:
    """:func:`shared_window_stats` of windows of distinct streams."""
    step, frame = logmel.step, logmel.frame
    length = windows.shape[1]
    total, full = logmel.frame_count(length), logmel.full_frames(length)
    new_offsets: list[npt.NDArray[np.intp]] = []
    for cache_, start in zip(caches, starts, strict=True):
        contiguous = cache_.start <= start <= cache_.end(step) and len(cache_.rows)
        if not contiguous or (start - cache_.start) % step:
            cache_.start, cache_.rows = start, np.zeros((0, logmel.n_mels + 3))
        new_offsets.append(np.arange(cache_.end(step) - start, full * step, step))
    # Gather the new full frames of every window, then the padded tail frames, in one array;
    # indexing strided views copies whole frames instead of computing every sample's index.
    counts = [len(o) for o in new_offsets]
    rows = np.repeat(np.arange(len(windows)), counts)
    positions = np.concatenate([*new_offsets, np.zeros(0, np.intp)]) // step
    tail = np.pad(windows[:, full * step :], ((0, 0), (0, frame - step)))
    frames = np.concatenate(
        [
            _strided_frames(windows, frame, step, full)[rows, positions],
            _strided_frames(tail, frame, step, total - full).reshape(-1, frame),
        ]
    )
    stats = frame_stats(logmel.power(frames), logmel)
    new, tails = stats[: len(rows)], stats[len(rows) :].reshape(len(windows), total - full, -1)
    out = np.empty((len(windows), total, logmel.n_mels + 3))
    at = 0
    for i, (cache_, start) in enumerate(zip(caches, starts, strict=True)):
        if counts[i]:
            cache_.rows = np.concatenate([cache_.rows, new[at : at + counts[i]]])
            at += counts[i]
        first = (start - cache_.start) // step
        out[i, :full] = cache_.rows[first : first + full]
        out[i, full:] = tails[i]
    return out
