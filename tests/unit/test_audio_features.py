"""Audio features against signals whose answers are known analytically."""

from __future__ import annotations

import numpy as np
import pytest

from processors.audio_features import (
    FEATURE_NAMES,
    FLOOR_DB,
    LogMel,
    clipping_ratio,
    mel_centres,
    mel_filterbank,
    peak_dbfs,
    rms_dbfs,
    spectral_flatness,
    window_features,
)

RATE = 16000
T = np.arange(15360) / RATE  # one 0.96 s window


def sine(freq: float, amp: float) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * T)).astype(np.float32)


@pytest.mark.parametrize("amp", [1.0, 0.5, 0.1, 0.01])
def test_a_sines_rms_level_is_its_amplitude_minus_3_dB(amp: float) -> None:
    expected = 20 * np.log10(amp) - 10 * np.log10(2)
    assert rms_dbfs(sine(1000, amp)[None])[0] == pytest.approx(expected, abs=0.01)
    assert peak_dbfs(sine(1000, amp)[None])[0] == pytest.approx(20 * np.log10(amp), abs=0.01)


def test_silence_is_at_the_floor_not_minus_infinity() -> None:
    zeros = np.zeros((2, 15360), np.float32)
    assert rms_dbfs(zeros).tolist() == [FLOOR_DB, FLOOR_DB]
    assert peak_dbfs(zeros).tolist() == [FLOOR_DB, FLOOR_DB]
    assert clipping_ratio(zeros).tolist() == [0.0, 0.0]
    features, mels = window_features(zeros, LogMel())
    assert np.isfinite(features).all()
    assert np.isfinite(mels).all()


def test_clipping_ratio_counts_samples_at_full_scale() -> None:
    clipped = np.clip(2.0 * sine(300, 1.0), -1.0, 1.0)
    # |2 sin x| >= 1 for a third of the period: x in [pi/6, 5 pi/6] and its mirror.
    assert clipping_ratio(clipped[None])[0] == pytest.approx(2 / 3, abs=0.01)
    assert clipping_ratio(sine(300, 0.9)[None])[0] == 0.0


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0])
def test_a_sine_peaks_in_the_mel_band_nearest_its_frequency(freq: float) -> None:
    mels = LogMel()(sine(freq, 0.5)[None])
    assert mels.shape == (1, 96, 64)
    band = int(np.argmax(mels[0].mean(axis=0)))
    centres = mel_centres(64, 125.0, 7500.0)
    assert band == int(np.argmin(np.abs(centres - freq)))


def test_the_filterbank_covers_its_range_with_unit_peaks() -> None:
    bank = mel_filterbank(RATE, 512, 64, 125.0, 7500.0)
    assert bank.shape == (257, 64)
    assert bank.max(axis=0).min() > 0.5  # every band has bins near its peak
    assert not bank.flags.writeable


def test_flatness_is_near_zero_for_a_tone_and_about_056_for_white_noise() -> None:
    logmel = LogMel()
    noise = np.random.default_rng(1).normal(0, 0.1, (1, 15360)).astype(np.float32)
    tone = spectral_flatness(logmel.frames(sine(1000, 0.5)[None]))[0]
    white = spectral_flatness(logmel.frames(noise))[0]
    assert tone < 0.01
    # The Hann window correlates neighbouring bins, so a bit below exp(-0.5772) = 0.56.
    assert 0.45 < white < 0.6


def test_window_features_are_named_and_batched() -> None:
    batch = np.stack([sine(1000, 0.5), np.zeros(15360, np.float32)])
    features, mels = window_features(batch, LogMel())
    assert features.shape == (2, len(FEATURE_NAMES))
    row = dict(zip(FEATURE_NAMES, features[0], strict=True))
    assert row["rms_dbfs"] == pytest.approx(-9.03, abs=0.01)
    assert row["centroid_khz"] == pytest.approx(1.0, abs=0.02)
    assert mels.shape == (2, 96, 64)
