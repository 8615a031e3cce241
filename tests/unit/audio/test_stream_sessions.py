"""Producer sessions and eviction in the audio analyzer: restarts, stale chunks, rebalances."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.silero_vad import CONTEXT
from pipelines.audio.produce import chunked
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer, BatchResult
from processors.audio.codec import AudioChunk
from processors.audio.stream_state import RETIRED_SESSIONS, segment_id

Array = npt.NDArray[np.float32]
CHUNK = 1600
OLD, NEW = 0x1111, 0x2222


class LoudVad:
    """A stand-in VAD: a frame is "speech" when it is loud (the real one is tested apart)."""

    version = "loud/1"

    def predict_batch(self, frames: Array, states: Array) -> tuple[Array, Array]:
        rms = np.sqrt((frames[:, CONTEXT:] ** 2).mean(axis=1))
        return (rms > 0.2).astype(np.float32), states


def analyzer() -> AudioAnalyzer:
    return AudioAnalyzer(Settings().audio, LoudVad())


def noise(seconds: float, level: float = 0.05, seed: int = 1) -> Array:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, level, round(seconds * 16000))).astype(np.float32)


def run(stream: str, samples: Array, session: int, first_seq: int = 0) -> list[AudioChunk]:
    """One producer run: chunks numbered from ``first_seq``, all of ``session``."""
    return [
        AudioChunk(stream, first_seq + i, 16000, 1, "int16", 10**18 + i * 10**8, pcm, session)
        for i, pcm in enumerate(chunked(samples, CHUNK))
    ]


def feed(a: AudioAnalyzer, chunks: list[AudioChunk], now: float = 0.0, per: int = 5) -> BatchResult:
    """Process ``chunks`` in batches of ``per``; one result with everything they gave."""
    total = BatchResult()
    for i in range(0, len(chunks), per):
        r = a.process(chunks[i : i + per], now)
        total.windows += r.windows
        total.findings += r.findings
        total.late_chunks += [(i + k, why) for k, why in r.late_chunks]
        total.duplicates += r.duplicates
        total.late += r.late
        total.gap_chunks += r.gap_chunks
        total.skipped_chunks += r.skipped_chunks
    return total


def tone(seconds: float) -> Array:
    """Loud enough to be "speech" to :class:`LoudVad`, far from clipping."""
    t = np.arange(round(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def windows_of(chunks: int) -> int:
    return (chunks * CHUNK - 15360) // 7680 + 1


def test_a_restarted_producer_gets_every_window_of_its_second_run() -> None:
    a = analyzer()
    first = feed(a, run("mic", noise(3.0), OLD))
    second = feed(a, run("mic", noise(3.0, seed=2), NEW))  # sequence from 0 again
    expected = windows_of(30)
    assert [w.index for w in first.windows] == list(range(expected))
    assert [w.index for w in second.windows] == list(range(expected))
    assert (second.duplicates, second.late, second.gap_chunks) == (0, 0, 0)
    assert [w.event_id for w in second.windows] == [f"mic/{NEW:016x}:{i}" for i in range(expected)]
    assert not {w.event_id for w in first.windows} & {w.event_id for w in second.windows}
    assert all(w.features["gap_chunks_total"] == 0.0 for w in second.windows)
    assert not [f for f in first.findings + second.findings if f.kind == "dead_microphone"]


def test_the_same_session_again_is_a_repeat_and_is_dropped() -> None:
    a = analyzer()
    feed(a, run("mic", noise(3.0), OLD))
    again = feed(a, run("mic", noise(3.0), OLD))
    assert (len(again.windows), again.duplicates) == (0, 30)


def test_envelopes_without_a_session_keep_their_ids() -> None:
    a = analyzer()
    result = feed(a, run("mic", noise(2.0), 0))
    assert [w.event_id for w in result.windows] == [f"mic:{i}" for i in range(windows_of(20))]
    assert segment_id("mic", 0) == "mic"


def test_chunks_of_a_replaced_session_come_late_with_the_reason() -> None:
    a = analyzer()
    old = run("mic", noise(2.0), OLD)
    feed(a, old[:10])
    feed(a, run("mic", noise(2.0), NEW)[:10])
    result = a.process(old[10:12], 0.0)  # the old run's last chunks, delayed
    assert (result.late, len(result.windows)) == (2, 0)
    assert [i for i, _ in result.late_chunks] == [0, 1]
    assert (
        f"chunk 10 of stream mic is from producer session {OLD:016x}, "
        f"which session {NEW:016x} replaced" in result.late_chunks[0][1]
    )
    assert a.streams["mic"].session == NEW
    assert a.streams["mic"].reassembler.late == 0  # never reached the new segment


def test_a_session_change_inside_one_batch_ends_the_old_segment_first() -> None:
    samples_old, samples_new = noise(2.0), noise(2.0, seed=3)
    apart = analyzer()
    expected = feed(apart, run("mic", samples_old, OLD), per=20).windows
    expected += feed(apart, run("mic", samples_new, NEW), per=20).windows
    together = analyzer()
    got = together.process(run("mic", samples_old, OLD) + run("mic", samples_new, NEW), 0.0)
    assert [w.event_id for w in got.windows] == [w.event_id for w in expected]
    for mine, theirs in zip(got.windows, expected, strict=True):
        assert mine.features == theirs.features


def test_an_open_speech_segment_ends_with_its_session_and_nothing_is_stalled() -> None:
    a = analyzer()
    loud = np.concatenate([noise(1.0), tone(1.5)])  # "speech" until the run stops
    first = feed(a, run("mic", loud, OLD), now=100.0)
    assert [f.kind for f in first.findings] == ["speech_started"]
    second = feed(a, run("mic", noise(2.0), NEW), now=105.0)
    ended = [f for f in second.findings if f.kind == "speech_ended"]
    assert [f.event_id for f in ended] == [first.findings[0].event_id]
    assert ended[0].event_id.startswith(f"mic/{OLD:016x}@")
    assert a.check_stalled(105.0 + a.conf.dead_after_s - 0.1) == []


def test_retired_sessions_are_remembered_up_to_a_bound() -> None:
    a = analyzer()
    for session in range(1, RETIRED_SESSIONS + 3):
        feed(a, run("mic", noise(0.2), session))
    state = a.streams["mic"]
    assert state.role(RETIRED_SESSIONS + 2) == "current"
    assert state.role(RETIRED_SESSIONS + 1) == "retired"
    assert state.role(1) == "new"  # long forgotten
    assert len(state.retired) == RETIRED_SESSIONS


def test_the_anomaly_detector_carries_over_to_the_next_segment() -> None:
    a = analyzer()
    feed(a, run("mic", noise(3.0), OLD))
    learned = a.streams["mic"].anomaly.seen
    assert learned > 0
    feed(a, run("mic", noise(1.0), NEW))
    assert a.streams["mic"].anomaly.seen > learned


def test_evicted_streams_are_forgotten_without_an_alert() -> None:
    a = analyzer()
    loud = np.concatenate([noise(1.0), tone(1.5)])
    result = feed(a, run("gone", loud, OLD) + run("kept", noise(2.5), OLD), now=0.0, per=10)
    assert [(f.stream_id, f.kind) for f in result.findings] == [("gone", "speech_started")]
    assert a.evict(["gone", "never-seen"]) == ["gone"]
    assert set(a.streams) == {"kept"}
    later = a.check_stalled(a.conf.dead_after_s + 1.0)
    assert [(f.stream_id, f.kind) for f in later] == [("kept", "dead_microphone")]
    assert a.evict([]) == []


def test_a_stream_back_after_eviction_starts_afresh_without_silence() -> None:
    a = analyzer()
    chunks = run("mic", noise(6.0), OLD)
    feed(a, chunks[:20])
    a.evict(["mic"])
    back = feed(a, chunks[40:])  # chunks 20..39 went to another worker meanwhile
    assert back.gap_chunks == 0
    assert a.streams["mic"].reassembler.first_seq == 40
    assert len(back.windows) == windows_of(20)


def test_restarting_the_stall_clocks_excuses_a_rebalance_pause() -> None:
    a = analyzer()
    feed(a, run("mic", noise(1.0), OLD), now=0.0)
    a.restart_stall_clocks(8.0)  # the worker read nothing from 0 to 8: a rebalance
    assert a.check_stalled(12.0) == []
    assert [f.kind for f in a.check_stalled(18.0)] == ["dead_microphone"]
