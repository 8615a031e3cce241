"""The audio pipeline's model and test media, fetched once per session (sha256-checked)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.assets import fetch_all

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / ".streamwise" / "assets"
SPEECH = ("alsa-front-center.wav", "alsa-side-right.wav", "alsa-rear-left.wav")
NOT_SPEECH = (
    "alsa-noise.wav",
    "synth-white-noise.wav",
    "synth-pink-noise.wav",
    "synth-tone-1khz.wav",
    "synth-chord.wav",
    "synth-silence.wav",
)


@cache
def assets() -> Path:
    """The asset folder, with the audio manifests' files present (what `make assets` does)."""
    fetch_all(ROOT / "models" / "audio.toml", ASSETS)
    fetch_all(ROOT / "tests" / "media" / "audio.toml", ASSETS)
    return ASSETS


def vad_path() -> Path:
    return assets() / "silero_vad.onnx"


def padded(name: str, before_s: float = 1.0, after_s: float = 1.0) -> npt.NDArray[np.float32]:
    """A medium at 16 kHz with silence around it, so segments start and end inside."""
    from pipelines.audio.produce import load_audio

    samples = load_audio(assets() / name)
    before = np.zeros(round(16000 * before_s), np.float32)
    after = np.zeros(round(16000 * after_s), np.float32)
    return np.concatenate([before, samples, after])
