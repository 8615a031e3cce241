"""The audio step with the real VAD, fake events and recorded outputs (no broker)."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

import numpy as np
import orjson

from models.silero_vad import SileroVad
from pipelines.audio.produce import chunked
from pipelines.audio.step import AnalyzeAudio
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer
from processors.audio.codec import AudioChunk, encode_chunk
from processors.audio.features import FEATURE_NAMES, LogMel, window_features
from processors.common.schemas import decode_dead_letter
from tests.audio_media import padded, vad_path
from tests.pipelines.fakes import FakeEvent, FakeMessage

TOPIC = "audio-chunks"


@cache
def vad() -> SileroVad:
    return SileroVad(vad_path())


def make_step(home: Path, **policies: str) -> tuple[AnalyzeAudio, RecordingOutputs]:
    settings = Settings(home=home, policies=policies)  # type: ignore[arg-type]
    outputs = RecordingOutputs()
    analyzer = AudioAnalyzer(settings.audio, vad())
    return AnalyzeAudio(settings, analyzer, outputs, StepMetrics()), outputs


def chunk_values(stream: str, samples: np.ndarray) -> list[bytes]:
    return [
        encode_chunk(
            AudioChunk(stream, i, 16000, 1, "int16", 1_700_000_000_000_000_000 + i * 10**8, pcm)
        )
        for i, pcm in enumerate(chunked(samples, 1600))
    ]


def interleave(streams: dict[str, list[bytes]]) -> list[FakeEvent]:
    out: list[FakeEvent] = []
    longest = max(len(v) for v in streams.values())
    for i in range(longest):
        for sid, values in streams.items():
            if i < len(values):
                out.append(FakeEvent(FakeMessage(TOPIC, 0, len(out), sid.encode(), values[i])))
    return out


def run_batches(step: AnalyzeAudio, events: list[FakeEvent], size: int = 10) -> None:
    async def go() -> None:
        for i in range(0, len(events), size):
            await run_batch(step, events[i : i + size])

    asyncio.run(go())


def test_each_stream_gets_every_window_and_only_speech_makes_speech_alerts(home: Path) -> None:
    step, out = make_step(home)
    speech = padded("alsa-front-center.wav")
    tone = padded("synth-tone-1khz.wav")
    run_batches(
        step, interleave({"talk": chunk_values("talk", speech), "beep": chunk_values("beep", tone)})
    )
    preds = [orjson.loads(s.value) for s in out.on("predictions")]
    for sid, samples in [("talk", speech), ("beep", tone)]:
        padded_len = -(-len(samples) // 1600) * 1600
        expected = (padded_len - 15360) // 7680 + 1
        mine = [p for p in preds if p["entity"] == f"stream:{sid}"]
        assert [p["event_id"] for p in mine] == [f"{sid}:{i}" for i in range(expected)]
        assert all(
            s.key == sid.encode()
            for s in out.on("predictions")
            if orjson.loads(s.value)["entity"] == f"stream:{sid}"
        )
    talk = [p for p in preds if p["entity"] == "stream:talk"]
    assert max(p["features"]["speech_probability"] for p in talk) > 0.9
    assert {"rms_dbfs", "spectral_flatness", "anomaly_ready"} <= set(talk[0]["features"])
    assert talk[0]["model_versions"]["vad"] == "silero-vad/6.2.3"
    alerts = [orjson.loads(s.value) for s in out.on("alerts")]
    speech_alerts = [(a["entity"], a["kind"]) for a in alerts if a["kind"].startswith("speech")]
    assert speech_alerts == [("stream:talk", "speech_started"), ("stream:talk", "speech_ended")]
    assert alerts[0]["event_id"] == alerts[1]["event_id"]  # one segment, started and ended
    assert any("lasted" in r for r in alerts[1]["reasons"])


def test_bad_chunks_go_to_dead_letters_and_good_ones_still_flow(home: Path) -> None:
    step, out = make_step(home)
    good = chunk_values("m", padded("synth-white-noise.wav"))
    wrong_rate = encode_chunk(AudioChunk("m", 1, 44100, 1, "int16", 0, b"\0\0" * 100))
    too_long = encode_chunk(AudioChunk("m", 1, 16000, 1, "int16", 0, b"\0\0" * 16001))
    bad: list[tuple[bytes, bytes | None]] = [
        (b"m", wrong_rate),
        (b"m", too_long),
        (b"m", good[1][:-2]),  # PCM shorter than the header says
        (b"other", good[1]),  # keyed by another stream
        (b"m", b"RIFF....WAVEfmt " + b"\0" * 40),  # a WAV file is not a chunk
        (b"m", None),
        (b"m", b"SWAC" + b"\0" * 70_000),
    ]
    events = [FakeEvent(FakeMessage(TOPIC, 0, i, k, v)) for i, (k, v) in enumerate(bad)]
    events += [FakeEvent(FakeMessage(TOPIC, 0, 100 + i, b"m", v)) for i, v in enumerate(good)]
    run_batches(step, events, size=50)
    letters = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    reasons = [getattr(d, "reason", None) for d in letters]
    assert reasons == [
        "wrong_sample_rate",
        "wrong_length",
        "wrong_length",
        "key_mismatch",
        "not_audio_chunk",
        "empty",
        "oversized",
    ]
    assert [getattr(d, "value", None) for d in letters] == [v for _, v in bad]
    assert all(getattr(d, "step", None) == "analyze-audio" for d in letters)
    assert len(out.on("predictions")) > 5


def test_duplicates_and_a_gap_do_not_shift_the_windows(home: Path) -> None:
    step, out = make_step(home)
    values = chunk_values("g", padded("synth-white-noise.wav"))
    order = list(range(len(values)))
    order.insert(5, 4)  # a duplicate
    order[10], order[11] = order[11], order[10]  # a swap
    del order[20]  # chunk 19 lost: 8 chunks later it is filled with silence
    events = [FakeEvent(FakeMessage(TOPIC, 0, i, b"g", values[s])) for i, s in enumerate(order)]
    run_batches(step, events)
    preds = [orjson.loads(s.value) for s in out.on("predictions")]
    expected = (len(values) * 1600 - 15360) // 7680 + 1
    assert [p["event_id"] for p in preds] == [f"g:{i}" for i in range(expected)]
    assert preds[-1]["features"]["gap_chunks_total"] == 1.0
    assert step.analyzer.streams["g"].reassembler.duplicates == 1
    metrics = step.metrics.render().decode()
    assert 'streamwise_audio_gap_chunks_total{step="analyze-audio"} 1.0' in metrics
    assert 'streamwise_events_total{outcome="duplicate",step="analyze-audio"} 1.0' in metrics


def late_chunk_events() -> tuple[list[FakeEvent], bytes]:
    """Chunks 4..9 of a stream, then chunk 2: before the stream's first, so late."""
    values = chunk_values("s", np.zeros(16000, np.float32))
    order = [4, 5, 6, 7, 8, 9, 2]
    return [
        FakeEvent(FakeMessage(TOPIC, 0, i, b"s", values[s])) for i, s in enumerate(order)
    ], values[2]


def test_a_late_chunk_goes_to_the_on_late_policy_as_a_dead_letter(home: Path) -> None:
    step, out = make_step(home)
    events, late = late_chunk_events()
    run_batches(step, events, size=4)
    (letter,) = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    assert (getattr(letter, "reason", None), getattr(letter, "step", None)) == (
        "late",
        "analyze-audio",
    )
    assert getattr(letter, "value", None) == late
    assert "chunk 2 of stream s precedes its first chunk 4" in getattr(letter, "detail", "")
    metrics = step.metrics.registry
    assert (
        metrics.get_sample_value(
            "streamwise_events_total", {"step": "analyze-audio", "outcome": "late"}
        )
        == 1.0
    )


def test_a_late_chunk_under_on_late_drop_is_counted_not_sent(home: Path) -> None:
    step, out = make_step(home, on_late="drop")
    events, _ = late_chunk_events()
    run_batches(step, events, size=4)
    assert out.on("dead-letters") == []
    dropped = {"step": "analyze-audio", "reason": "late"}
    assert step.metrics.registry.get_sample_value("streamwise_dropped_total", dropped) == 1.0


def test_a_stream_that_stops_sending_ends_its_speech_and_is_reported(home: Path) -> None:
    step, out = make_step(home)
    speech = padded("alsa-side-right.wav", after_s=0.0)  # stops mid-word: segment still open
    run_batches(step, interleave({"cut": chunk_values("cut", speech)}))
    assert [orjson.loads(s.value)["kind"] for s in out.on("alerts")] == ["speech_started"]
    asyncio.run(step.check_stalled())
    assert len(out.on("alerts")) == 1  # not yet: chunks arrived just now
    step.analyzer.streams["cut"].last_arrival -= 60.0
    asyncio.run(step.check_stalled())
    asyncio.run(step.check_stalled())  # reported once
    kinds = [orjson.loads(s.value)["kind"] for s in out.on("alerts")]
    assert kinds == ["speech_started", "speech_ended", "dead_microphone"]
    dead = orjson.loads(out.on("alerts")[-1].value)
    assert dead["reasons"][0].startswith("no chunks for 60")


def test_a_failing_analysis_dead_letters_the_batch_instead_of_crashing(home: Path) -> None:
    step, out = make_step(home)

    def explode(*_: object) -> None:
        raise RuntimeError("VAD session lost")

    step.analyzer.process = explode  # type: ignore[method-assign]
    values = chunk_values("x", np.zeros(3200, np.float32))
    run_batches(step, [FakeEvent(FakeMessage(TOPIC, 0, i, b"x", v)) for i, v in enumerate(values)])
    letters = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    assert [getattr(d, "reason", None) for d in letters] == ["processing_error"] * 2
    assert "VAD session lost" in getattr(letters[0], "detail", "")


def test_shared_frames_leave_every_windows_features_as_computed_alone() -> None:
    """Windows reuse their stream's STFT frames across batches; the features must not notice."""
    conf = Settings().audio
    window, hop = round(conf.window_s * 16000), round(conf.hop_s * 16000)
    rng = np.random.default_rng(5)
    t = np.arange(5 * 16000) / 16000
    streams = {
        "tone": (0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / 10))).astype(np.float32),
        "noise": (rng.normal(0, 0.05, len(t)) * (1 + np.sin(3 * t))).astype(np.float32),
    }
    pcm = {sid: chunked((x * 32767).astype(np.int16), 1600) for sid, x in streams.items()}
    for per_batch in (1, 3, 7):  # 0.1 s to 0.7 s per stream per batch: 0 to 2 windows each
        analyzer = AudioAnalyzer(conf, vad())
        got = []
        for k in range(0, len(pcm["tone"]), per_batch):
            chunks = [
                AudioChunk(sid, i, 16000, 1, "int16", 0, pcm[sid][i])
                for i in range(k, min(k + per_batch, len(pcm["tone"])))
                for sid in pcm
            ]
            got += analyzer.process(chunks, 0.0).windows
        assert len(got) == 2 * ((len(t) - window) // hop + 1)
        for result in got:
            samples = (
                np.concatenate([np.frombuffer(c, np.int16) for c in pcm[result.stream_id]]).astype(
                    np.float32
                )
                / 32768
            )
            start = result.index * hop
            alone, _ = window_features(samples[start : start + window][None], LogMel())
            computed = [result.features[name] for name in FEATURE_NAMES]
            np.testing.assert_allclose(computed, alone[0], rtol=0, atol=1e-6)
