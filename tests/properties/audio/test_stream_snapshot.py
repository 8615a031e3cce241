"""A stream snapshotted and restored into a fresh analyzer goes on exactly as if it had not
been: same windows (ids, features, scores, times) and same findings."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.silero_vad import CONTEXT
from processors.audio.analyzer import AudioAnalyzer, BatchResult
from processors.audio.codec import AudioChunk
from tests.unit.audio.test_stream_sessions import noise, run, tone
from tests.unit.audio.test_stream_snapshot import conf

Array = np.ndarray


class RecurrentVad:
    """A stand-in VAD whose answer depends on its recurrent state, as Silero's does: the
    state is a running level, and a frame is speech when it is loud against that level."""

    version = "recurrent/1"

    def predict_batch(self, frames: Array, states: Array) -> tuple[Array, Array]:
        rms = np.sqrt((frames[:, CONTEXT:] ** 2).mean(axis=1)).astype(np.float32)
        level = states.reshape(len(states), -1)[:, 0]
        probs = np.clip(rms * 4 - level, 0, 1).astype(np.float32)
        new = states * np.float32(0.9) + rms[:, None, None] * np.float32(0.1)
        return probs, new.astype(np.float32)


def vad() -> RecurrentVad:
    return RecurrentVad()


def signal(parts: list[tuple[str, float]], seed: int) -> np.ndarray:
    """Noise at various levels, loud tones (speech to the fake VAD) and digital silence."""
    pieces = []
    for i, (kind, seconds) in enumerate(parts):
        if kind == "tone":
            pieces.append(tone(seconds))
        elif kind == "silence":
            pieces.append(np.zeros(round(seconds * 16000), np.float32))
        else:
            pieces.append(noise(seconds, level=0.02 + 0.1 * (i % 3), seed=seed + i))
    return np.concatenate(pieces)


def feed(a: AudioAnalyzer, chunks: list[AudioChunk], per: int) -> BatchResult:
    total = BatchResult()
    for i in range(0, len(chunks), per):
        r = a.process(chunks[i : i + per], 0.0)
        total.windows += r.windows
        total.findings += r.findings
    return total


parts = st.lists(
    st.tuples(st.sampled_from(["noise", "tone", "silence"]), st.floats(0.3, 2.5)),
    min_size=2,
    max_size=5,
)


@settings(max_examples=12, deadline=None)
@given(parts=parts, seed=st.integers(0, 1000), cut=st.floats(0.05, 0.95), per=st.integers(1, 9))
def test_a_restored_stream_goes_on_as_if_never_stopped(
    parts: list[tuple[str, float]], seed: int, cut: float, per: int
) -> None:
    chunks = run("mic", signal(parts, seed), session=9)
    k = max(1, round(cut * len(chunks)))
    straight = AudioAnalyzer(conf(), vad())
    expected = feed(straight, chunks[:k], per)
    rest = feed(straight, chunks[k:], per)
    expected.windows += rest.windows
    expected.findings += rest.findings

    first = AudioAnalyzer(conf(), vad())
    got = feed(first, chunks[:k], per)
    fresh = AudioAnalyzer(conf(), vad())
    assert fresh.restore(first.snapshot(["mic"]), 0.0) == ["mic"]
    after = feed(fresh, chunks[k:], per)
    assert not fresh.streams["mic"].resumed  # the next chunk expected: no hole
    assert got.windows + after.windows == expected.windows
    assert got.findings + after.findings == expected.findings
    assert fresh.streams["mic"].anomaly.seen == straight.streams["mic"].anomaly.seen
