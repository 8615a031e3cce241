"""Reading, resampling and chunking audio files for publication."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf

from pipelines.audio.produce import AudioStream, _schedule, chunked, load_audio, resample
from processors.audio.features import rms_dbfs


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def dominant_hz(samples: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_a_tones_pitch_and_level(rate: int) -> None:
    out = resample(tone(1000.0, rate), rate)
    assert len(out) == pytest.approx(16000, abs=1)
    middle = out[1000:-1000]
    assert dominant_hz(middle) == pytest.approx(1000.0, abs=2.0)
    assert rms_dbfs(middle[None])[0] == pytest.approx(-9.03, abs=0.1)


def test_content_above_the_new_nyquist_is_filtered_not_aliased() -> None:
    # 10 kHz at 48 kHz: dropping two samples in three would fold it to 6 kHz at full level.
    out = resample(tone(10_000.0, 48000), 48000)
    assert rms_dbfs(out[1000:-1000][None])[0] < -60.0


def test_files_of_any_format_become_16_khz_mono(tmp_path: Path) -> None:
    stereo = np.stack([tone(440.0, 44100), tone(440.0, 44100)], axis=1)
    for name, fmt in [("a.wav", "WAV"), ("a.flac", "FLAC"), ("a.ogg", "OGG")]:
        sf.write(str(tmp_path / name), stereo, 44100, format=fmt)
        samples = load_audio(tmp_path / name)
        assert samples.dtype == np.float32
        assert len(samples) == pytest.approx(16000, abs=2)
        assert dominant_hz(samples[1000:-1000]) == pytest.approx(440.0, abs=2.0)


def test_chunks_are_int16_of_equal_length_the_last_padded() -> None:
    chunks = chunked(np.full(2500, 0.5, np.float32), 1000)
    assert [len(c) for c in chunks] == [2000, 2000, 2000]
    last = np.frombuffer(chunks[-1], "<i2")
    assert last[:500].tolist() == [16384] * 500
    assert not last[500:].any()
    assert np.frombuffer(chunked(np.array([1.0, -1.0], np.float32), 2)[0], "<i2").tolist() == [
        32767,
        -32768,
    ]


def test_streams_are_interleaved_chunk_by_chunk() -> None:
    a, b = AudioStream("a", [b"a0", b"a1", b"a2"]), AudioStream("b", [b"b0"])
    order = [(seq, s.stream_id, pcm) for seq, s, pcm in _schedule([a, b], loop=False, limit=None)]
    assert order == [(0, "a", b"a0"), (0, "b", b"b0"), (1, "a", b"a1"), (2, "a", b"a2")]
    looped = [(seq, s.stream_id) for seq, s, _ in _schedule([a, b], loop=True, limit=2)]
    assert looped == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


class RecordingProducer:
    """kafka-python's producer, as far as ``publish_audio`` uses it, recording the sends."""

    sent: ClassVar[list[tuple[str, bytes, bytes]]] = []

    def __init__(self, **_: object) -> None:
        pass

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_every_run_has_its_own_session_and_counts_from_zero(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    import kafka

    from pipelines.audio.produce import publish_audio
    from pipelines.settings import Settings
    from processors.audio.codec import AudioChunk, decode_chunk

    monkeypatch.setattr(kafka, "KafkaProducer", RecordingProducer)
    RecordingProducer.sent = []
    settings = Settings(home=home)
    stream = AudioStream("mic", chunked(np.zeros(4800, np.float32), 1600))
    reports = [publish_audio(settings, [stream], realtime=False) for _ in range(2)]
    chunks = [decode_chunk(value) for _, _, value in RecordingProducer.sent]
    assert all(isinstance(c, AudioChunk) for c in chunks)
    runs = [(c.session, c.seq) for c in chunks if isinstance(c, AudioChunk)]
    first, second = reports[0].session, reports[1].session
    assert first != second
    assert all(0 < s < 2**63 for s in (first, second))
    assert runs == [(first, 0), (first, 1), (first, 2), (second, 0), (second, 1), (second, 2)]
    publish_audio(settings, [stream], realtime=False, session=0)  # as a 1.0 producer would
    assert all(value[7] == 0 for _, _, value in RecordingProducer.sent[6:])
