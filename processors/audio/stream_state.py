"""What the audio worker remembers about one stream, one producer session at a time.

A stream's chunks carry the session of the producer run that sent them
(:mod:`processors.audio.codec`); a restarted producer counts its sequence numbers from 0
again under a new session. Each session of a stream is a *segment*: its own reassembly,
sample clock, window numbers, VAD state, speech segment and level watch. Only the
stream's anomaly detector, which learned how this microphone sounds, carries over to the
next segment. Chunks of a session that a newer one replaced are stale: they come late.

>>> segment_id("mic-1", 0), segment_id("mic-1", 0x5EED)
('mic-1', 'mic-1/0000000000005eed')
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np

from models.silero_vad import CONTEXT, FRAME, RATE, STATE_SHAPE
from models.sound_anomaly import StreamAnomaly
from processors.audio.config import AnalyzerConfig
from processors.audio.events import LevelWatch, SpeechTracker
from processors.audio.features import FEATURE_NAMES, FrameCache
from processors.audio.reassembly import Reassembler
from processors.audio.windows import StreamBuffer

__all__ = ["RETIRED_SESSIONS", "SessionRole", "StreamState", "segment_id"]

RETIRED_SESSIONS: Final = 16  # earlier sessions of a stream remembered, to refuse their chunks
SessionRole = Literal["current", "new", "retired"]


def segment_id(stream_id: str, session: int) -> str:
    """The name of one session of a stream, used in its events' ids (the id alone for 0)."""
    return stream_id if session == 0 else f"{stream_id}/{session:016x}"


class StreamState:
    """One stream's state for its current session (segment)."""

    def __init__(
        self,
        conf: AnalyzerConfig,
        now: float,
        stream_id: str = "",
        session: int = 0,
        anomaly: StreamAnomaly | None = None,
        retired: tuple[int, ...] = (),
    ) -> None:
        window, hop = round(conf.window_s * RATE), round(conf.hop_s * RATE)
        self.conf = conf
        self.stream_id, self.session = stream_id, session
        self.segment = segment_id(stream_id, session)
        self.retired: deque[int] = deque(retired, maxlen=RETIRED_SESSIONS)
        self.reassembler = Reassembler(conf.reorder_chunks)
        self.buffer = StreamBuffer(window, hop, FRAME, CONTEXT)
        self.vad_state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self.spectra = FrameCache()  # STFT frame statistics shared by overlapping windows
        self.probs: deque[tuple[int, float]] = deque()  # (frame start, speech probability)
        self.speech = SpeechTracker(
            conf.speech_threshold,
            round(conf.speech_min_s * RATE),
            round(conf.speech_silence_s * RATE),
        )
        self.level = LevelWatch(
            RATE, conf.level_alert_dbfs, conf.clip_alert_ratio, conf.silence_dbfs, conf.dead_after_s
        )
        self.anomaly = anomaly or StreamAnomaly(FEATURE_NAMES, window_size=conf.anomaly_window)
        self.anomalous = False
        self.captures: dict[int, int] = {}  # seq -> capture ns, until released
        self.anchor = (0, 0)  # (sample index, capture ns) of the latest released chunk
        self.last_arrival = now
        self.stalled = False
        self.resumed = False  # restored from a checkpoint; not yet past what it missed

    def role(self, session: int) -> SessionRole:
        """Whether a chunk of ``session`` belongs here, starts a new segment, or is stale."""
        if session == self.session:
            return "current"
        return "retired" if session in self.retired else "new"

    def next_segment(self, session: int, now: float) -> StreamState:
        """The state for ``session`` replacing this one; only the anomaly detector carries."""
        retired = (*self.retired, self.session)
        return StreamState(self.conf, now, self.stream_id, session, self.anomaly, retired)

    def resume_at(self, seq: int, chunk_samples: int) -> int:
        """Go on at chunk ``seq`` of this session, past the chunks another run analysed
        after this state's checkpoint: the sample clock moves on by the skipped chunks x
        ``chunk_samples`` (so window numbers and event ids are not used twice), samples and
        chunks from before the hole are dropped unanalysed, nothing is filled with silence.
        The VAD state, an open speech segment, the level conditions raised and the anomaly
        detector go on. Returns the chunks skipped."""
        skipped = self.reassembler.resume_at(seq)
        self.captures = {s: ns for s, ns in self.captures.items() if s >= seq}
        to = self.buffer.total + skipped * chunk_samples
        self.buffer.jump(to)
        self.probs.clear()
        self.spectra.start, self.spectra.rows = to, self.spectra.rows[:0]
        self.speech.jump(to)
        self.level.jump()
        self.resumed = False
        return skipped

    def time_at(self, sample: int) -> datetime:
        index, ns = self.anchor
        return datetime.fromtimestamp((ns + (sample - index) * 1e9 / RATE) / 1e9, UTC)
