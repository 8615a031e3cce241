"""The audio worker's analysis of one micro-batch: reassembly, VAD, windows, features, scores.

:class:`AudioAnalyzer` owns the state of every stream the worker holds (reorder buffer,
pending samples, VAD recurrent state, speech tracker, level watch, anomaly detector). It is
synchronous and CPU-bound; the step calls it in an executor, one call at a time, so each
piece of state has one writer. A new producer session of a known stream starts a new
segment of it (:mod:`processors.audio.stream_state`); chunks of a replaced session are late.
:meth:`AudioAnalyzer.evict` forgets streams the worker no longer holds, without an alert.
:meth:`AudioAnalyzer.snapshot` and :meth:`AudioAnalyzer.restore` carry streams' state as
data (:mod:`processors.audio.snapshot`) to the worker that holds their partition next; a
restored stream re-anchors past the chunks it missed (:meth:`StreamState.resume_at`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.silero_vad import FRAME, RATE
from models.sound_classifier import SoundClassifier
from processors.audio.codec import AudioChunk, to_mono_float
from processors.audio.config import AnalyzerConfig
from processors.audio.features import (
    FEATURE_NAMES,
    LogMel,
    shared_window_stats,
    stats_features,
    stats_log_mels,
)
from processors.audio.findings import Finding, level_finding, seconds, speech_finding
from processors.audio.snapshot import decode_stream, encode_stream
from processors.audio.stream_state import StreamState
from processors.common.state_codec import StateCodecError

__all__ = ["AudioAnalyzer", "BatchResult", "Finding", "VadModel", "WindowResult"]

Array = npt.NDArray[np.float32]
log = logging.getLogger(__name__)


class VadModel(Protocol):
    @property
    def version(self) -> str: ...

    def predict_batch(self, frames: Array, states: Array) -> tuple[Array, Array]: ...


@dataclass(frozen=True)
class WindowResult:
    """One analysis window of one stream, ready to become a prediction."""

    stream_id: str
    index: int  # window number within the segment: start sample // hop
    event_time: datetime
    features: dict[str, float]
    anomaly_score: float
    segment: str = ""  # the stream's session (:func:`segment_id`): names the window

    @property
    def event_id(self) -> str:
        """``<segment>:<window number>``, unique per stream, session and window."""
        return f"{self.segment or self.stream_id}:{self.index}"


@dataclass
class BatchResult:
    windows: list[WindowResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    duplicates: int = 0
    late: int = 0
    # (index among the chunks given to ``process``, why) of each late chunk, dropped here
    late_chunks: list[tuple[int, str]] = field(default_factory=list)
    gap_chunks: int = 0
    skipped_chunks: int = 0  # chunks a restored stream missed (analysed by another run)
    vad_frames: int = 0
    vad_calls: int = 0


def _stale_detail(state: StreamState, chunk: AudioChunk) -> str:
    return (
        f"chunk {chunk.seq} of stream {chunk.stream_id} is from producer session "
        f"{chunk.session:016x}, which session {state.session:016x} replaced"
    )


def _late_detail(state: StreamState, chunk: AudioChunk) -> str:
    first = state.reassembler.first_seq
    if first is not None and chunk.seq < first:
        return f"chunk {chunk.seq} of stream {chunk.stream_id} precedes its first chunk {first}"
    return (
        f"chunk {chunk.seq} of stream {chunk.stream_id} came after its place was filled with "
        f"silence (reorder buffer {state.reassembler.capacity} chunks)"
    )


class AudioAnalyzer:
    """``process(chunks, now) -> BatchResult``; ``check_stalled(now)`` for silent streams;
    ``evict(ids)`` for streams whose partition went to another worker."""

    def __init__(
        self,
        conf: AnalyzerConfig,
        vad: VadModel,
        classifier: SoundClassifier | None = None,
    ) -> None:
        self.conf = conf
        self.vad = vad
        self.classifier = classifier
        self.logmel = LogMel()
        self.streams: dict[str, StreamState] = {}

    # ------------------------------------------------------------------ ingest
    def process(self, chunks: Sequence[AudioChunk], now: float) -> BatchResult:
        result = BatchResult()
        touched: list[str] = []
        for index, chunk in enumerate(chunks):
            sid = chunk.stream_id
            state = self.streams.get(sid)
            if state is None:
                state = self.streams[sid] = StreamState(self.conf, now, sid, chunk.session)
            elif (role := state.role(chunk.session)) == "retired":
                result.late += 1
                result.late_chunks.append((index, _stale_detail(state, chunk)))
                continue
            elif role == "new":
                state = self._next_segment(state, chunk.session, now, sid in touched, result)
            state.last_arrival, state.stalled = now, False
            if self._ingest(state, chunk, result):
                result.late_chunks.append((index, _late_detail(state, chunk)))
            if chunk.stream_id not in touched:
                touched.append(chunk.stream_id)
        self._run_vad(touched, result)
        self._run_windows(touched, result)
        return result

    def _next_segment(
        self, state: StreamState, session: int, now: float, pending: bool, result: BatchResult
    ) -> StreamState:
        """Close ``state``'s segment (its windows so far, an open speech segment) and start
        ``session``'s, at its own sequence numbers: no gap is filled between the two."""
        sid = state.stream_id
        if pending:  # this batch gave the old segment samples: analyse them first
            self._run_vad([sid], result)
            self._run_windows([sid], result)
        for event in state.speech.close():
            result.findings.append(speech_finding(self.conf, sid, state, event))
        new = self.streams[sid] = state.next_segment(session, now)
        return new

    def evict(self, ids: Iterable[str]) -> list[str]:
        """Forget the state of streams ``ids`` (their partition moved to another worker),
        raising nothing for them; return the ids that had state."""
        return [sid for sid in ids if self.streams.pop(sid, None) is not None]

    def snapshot(self, ids: Iterable[str]) -> dict[str, bytes]:
        """The checkpoint of each of ``ids`` that has state (CPU work: off the loop)."""
        return {sid: encode_stream(self.streams[sid]) for sid in ids if sid in self.streams}

    def restore(
        self, states: Mapping[str, bytes], now: float, quiet: Collection[str] = ()
    ) -> list[str]:
        """Take streams back from their checkpoints (their stall clocks start at ``now``;
        those of ``quiet``, checkpointed long ago, come back already stalled: no second
        alert); a checkpoint that is damaged or of another layout is logged and skipped (that
        stream starts afresh). Returns the ids restored."""
        restored = []
        for sid, raw in states.items():
            try:
                state = decode_stream(raw, self.conf, now)
            except StateCodecError as exc:
                log.warning("stream %s starts afresh: its checkpoint was refused (%s)", sid, exc)
                continue
            if state.stream_id != sid:
                log.warning("stream %s starts afresh: its checkpoint is %s's", sid, state.stream_id)
                continue
            state.stalled = sid in quiet
            self.streams[sid] = state
            restored.append(sid)
        return restored

    def restart_stall_clocks(self, now: float) -> None:
        """Count every stream's silence from ``now``: while the worker was rebalancing it
        was not reading, so a quiet spell before ``now`` says nothing about the stream."""
        for state in self.streams.values():
            state.last_arrival = max(state.last_arrival, now)

    def _ingest(self, state: StreamState, chunk: AudioChunk, result: BatchResult) -> bool:
        """Put ``chunk`` in its stream; ``True`` if it came late and was dropped."""
        samples = to_mono_float(chunk)
        if state.resumed:
            self._resume(state, chunk, len(samples), result)
        released = state.reassembler.push(chunk.seq, samples)
        result.duplicates += released.duplicate
        result.late += released.late
        result.gap_chunks += released.gap_chunks
        if released.duplicate or released.late:
            return released.late
        state.captures[chunk.seq] = chunk.capture_ns
        seq = released.first_seq
        for samples in released.samples:
            assert seq is not None
            capture = state.captures.pop(seq, None)
            if capture is not None:
                state.anchor = (state.buffer.total, capture)
            state.buffer.append(samples)
            seq += 1
        return False

    @staticmethod
    def _resume(state: StreamState, chunk: AudioChunk, length: int, result: BatchResult) -> None:
        """A restored stream's first new chunk: past a hole (chunks analysed after the
        checkpoint, by the run that wrote it) the stream re-anchors there; the next chunk
        expected just goes on; a chunk already covered by the checkpoint is a repeat."""
        expected = state.reassembler.next_seq
        if expected is None or chunk.seq == expected:
            state.resumed = False
        elif chunk.seq > expected and chunk.seq not in state.reassembler.pending:
            result.skipped_chunks += state.resume_at(chunk.seq, length)

    # ------------------------------------------------------------------ VAD
    def _run_vad(self, streams: list[str], result: BatchResult) -> None:
        pending = {sid: self.streams[sid].buffer.take_frames() for sid in streams}
        pending = {sid: f for sid, f in pending.items() if len(f[1])}
        rounds = max((len(frames) for _, frames in pending.values()), default=0)
        for r in range(rounds):
            ids = [sid for sid, (_, frames) in pending.items() if len(frames) > r]
            if self.conf.vad_batched:
                batch = np.stack([pending[sid][1][r] for sid in ids])
                states = np.stack([self.streams[sid].vad_state for sid in ids])
                probs, new_states = self.vad.predict_batch(batch, states)
                result.vad_calls += 1
            else:
                outs = [
                    self.vad.predict_batch(
                        pending[sid][1][r][None], self.streams[sid].vad_state[None]
                    )
                    for sid in ids
                ]
                probs = np.concatenate([p for p, _ in outs])
                new_states = np.concatenate([s for _, s in outs])
                result.vad_calls += len(ids)
            result.vad_frames += len(ids)
            for i, sid in enumerate(ids):
                state = self.streams[sid]
                state.vad_state = new_states[i]
                start = pending[sid][0] + r * FRAME
                prob = float(probs[i])
                state.probs.append((start, prob))
                for event in state.speech.update(prob):
                    result.findings.append(speech_finding(self.conf, sid, state, event))

    # ------------------------------------------------------------------ windows
    def _run_windows(self, streams: list[str], result: BatchResult) -> None:
        taken = [
            (sid, start, w)
            for sid in streams
            for start, w in self.streams[sid].buffer.take_windows()
        ]
        if not taken:
            return
        windows = np.stack([w for _, _, w in taken])
        stats = shared_window_stats(
            [self.streams[sid].spectra for sid, _, _ in taken],
            [start for _, start, _ in taken],
            windows,
            self.logmel,
        )
        features = stats_features(windows, stats, self.logmel, self.conf.clip_level)
        classes = self._classify(stats)
        hop = round(self.conf.hop_s * RATE)
        for i, (sid, start, window) in enumerate(taken):
            state = self.streams[sid]
            end = start + len(window)
            values = dict(
                zip(FEATURE_NAMES, (round(float(v), 6) for v in features[i]), strict=True)
            )
            speech = max((p for s, p in state.probs if start <= s < end), default=0.0)
            examples = state.anomaly.seen  # windows the score stands on
            score, zscores = state.anomaly.score_then_learn(features[i].tolist())
            ready = state.anomaly.ready
            values |= {
                "speech_probability": round(speech, 4),
                "anomaly_ready": float(ready),
                "gap_chunks_total": float(state.reassembler.gap_chunks),
                "anomaly_examples": float(examples),
            }
            values |= classes[i] if classes else {}
            result.windows.append(
                WindowResult(
                    sid, start // hop, state.time_at(start), values, round(score, 6), state.segment
                )
            )
            for event in state.level.update(
                start, end, values["rms_dbfs"], values["clipping_ratio"]
            ):
                result.findings.append(level_finding(self.conf, sid, state, event))
            anomalous = ready and score >= self.conf.anomaly_threshold
            if anomalous and not state.anomalous:
                top = sorted(zscores.items(), key=lambda kv: -abs(kv[1]))[:2]
                reasons = [
                    f"score {score:.3f} >= {self.conf.anomaly_threshold} "
                    f"after {state.anomaly.seen} windows"
                ]
                reasons += [
                    f"{name} {z:+.1f} standard deviations from this stream's normal"
                    for name, z in top
                ]
                result.findings.append(
                    Finding(
                        sid,
                        "acoustic_anomaly",
                        f"{state.segment}@{start}",
                        round(score, 6),
                        self.conf.anomaly_threshold,
                        reasons,
                        state.time_at(start),
                    )
                )
            state.anomalous = anomalous
        for sid in streams:
            state = self.streams[sid]
            keep_from = state.buffer.next_window_start
            while state.probs and state.probs[0][0] < keep_from:
                state.probs.popleft()
            state.spectra.forget_before(keep_from, self.logmel.step)

    def _classify(self, stats: npt.NDArray[np.float64]) -> list[dict[str, float]]:
        if self.classifier is None:
            return []
        scores = self.classifier.predict_batch(stats_log_mels(stats, self.logmel))
        names = self.classifier.classes
        top = np.argsort(-scores, axis=1)[:, : self.conf.classifier_top]
        return [
            {f"class:{names[j]}": round(float(row[j]), 4) for j in idx}
            for row, idx in zip(scores, top, strict=True)
        ]

    # ------------------------------------------------------------------ silence
    def check_stalled(self, now: float) -> list[Finding]:
        """Streams whose chunks stopped for ``dead_after_s``: dead microphone, speech ended."""
        findings: list[Finding] = []
        for sid, state in self.streams.items():
            quiet = now - state.last_arrival
            if state.stalled or quiet < self.conf.dead_after_s:
                continue
            state.stalled = True
            for event in state.speech.close():
                findings.append(speech_finding(self.conf, sid, state, event))
            at = state.buffer.total
            findings.append(
                Finding(
                    sid,
                    "dead_microphone",
                    f"{state.segment}@{at}:stalled",
                    round(quiet, 3),
                    self.conf.dead_after_s,
                    [f"no chunks for {quiet:.1f} s (after {seconds(at)} of audio)"],
                    state.time_at(at),
                )
            )
        return findings
