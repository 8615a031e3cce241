"""Turning per-frame and per-window measurements into events a person cares about.

:class:`SpeechTracker` makes speech segments, a session window over VAD frames: a segment
starts at the first frame at or above the threshold once speech has lasted ``min_speech``
samples, and ends when the probability stayed below ``threshold - 0.15`` for
``min_silence`` samples (the hysteresis Silero's own segmenter uses). :class:`LevelWatch`
raises level, clipping and dead-microphone events on entering a condition and re-arms when
the condition clears, so a loud minute is one alert, not a hundred.

>>> t = SpeechTracker(threshold=0.5, min_speech=1024, min_silence=1024, frame=512)
>>> [e.kind for p in [0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1] for e in t.update(p)]
['speech_started', 'speech_ended']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LevelWatch", "SoundEvent", "SpeechTracker"]


@dataclass(frozen=True, slots=True)
class SoundEvent:
    """Something that happened on a stream between two sample indices."""

    kind: str  # speech_started, speech_ended, level_high, clipping, dead_microphone
    start: int  # sample index where it began
    end: int | None  # sample index where it ended, if it has
    value: float  # the measurement that triggered it (probability, dBFS, ratio, seconds)


class SpeechTracker:
    """Speech segments from a stream's VAD probabilities, one frame at a time."""

    def __init__(self, threshold: float, min_speech: int, min_silence: int, frame: int = 512):
        self.threshold = threshold
        self.off_threshold = max(0.0, threshold - 0.15)
        self.min_speech, self.min_silence, self.frame = min_speech, min_silence, frame
        self.position = 0  # start sample of the next frame
        self.start: int | None = None  # first speech frame of a candidate or open segment
        self.open = False
        self.silent_since: int | None = None
        self.peak = 0.0

    def update(self, prob: float) -> list[SoundEvent]:
        """Feed the next frame's speech probability; return the events it completes."""
        at, self.position = self.position, self.position + self.frame
        events: list[SoundEvent] = []
        if self.start is None:
            if prob >= self.threshold:
                self.start, self.peak, self.silent_since = at, prob, None
            else:
                return events
        self.peak = max(self.peak, prob)
        if prob < self.off_threshold:
            if not self.open:
                self.start = None  # a blip shorter than min_speech: not a segment
                return events
            self.silent_since = at if self.silent_since is None else self.silent_since
            if self.position - self.silent_since >= self.min_silence:
                events += self.close(self.silent_since)
            return events
        self.silent_since = None
        if not self.open and self.position - self.start >= self.min_speech:
            self.open = True
            events.append(SoundEvent("speech_started", self.start, None, self.peak))
        return events

    def close(self, at: int | None = None) -> list[SoundEvent]:
        """End an open segment at sample ``at`` (default: where the frames reached)."""
        end = self.position if at is None else at
        events = []
        if self.open and self.start is not None:
            events.append(SoundEvent("speech_ended", self.start, end, self.peak))
        self.start, self.open, self.silent_since, self.peak = None, False, None, 0.0
        return events

    def state(self) -> dict[str, Any]:
        """Where the frames reached and the segment (candidate or open), as data."""
        return {
            "position": self.position,
            "start": self.start,
            "open": self.open,
            "silent_since": self.silent_since,
            "peak": self.peak,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`state` (thresholds and lengths stay this tracker's)."""
        start, silent = state["start"], state["silent_since"]
        self.position, self.open = int(state["position"]), bool(state["open"])
        self.start = None if start is None else int(start)
        self.silent_since = None if silent is None else int(silent)
        self.peak = float(state["peak"])

    def jump(self, to: int) -> None:
        """The next frame starts at sample ``to``, past a hole. An open segment stays open
        (its ``speech_started`` was sent; the frames after the hole end it or go on with
        it); a candidate not yet open is dropped, so no segment is opened across the hole."""
        self.position = to
        if not self.open:
            self.start, self.silent_since, self.peak = None, None, 0.0


class LevelWatch:
    """Edge-triggered level, clipping and dead-microphone events from window features."""

    def __init__(
        self,
        rate: int,
        level_dbfs: float,
        clip_ratio: float,
        silence_dbfs: float,
        dead_after_s: float,
    ) -> None:
        self.rate = rate
        self.level_dbfs, self.clip_ratio = level_dbfs, clip_ratio
        self.silence_dbfs, self.dead_after_s = silence_dbfs, dead_after_s
        self.loud = self.clipped = self.dead = False
        self.silent_since: int | None = None

    def update(self, start: int, end: int, rms_dbfs: float, clipping: float) -> list[SoundEvent]:
        """Feed one window (samples ``start`` to ``end``); return the events it starts."""
        events: list[SoundEvent] = []
        loud = rms_dbfs >= self.level_dbfs
        if loud and not self.loud:
            events.append(SoundEvent("level_high", start, None, rms_dbfs))
        self.loud = loud
        clipped = clipping >= self.clip_ratio
        if clipped and not self.clipped:
            events.append(SoundEvent("clipping", start, None, clipping))
        self.clipped = clipped
        if rms_dbfs > self.silence_dbfs:
            self.silent_since, self.dead = None, False
            return events
        self.silent_since = start if self.silent_since is None else self.silent_since
        silent_s = (end - self.silent_since) / self.rate
        if silent_s >= self.dead_after_s and not self.dead:
            self.dead = True
            events.append(SoundEvent("dead_microphone", self.silent_since, end, silent_s))
        return events

    def state(self) -> dict[str, Any]:
        """Which conditions are on (so they are not raised again) and the silence start."""
        return {
            "loud": self.loud,
            "clipped": self.clipped,
            "dead": self.dead,
            "silent_since": self.silent_since,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`state` (the limits stay this watch's)."""
        silent = state["silent_since"]
        self.loud, self.clipped = bool(state["loud"]), bool(state["clipped"])
        self.dead = bool(state["dead"])
        self.silent_since = None if silent is None else int(silent)

    def jump(self) -> None:
        """Past a hole: silence counts afresh from the next window (the hole may have held
        sound); a condition already raised stays raised, so it is not raised twice."""
        self.silent_since = None
