"""Streams that move to another worker go on there from their checkpoint (real VAD, fake
events, recorded outputs, a state topic read back from those outputs; no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipelines.audio.produce import chunked
from pipelines.audio.step import AnalyzeAudio
from pipelines.runtime.checkpoints import Checkpoints, Stored, state_topic
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer
from tests.audio_media import padded
from tests.pipelines.audio.test_analyze_audio import vad
from tests.pipelines.audio.test_sessions_and_rebalances import (
    CHUNK,
    Assignment,
    chunk_events,
    feed,
    metric,
    quiet_for,
    sent,
)

SESSION = 0xC0FFEE


class Clock:
    """Each batch is one second later: with ``every_s`` 5, a stream is checkpointed every
    fifth batch, so a restored stream is behind what was analysed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class RecordedCheckpoints(Checkpoints):
    """Checkpoints whose state topic is what some steps' outputs recorded."""

    def __init__(self, settings: Settings, *written: RecordingOutputs) -> None:
        super().__init__(settings, state_topic(settings, "audio"), 5.0, Clock())
        self.written_to = written
        self.reads: list[list[int]] = []
        self.age_s = 0.0  # how long ago the recorded checkpoints were written

    async def stored(self, partitions: Iterable[int]) -> dict[str, Stored]:
        wanted = sorted(partitions)
        self.reads.append(wanted)
        newest: dict[str, Stored] = {}
        for outputs in self.written_to:
            for record in outputs.on(self.topic):
                if record.partition in wanted and record.key is not None:
                    assert record.partition is not None
                    written = time.time() - self.age_s
                    newest[record.key.decode()] = Stored(record.value, record.partition, written)
        return newest


def make_step(
    home: Path, assigned: Assignment, *state_from: RecordingOutputs
) -> tuple[AnalyzeAudio, RecordingOutputs]:
    settings = Settings(home=home)
    outputs = RecordingOutputs()
    checkpoints = RecordedCheckpoints(settings, outputs, *state_from)
    analyzer = AudioAnalyzer(settings.audio, vad())
    step = AnalyzeAudio(settings, analyzer, outputs, StepMetrics(), None, assigned, checkpoints)
    return step, outputs


def talking(repeats: int) -> np.ndarray:
    """Real speech, over and over, with noise between (never silent for long)."""
    rng = np.random.default_rng(3)
    speech = padded("alsa-front-center.wav", 0.0, 0.0)
    gap = (rng.normal(0, 0.01, 16000)).astype(np.float32)
    return np.concatenate([np.concatenate([gap, speech, gap]) for _ in range(repeats)])


def test_a_moved_stream_goes_on_at_the_next_worker_from_its_checkpoint(home: Path) -> None:
    samples = talking(6)
    count = len(chunked(samples, CHUNK))
    cut = count // 2
    events = chunk_events("talk", samples, 1, SESSION)
    hum = chunk_events("hum", padded("alsa-noise.wav", 0.0, 0.0), 0, SESSION)
    held_a = Assignment(0, 1)
    a, out_a = make_step(home, held_a)
    feed(a, events[:cut] + hum[:10], size=7)
    checkpoints = out_a.on(state_topic(a.settings, "audio"))
    assert {c.key for c in checkpoints} == {b"talk", b"hum"}
    assert {(c.key, c.partition) for c in checkpoints} == {(b"talk", 1), (b"hum", 0)}
    sources = [s for s, r in zip(out_a.sources, out_a.sent, strict=True) if r in checkpoints]
    assert [s.message.key for s in sources] == [c.key for c in checkpoints]  # its own events

    # partition 1 goes to a second worker, which reads on from the committed offset
    held_a.held = frozenset({0})
    asyncio.run(a.check_stalled())
    assert set(a.analyzer.streams) == {"hum"}
    b, out_b = make_step(home, Assignment(1), out_a)
    feed(b, events[cut:], size=7)
    assert isinstance(b.checkpoints, RecordedCheckpoints)
    assert b.checkpoints.reads == [[1]]  # its first look: every partition it holds
    assert metric(b, "streamwise_audio_streams_restored_total") == 1.0
    assert metric(b, "streamwise_audio_skipped_chunks_total") > 0  # it was behind: a hole

    before = [p for p in sent(out_a, "predictions") if p["entity"] == "stream:talk"]
    after = sent(out_b, "predictions")
    examples = [p["features"]["anomaly_examples"] for p in after]  # type: ignore[index]
    last_before = before[-1]["features"]["anomaly_examples"]  # type: ignore[index]
    assert 0 < examples[0] <= last_before  # the learner goes on: behind by the checkpoint lag
    assert examples == [examples[0] + i for i in range(len(examples))]
    ids = [p["event_id"] for p in before + after]
    assert len(set(ids)) == len(ids)  # no window number used twice
    assert all(p["features"]["gap_chunks_total"] == 0.0 for p in after)  # type: ignore[index]

    # Speech alerts are right across the move: every segment that started ended once, and
    # nothing else (no dead microphone, no level) was raised for the moved stream.
    alerts = [(x["kind"], x["event_id"]) for x in sent(out_a, "alerts") + sent(out_b, "alerts")]
    talk = [(k, e) for k, e in alerts if str(e).startswith("talk/")]
    assert {k for k, _ in talk} == {"speech_started", "speech_ended"}
    started = [str(e) for k, e in talk if k == "speech_started"]
    ended = [str(e) for k, e in talk if k == "speech_ended"]
    assert sorted(started) == sorted(ended)
    assert len(set(started)) == len(started)
    assert len(started) >= 5  # one per utterance (the hole may hide one)
    assert any(str(x["event_id"]).startswith("talk/") for x in sent(out_b, "alerts"))

    quiet_for(b, 60.0)  # the stream stops at the second worker: one dead microphone there
    asyncio.run(b.check_stalled())
    dead = [x for x in sent(out_b, "alerts") if x["kind"] == "dead_microphone"]
    assert [x["entity"] for x in dead] == ["stream:talk"]


def test_a_worker_without_checkpoints_for_its_partitions_starts_them_afresh(home: Path) -> None:
    b, out_b = make_step(home, Assignment(0))
    feed(b, chunk_events("hum", padded("alsa-noise.wav", 0.0, 0.0), 0, SESSION), size=5)
    first = sent(out_b, "predictions")[0]
    assert first["features"]["anomaly_examples"] == 0.0  # type: ignore[index]
    assert metric(b, "streamwise_audio_streams_restored_total") == 0.0


def test_a_stream_checkpointed_long_ago_comes_back_stalled_and_an_expired_one_not_at_all(
    home: Path,
) -> None:
    """A stream that ended before its partition moved raised its dead microphone where it
    was; the next worker restores it as stalled (no second alert), and a checkpoint older
    than the input's retention (its chunks are gone) is not restored."""
    a, out_a = make_step(home, Assignment(0))
    feed(a, chunk_events("old", padded("alsa-noise.wav", 0.0, 0.0), 0, SESSION)[:10], size=5)
    assert {c.key for c in out_a.on(state_topic(a.settings, "audio"))} == {b"old"}

    b, out_b = make_step(home, Assignment(0), out_a)
    assert isinstance(b.checkpoints, RecordedCheckpoints)
    b.checkpoints.age_s = 2 * b.settings.audio.dead_after_s
    asyncio.run(b.check_stalled())
    assert set(b.analyzer.streams) == {"old"}
    quiet_for(b, 60.0)
    asyncio.run(b.check_stalled())
    assert [x["kind"] for x in sent(out_b, "alerts")] == []

    c, _ = make_step(home, Assignment(0), out_a)
    assert isinstance(c.checkpoints, RecordedCheckpoints)
    c.checkpoints.age_s = c.settings.topics.retention_hours * 3600.0 + 1.0
    asyncio.run(c.check_stalled())
    assert c.analyzer.streams == {}
    assert metric(c, "streamwise_audio_streams_restored_total") == 0.0
