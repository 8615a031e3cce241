"""Audio features against signals whose answers are known analytically."""

from __future__ import annotations

import numpy as np
import pytest

from processors.audio.features import (
    FEATURE_NAMES,
    FLOOR_DB,
    FrameCache,
    LogMel,
    clipping_ratio,
    frame_stats,
    mel_centres,
    mel_filterbank,
    peak_dbfs,
    rms_dbfs,
    shared_window_stats,
    spectral_flatness,
    stats_features,
    stats_log_mels,
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


def _stream(seconds: float, seed: int) -> np.ndarray:
    """Noise whose level and tone change, so every frame's statistics differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    signal = rng.normal(0, 0.05, len(t)) * (1 + np.sin(t)) + 0.3 * np.sin(2 * np.pi * 300 * t**2)
    return signal.astype(np.float32)


def test_shared_frames_give_the_same_stats_as_framing_every_window() -> None:
    """Windows of two streams over several calls, two of one stream in one call, a gap."""
    logmel, window, hop = LogMel(), 15360, 7680
    streams = [_stream(6.0, 1), _stream(6.0, 2), _stream(2.0, 3)]
    caches = [FrameCache(), FrameCache(), FrameCache()]
    calls = [
        [(0, 0), (1, 0), (2, 0)],
        [(0, hop), (2, 1000)],  # 1000 is not on stream 2's frame grid: it starts afresh
        [(0, 2 * hop), (0, 3 * hop), (1, hop)],
        [(1, 5 * hop)],  # after a gap in stream 1's windows
    ]
    for call in calls:
        windows = np.stack([streams[s][start : start + window] for s, start in call])
        shared = shared_window_stats(
            [caches[s] for s, _ in call], [start for _, start in call], windows, logmel
        )
        expected = frame_stats(logmel.frames(windows), logmel)
        assert shared.shape == expected.shape == (len(call), 96, logmel.n_mels + 3)
        np.testing.assert_allclose(shared, expected, rtol=1e-12, atol=0)
    # Each stream's cache holds full frames only up to its latest window's last full frame.
    assert caches[0].end(logmel.step) == 3 * hop + 94 * logmel.step
    caches[0].forget_before(4 * hop, logmel.step)
    assert caches[0].start == 4 * hop
    caches[1].forget_before(10 * hop, logmel.step)
    assert len(caches[1].rows) == 0


def test_features_from_shared_stats_match_window_features() -> None:
    logmel = LogMel()
    windows = np.stack([_stream(0.96, 3), sine(1000, 0.5), np.zeros(15360, np.float32)])
    expected, mels = window_features(windows, logmel)
    stats = shared_window_stats([FrameCache() for _ in windows], [0, 0, 0], windows, logmel)
    np.testing.assert_allclose(stats_features(windows, stats, logmel), expected, rtol=1e-12)
    np.testing.assert_array_equal(stats_log_mels(stats, logmel), mels)
