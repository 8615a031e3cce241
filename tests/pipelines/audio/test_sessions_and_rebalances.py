"""The audio step across producer restarts and rebalances (real VAD, fake events, no broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson

from pipelines.audio.produce import chunked
from pipelines.audio.step import AnalyzeAudio
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer
from processors.audio.codec import AudioChunk, encode_chunk
from tests.audio_media import padded
from tests.pipelines.audio.test_analyze_audio import TOPIC, vad
from tests.pipelines.fakes import FakeEvent, FakeMessage

WINDOW, HOP, CHUNK = 15360, 7680, 1600


class Assignment:
    """What the build's ``assigned()`` would say; tests move partitions by hand."""

    def __init__(self, *partitions: int) -> None:
        self.held = frozenset(partitions)

    def __call__(self) -> frozenset[int]:
        return self.held


def make_step(home: Path, assigned: Assignment) -> tuple[AnalyzeAudio, RecordingOutputs]:
    settings = Settings(home=home)
    outputs = RecordingOutputs()
    analyzer = AudioAnalyzer(settings.audio, vad())
    return AnalyzeAudio(settings, analyzer, outputs, StepMetrics(), assigned=assigned), outputs


def chunk_events(
    stream: str, samples: np.ndarray, partition: int, session: int, seqs: range | None = None
) -> list[FakeEvent]:
    values = chunked(samples, CHUNK)
    out = []
    for seq in seqs if seqs is not None else range(len(values)):
        capture = 1_700_000_000_000_000_000 + seq * 10**8
        chunk = AudioChunk(stream, seq, 16000, 1, "int16", capture, values[seq], session)
        message = FakeMessage(TOPIC, partition, seq, stream.encode(), encode_chunk(chunk))
        out.append(FakeEvent(message))
    return out


def feed(step: AnalyzeAudio, events: list[FakeEvent], size: int = 10) -> None:
    async def go() -> None:
        for i in range(0, len(events), size):
            await run_batch(step, events[i : i + size])

    asyncio.run(go())


def quiet_for(step: AnalyzeAudio, seconds: float) -> None:
    """Every known stream's last chunk came ``seconds`` earlier than it did."""
    for state in step.analyzer.streams.values():
        state.last_arrival -= seconds


def sent(out: RecordingOutputs, topic: str) -> list[dict[str, object]]:
    return [orjson.loads(s.value) for s in out.on(topic)]


def windows(chunks: int) -> int:
    return (chunks * CHUNK - WINDOW) // HOP + 1


def metric(step: AnalyzeAudio, name: str) -> float:
    value = step.metrics.registry.get_sample_value(name, {"step": "analyze-audio"})
    return value or 0.0


def test_a_file_published_twice_under_one_stream_id_is_predicted_both_times(home: Path) -> None:
    step, out = make_step(home, Assignment(0))
    speech = padded("alsa-front-center.wav")
    feed(step, chunk_events("talk", speech, 0, session=0x1111))
    feed(step, chunk_events("talk", speech, 0, session=0x2222))  # a restarted producer
    count = windows(len(chunked(speech, CHUNK)))
    ids = [p["event_id"] for p in sent(out, "predictions")]
    assert ids == [f"talk/{0x1111:016x}:{i}" for i in range(count)] + [
        f"talk/{0x2222:016x}:{i}" for i in range(count)
    ]
    assert out.on("dead-letters") == []
    assert metric(step, "streamwise_audio_gap_chunks_total") == 0.0
    speech_alerts = [(a["kind"], a["event_id"]) for a in sent(out, "alerts")]
    starts = [e for k, e in speech_alerts if k == "speech_started"]
    assert len(starts) == 2  # the second run's speech is found again, under its own id
    assert len(set(starts)) == 2


def test_a_partition_taken_away_raises_nothing_for_its_streams(home: Path) -> None:
    assigned = Assignment(0, 1)
    step, out = make_step(home, assigned)
    cut = padded("alsa-side-right.wav", after_s=0.0)  # speech still open when it moves away
    hum = padded("synth-tone-1khz.wav")
    events = chunk_events("talk", cut, 1, session=7) + chunk_events("hum", hum, 0, session=8)
    feed(step, events)
    assert [a["kind"] for a in sent(out, "alerts")] == ["speech_started"]
    assert set(step.analyzer.streams) == {"talk", "hum"}

    assigned.held = frozenset({0})  # partition 1 went to another worker
    quiet_for(step, 60.0)
    asyncio.run(step.check_stalled())  # sees the change: forgets talk, excuses the pause
    assert set(step.analyzer.streams) == {"hum"}
    assert step.assignment.partitions == {"hum": 0}
    quiet_for(step, 60.0)
    asyncio.run(step.check_stalled())
    kinds = [(a["entity"], a["kind"]) for a in sent(out, "alerts")]
    assert kinds == [("stream:talk", "speech_started"), ("stream:hum", "dead_microphone")]
    assert metric(step, "streamwise_audio_streams_evicted_total") == 1.0


def test_a_partition_that_comes_back_starts_afresh_without_silence(home: Path) -> None:
    assigned = Assignment(0, 1)
    step, out = make_step(home, assigned)
    noise = padded("alsa-noise.wav", before_s=0.0, after_s=0.0)
    noise = np.tile(noise, 6)[: 60 * CHUNK]
    feed(step, chunk_events("mic", noise, 1, session=5, seqs=range(20)))
    before = len(out.on("predictions"))
    assigned.held = frozenset({0})
    asyncio.run(step.check_stalled())  # the timer sees partition 1 leave
    assigned.held = frozenset({0, 1})  # ... and come back: chunks 20..39 were read elsewhere
    feed(step, chunk_events("mic", noise, 1, session=5, seqs=range(40, 60)))
    back = sent(out, "predictions")[before:]
    assert len(back) == windows(20)
    assert all(p["features"]["gap_chunks_total"] == 0.0 for p in back)  # type: ignore[index]
    assert metric(step, "streamwise_audio_gap_chunks_total") == 0.0
    assert step.analyzer.streams["mic"].reassembler.first_seq == 40
    assert [a["kind"] for a in sent(out, "alerts") if a["kind"] == "dead_microphone"] == []


def test_a_batch_sees_a_move_the_timer_did_not(home: Path) -> None:
    assigned = Assignment(0, 1)
    step, _ = make_step(home, assigned)
    tone = padded("synth-tone-1khz.wav")
    feed(step, chunk_events("a", tone, 0, session=1) + chunk_events("b", tone, 1, session=2))
    assigned.held = frozenset({0})
    feed(step, chunk_events("a", tone, 0, session=1, seqs=range(0, 1)))  # a repeat, still a batch
    assert set(step.analyzer.streams) == {"a"}


def test_records_of_a_partition_no_longer_held_leave_no_state(home: Path) -> None:
    step, out = make_step(home, Assignment(0))
    tone = padded("synth-tone-1khz.wav")
    feed(step, chunk_events("a", tone, 0, session=1))
    feed(step, chunk_events("late", tone, 3, session=2)[:5])  # fetched before a revocation
    assert set(step.analyzer.streams) == {"a"}
    assert step.assignment.partitions == {"a": 0}
    quiet_for(step, 60.0)
    asyncio.run(step.check_stalled())
    assert [a["entity"] for a in sent(out, "alerts") if a["kind"] == "dead_microphone"] == [
        "stream:a"
    ]
