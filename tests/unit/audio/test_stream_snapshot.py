"""One stream's checkpoint: a data-only round trip, refusals, and resuming past the chunks
another run analysed after the checkpoint was taken."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipelines.audio.settings import AudioSettings
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer
from processors.audio.snapshot import decode_stream, encode_stream, stream_data
from processors.common.state_codec import StateCodecError, pack
from tests.unit.audio.test_stream_sessions import CHUNK, LoudVad, feed, noise, run, tone

SESSION = 0x5EED


def conf(**changes: object) -> AudioSettings:
    """The default settings, with an anomaly detector ready after 10 windows."""
    return Settings().audio.model_copy(update={"anomaly_window": 5, **changes})


def analyzer(**changes: object) -> AudioAnalyzer:
    return AudioAnalyzer(conf(**changes), LoudVad())


def moved(a: AudioAnalyzer, **changes: object) -> AudioAnalyzer:
    """A fresh analyzer holding ``a``'s streams, restored from their checkpoints."""
    b = analyzer(**changes)
    b.restore(a.snapshot(list(a.streams)), 0.0)
    return b


def same(x: object, y: object) -> bool:
    """Nested state data equal, arrays compared bit for bit."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y, strict=True))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))
    return x == y


def test_the_checkpoint_holds_the_whole_stream_and_reads_back_equal() -> None:
    a = analyzer(reorder_chunks=4)
    chunks = run("mic", np.concatenate([noise(3.0), tone(1.0)]), SESSION)
    feed(a, chunks[:35])
    feed(a, chunks[36:38])  # chunk 35 missing: 36 and 37 wait in the reorder buffer
    state = a.streams["mic"]
    assert sorted(state.reassembler.pending) == [36, 37]
    assert state.speech.open
    assert state.anomaly.seen > 0
    assert len(state.probs) > 0
    back = decode_stream(encode_stream(state), a.conf, now=42.0)
    assert same(stream_data(back), stream_data(state))
    assert (back.last_arrival, back.stalled, back.resumed) == (42.0, False, True)


def test_samples_not_from_16_bit_pcm_are_kept_exactly() -> None:
    a = analyzer()
    a.process(run("mic", noise(0.5), SESSION), 0.0)
    state = a.streams["mic"]
    state.buffer.append(np.array([0.1, -0.3], np.float32))  # float samples, not x / 32768
    back = decode_stream(encode_stream(state), a.conf, now=0.0)
    assert same(back.buffer.state(), state.buffer.state())


@pytest.mark.parametrize(
    "change", [{"window_s": 1.92}, {"hop_s": 0.24}, {"anomaly_window": 6}], ids=str
)
def test_a_checkpoint_of_another_layout_is_refused_and_the_stream_starts_afresh(
    change: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    a = analyzer()
    feed(a, run("mic", noise(2.0), SESSION))
    with pytest.raises(StateCodecError, match="layout"):
        decode_stream(encode_stream(a.streams["mic"]), conf(**change), now=0.0)
    b = analyzer(**change)
    with caplog.at_level(logging.WARNING):
        assert b.restore(a.snapshot(["mic"]), 0.0) == []
    assert "stream mic starts afresh" in caplog.text
    assert b.streams == {}


def test_damaged_or_foreign_checkpoints_are_skipped() -> None:
    a = analyzer()
    feed(a, run("mic", noise(2.0), SESSION) + run("hum", noise(2.0, seed=4), SESSION), per=10)
    states = a.snapshot(["mic", "hum", "never-seen"])
    assert set(states) == {"mic", "hum"}
    states["mic"] = states["mic"][:-3]  # damaged
    states["other"] = states["hum"]  # another stream's state under this key
    states["junk"] = pack("audio-stream", 1, {"layout": "nonsense"})
    b = analyzer()
    assert b.restore(states, 0.0) == ["hum"]
    assert set(b.streams) == {"hum"}


def test_a_replay_of_what_the_checkpoint_covered_is_a_repeat_then_it_goes_on() -> None:
    chunks = run("mic", noise(6.0), SESSION)
    a = analyzer()
    feed(a, chunks[:30])
    b = moved(a)
    replay = feed(b, chunks[20:30])  # at-least-once: read again after the restore
    assert (replay.duplicates, len(replay.windows)) == (10, 0)
    assert b.streams["mic"].resumed  # still waiting for its first new chunk
    on = feed(b, chunks[30:])
    straight = feed(a, chunks[30:])
    assert [w.event_id for w in on.windows] == [w.event_id for w in straight.windows]
    assert [w.anomaly_score for w in on.windows] == [w.anomaly_score for w in straight.windows]
    assert on.skipped_chunks == 0
    assert not b.streams["mic"].resumed


def test_a_restored_stream_re_anchors_past_the_chunks_it_missed() -> None:
    chunks = run("mic", noise(12.0), SESSION)
    crashed = analyzer()
    before = feed(crashed, chunks[:33])  # chunk 33 on is after the checkpoint ...
    b = moved(crashed)
    lost = feed(crashed, chunks[33:61])  # ... analysed and committed by the crashed worker
    on = feed(b, chunks[61:])  # the new worker reads on from the committed offset
    assert on.skipped_chunks == 28
    assert (on.gap_chunks, on.late, on.duplicates) == (0, 0, 0)
    state = b.streams["mic"]
    assert state.buffer.total == len(chunks) * CHUNK  # the clock counted the missed chunks
    # window numbers go on past every one used before the crash: no id twice
    used = {w.event_id for w in before.windows + lost.windows}
    new = [w.event_id for w in on.windows]
    assert new
    assert not used & set(new)
    assert len(set(new)) == len(new)
    # the first window starts at the hole (numbered start // hop), nothing from before it
    first = on.windows[0].index
    assert [w.index for w in on.windows] == list(range(first, first + len(on.windows)))
    assert first == 61 * CHUNK // 7680
    # no silence was made up for the hole: no dead microphone, gap count unchanged
    assert [f.kind for f in on.findings] == []
    assert all(w.features["gap_chunks_total"] == 0.0 for w in on.windows)
    # the detector carried over: its examples go on from the checkpoint's
    examples = [w.features["anomaly_examples"] for w in on.windows]
    assert examples[0] == float(len(before.windows))
    assert examples == [examples[0] + i for i in range(len(examples))]
    # times stay true across the hole (from the chunks' capture times)
    assert on.windows[0].event_time > lost.windows[-1].event_time


def test_buffered_chunks_from_before_the_hole_are_dropped_later_ones_kept() -> None:
    chunks = run("mic", noise(8.0), SESSION)
    a = analyzer(reorder_chunks=8)
    feed(a, chunks[:20])
    feed(a, [chunks[22], chunks[23], chunks[40]])  # early arrivals waiting for 20 and 21
    b = moved(a)
    result = b.process([chunks[30]], 0.0)
    r = b.streams["mic"].reassembler
    assert result.skipped_chunks == 10
    assert (r.next_seq, sorted(r.pending)) == (31, [40])
    assert sorted(b.streams["mic"].captures) == [40]


def test_an_open_speech_segment_goes_on_across_the_hole_and_ends_once() -> None:
    loud = np.concatenate([noise(1.0), tone(4.0), noise(2.0)])
    chunks = run("mic", loud, SESSION)
    a = analyzer()
    started = feed(a, chunks[:16])  # speech from 1 s, still open at the checkpoint
    assert [f.kind for f in started.findings] == ["speech_started"]
    b = moved(a)
    rest = feed(b, chunks[30:])  # 14 chunks of speech missed; then more speech, then quiet
    kinds = [(f.kind, f.event_id) for f in rest.findings]
    assert kinds == [("speech_ended", started.findings[0].event_id)]


def test_a_speech_candidate_is_not_opened_across_the_hole() -> None:
    chunks = run("mic", np.concatenate([noise(1.0), tone(0.2), noise(3.0)]), SESSION)
    a = analyzer()
    feed(a, chunks[:11])  # 0.1 s of "speech": a candidate, shorter than speech_min_s
    assert a.streams["mic"].speech.start is not None
    b = moved(a)
    rest = feed(b, chunks[20:])
    assert rest.findings == []
    assert b.streams["mic"].speech.start is None


def test_silence_counts_afresh_after_the_hole() -> None:
    quiet = np.zeros(16000 * 25, np.float32)
    chunks = run("mic", quiet, SESSION)
    a = analyzer()
    feed(a, chunks[:60])  # 6 s of silence: not yet dead (10 s)
    b = moved(a)
    first = feed(b, chunks[110:150])  # 4 s more after the hole: 6 + 4 s, counted afresh
    assert [f.kind for f in first.findings] == []
    later = feed(b, chunks[150:])  # 10 s more after the hole
    dead = [f for f in later.findings if f.kind == "dead_microphone"]
    assert [f.event_id for f in dead] == [f"mic/{SESSION:016x}@{110 * CHUNK}"]
