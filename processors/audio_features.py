"""Window features with numpy: log-mel spectrogram, level, peak, clipping, flatness, centroid.

All functions take a batch of windows ``[W, N]`` (float32 samples in [-1, 1], 16 kHz) so a
micro-batch of many streams is one set of array operations. Levels are in dBFS relative to
full scale RMS 1.0 (a full-scale square wave), so a full-scale sine is -3.01 dBFS.

>>> import numpy as np
>>> t = np.arange(16000) / 16000
>>> round(float(rms_dbfs(0.5 * np.sin(2 * np.pi * 440 * t)[None])[0]), 2)
-9.03
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FEATURE_NAMES",
    "FLOOR_DB",
    "LogMel",
    "clipping_ratio",
    "mel_centres",
    "mel_filterbank",
    "peak_dbfs",
    "rms_dbfs",
    "spectral_centroid",
    "spectral_flatness",
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

    def frames(self, windows: Array) -> Array64:
        """Power spectra ``[W, T, n_fft // 2 + 1]``, ``T = samples // step`` Hann frames.

        The window's end is padded with ``frame - step`` zeros so a 0.96 s window gives
        96 frames.
        """
        count = windows.shape[-1] // self.step
        padded = np.pad(windows, ((0, 0), (0, self.frame - self.step)))
        idx = np.arange(self.frame)[None, :] + self.step * np.arange(count)[:, None]
        framed = padded[:, idx] * np.hanning(self.frame).astype(np.float32)
        spectrum = np.fft.rfft(framed, n=self.n_fft, axis=-1)
        return np.square(np.abs(spectrum), dtype=np.float64)

    def __call__(self, windows: Array) -> Array:
        """``[W, T, n_mels]`` natural-log mel energies (offset 1e-6 against log 0)."""
        bank = mel_filterbank(self.rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        return np.log(self.frames(windows) @ bank + 1e-6).astype(np.float32)


def spectral_flatness(power: Array64) -> Array64:
    """Geometric over arithmetic mean of each frame's power spectrum, averaged per window.

    Near 0 for a tone, about 0.56 for white noise (the periodogram of noise is exponential).
    Frames of digital silence count as 0.
    """
    bins = power[..., 1:]  # DC carries offset, not spectrum shape
    arith = np.mean(bins, axis=-1)
    geo = np.exp(np.mean(np.log(bins + _EPS), axis=-1))
    flat = np.where(arith > 1e-10, geo / np.maximum(arith, _EPS), 0.0)
    return np.asarray(np.mean(flat, axis=-1))


def spectral_centroid(power: Array64, rate: int, n_fft: int) -> Array64:
    """Power-weighted mean frequency (Hz) of each window."""
    spectrum = power.sum(axis=-2)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    total = spectrum.sum(axis=-1)
    return np.asarray(np.where(total > 0, spectrum @ freqs / np.maximum(total, _EPS), 0.0))


def window_features(
    windows: Array, logmel: LogMel, clip_level: float = 0.999
) -> tuple[Array64, Array]:
    """``([W, len(FEATURE_NAMES)] features, [W, T, n_mels] log-mel)`` of a batch of windows."""
    power = logmel.frames(windows)
    bank = mel_filterbank(logmel.rate, logmel.n_fft, logmel.n_mels, logmel.fmin, logmel.fmax)
    mel_power = power @ bank
    mels = np.log(mel_power + 1e-6).astype(np.float32)
    band_db = _db(mel_power.mean(axis=1))  # [W, n_mels], level of each band over the window
    third = max(1, logmel.n_mels // 3)
    features = np.stack(
        [
            rms_dbfs(windows),
            peak_dbfs(windows),
            clipping_ratio(windows, clip_level),
            spectral_flatness(power),
            spectral_centroid(power, logmel.rate, logmel.n_fft) / 1000.0,
            band_db[:, :third].mean(axis=1),
            band_db[:, -third:].mean(axis=1),
        ],
        axis=1,
    )
    return features, mels
