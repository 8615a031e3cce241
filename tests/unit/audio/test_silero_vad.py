"""The real Silero VAD from its pinned wheel: checksum, batching, and real media."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.assets import AssetError
from models.silero_vad import SileroVad, pinned_asset
from pipelines.audio.produce import chunked
from pipelines.audio.settings import AudioSettings
from processors.audio.analyzer import AudioAnalyzer
from processors.audio.codec import AudioChunk
from tests.audio_media import NOT_SPEECH, SPEECH, padded, vad_path


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(vad_path())


def test_the_manifest_pins_the_mit_licensed_wheel_file() -> None:
    asset = pinned_asset()
    assert (asset.package, asset.version, asset.licence) == ("silero-vad", "6.2.3", "MIT")
    assert asset.member == "silero_vad/data/silero_vad.onnx"


def test_a_file_with_another_checksum_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "vad.onnx"
    shutil.copyfile(vad_path(), bad)
    with bad.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(AssetError, match="sha256"):
        SileroVad(bad)
    with pytest.raises(AssetError, match="missing"):
        SileroVad(tmp_path / "absent.onnx")


def test_a_batch_scores_each_stream_as_if_alone(vad: SileroVad) -> None:
    rng = np.random.default_rng(3)
    frames = rng.normal(0, 0.1, (5, 576)).astype(np.float32)
    states = rng.normal(0, 0.1, (5, 2, 128)).astype(np.float32)
    probs, new_states = vad.predict_batch(frames, states)
    assert probs.shape == (5,)
    assert new_states.shape == (5, 2, 128)
    for i in range(5):
        p, s = vad.predict_batch(frames[i : i + 1], states[i : i + 1])
        assert p[0] == pytest.approx(probs[i], abs=1e-5)
        np.testing.assert_allclose(s[0], new_states[i], atol=1e-5)
    again, _ = vad.predict_batch(frames, states)
    np.testing.assert_array_equal(again, probs)  # deterministic


def analyse(
    vad: SileroVad, samples: np.ndarray, batched: bool = True
) -> list[tuple[str, float, float]]:
    """Findings ``(kind, start s, end s)`` of one stream fed in 100 ms chunks, 5 per batch."""
    conf = AudioSettings(vad_batched=batched)
    analyzer = AudioAnalyzer(conf, vad)
    chunks = [
        AudioChunk("s", i, 16000, 1, "int16", i * 100_000_000, pcm)
        for i, pcm in enumerate(chunked(samples, 1600))
    ]
    found = []
    for i in range(0, len(chunks), 5):
        for f in analyzer.process(chunks[i : i + 5], now=0.0).findings:
            start = float(f.event_id.split("@")[1]) / 16000
            found.append((f.kind, start, f.event_time.timestamp()))
    return found


@pytest.mark.parametrize("name", SPEECH)
def test_real_speech_makes_one_segment_or_more_inside_the_spoken_part(
    vad: SileroVad, name: str
) -> None:
    samples = padded(name, before_s=1.0, after_s=1.0)
    spoken_end = len(samples) / 16000 - 1.0
    speech = [f for f in analyse(vad, samples) if f[0].startswith("speech")]
    kinds = [k for k, _, _ in speech]
    assert kinds
    assert kinds == ["speech_started", "speech_ended"] * (len(kinds) // 2)
    starts = [s for k, s, _ in speech if k == "speech_started"]
    ends = [t for k, _, t in speech if k == "speech_ended"]  # event time = where it ended
    assert 1.0 <= starts[0] < 1.4  # the recording starts talking within 0.4 s
    assert spoken_end - 0.4 < ends[-1] <= spoken_end + 0.35  # ends with the words (+ hangover)
    assert all(e - s >= 0.25 for s, e in zip(starts, ends, strict=True))


@pytest.mark.parametrize("name", NOT_SPEECH)
def test_noise_tones_and_silence_make_no_speech_segment(vad: SileroVad, name: str) -> None:
    found = analyse(vad, padded(name))
    assert [f for f in found if f[0].startswith("speech")] == []


def test_unbatched_vad_gives_the_same_segments(vad: SileroVad) -> None:
    samples = padded(SPEECH[2])
    assert analyse(vad, samples, batched=False) == analyse(vad, samples, batched=True)
