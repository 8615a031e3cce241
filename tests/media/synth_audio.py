"""Synthesized test sounds, written deterministically (the manifest pins their sha256).

Each generator writes a 16-bit 16 kHz mono WAV: ``streamwise assets fetch`` calls it as
``function(path)`` for the ``source = "python"`` entries of ``tests/media/audio.toml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

RATE = 16000
SECONDS = 4.0


def _write(path: Path, samples: npt.NDArray[np.float64]) -> None:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    sf.write(str(path), pcm, RATE, subtype="PCM_16", format="WAV")


def _time() -> npt.NDArray[np.float64]:
    return np.arange(int(RATE * SECONDS)) / RATE


def white_noise(path: Path) -> None:
    """Gaussian white noise at -20 dBFS RMS (seed 5)."""
    _write(path, np.random.default_rng(5).normal(0.0, 0.1, len(_time())))


def pink_noise(path: Path) -> None:
    """1/f noise at about -20 dBFS RMS: white noise shaped in the frequency domain (seed 6)."""
    n = len(_time())
    spectrum = np.fft.rfft(np.random.default_rng(6).normal(size=n))
    freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    pink = np.fft.irfft(spectrum, n)
    _write(path, 0.1 * pink / np.sqrt(np.mean(pink**2)))


def tone_1khz(path: Path) -> None:
    """A 1 kHz sine at half scale (-9.03 dBFS)."""
    _write(path, 0.5 * np.sin(2 * np.pi * 1000.0 * _time()))


def chord(path: Path) -> None:
    """440, 554 and 659 Hz (an A major chord), each at 0.2, switched on and off every second."""
    t = _time()
    gate = (np.floor(t) % 2 == 0).astype(np.float64)
    notes = sum(np.sin(2 * np.pi * f * t) for f in (440.0, 554.37, 659.25))
    _write(path, 0.2 * notes * gate)


def silence(path: Path) -> None:
    """Digital silence."""
    _write(path, np.zeros(len(_time())))


def clipped_tone(path: Path) -> None:
    """A 300 Hz sine driven to twice full scale and clipped."""
    _write(path, 2.0 * np.sin(2 * np.pi * 300.0 * _time()))
