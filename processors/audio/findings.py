"""Alert-worthy events of one stream, with the reasons a person reads.

:class:`Finding` is what the analyzer hands the step for an alert: its ``event_id``
(``<segment>@<sample index>``) is unique per stream, session and occurrence, and it is the
same whichever worker finds it from the same state, so a repeat after a crash can be told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from models.silero_vad import RATE
from processors.audio.config import AnalyzerConfig
from processors.audio.events import SoundEvent
from processors.audio.stream_state import StreamState

__all__ = ["Finding", "level_finding", "seconds", "speech_finding"]


@dataclass(frozen=True)
class Finding:
    """An alert-worthy event; ``event_id`` is unique per stream and occurrence."""

    stream_id: str
    kind: str
    event_id: str
    score: float
    threshold: float
    reasons: list[str]
    event_time: datetime


def seconds(sample: int) -> str:
    """A sample index as seconds of the stream, for reasons."""
    return f"{sample / RATE:.2f} s"


def speech_finding(
    conf: AnalyzerConfig, sid: str, state: StreamState, event: SoundEvent
) -> Finding:
    """``speech_started`` or ``speech_ended``; both carry the segment's start as their id."""
    reasons = [f"speech from {seconds(event.start)} of the stream"]
    at = event.start
    if event.end is not None:
        at = event.end
        reasons.append(f"lasted {(event.end - event.start) / RATE:.2f} s until {seconds(at)}")
    reasons.append(f"peak speech probability {event.value:.2f}")
    return Finding(
        sid,
        event.kind,
        f"{state.segment}@{event.start}",
        round(event.value, 4),
        conf.speech_threshold,
        reasons,
        state.time_at(at),
    )


def level_finding(conf: AnalyzerConfig, sid: str, state: StreamState, event: SoundEvent) -> Finding:
    """``level_high``, ``clipping`` or ``dead_microphone`` (silence) of a window."""
    if event.kind == "level_high":
        threshold = conf.level_alert_dbfs
        reasons = [f"RMS level {event.value:.1f} dBFS >= {conf.level_alert_dbfs} dBFS"]
    elif event.kind == "clipping":
        threshold = conf.clip_alert_ratio
        reasons = [f"{event.value:.1%} of samples at full scale (>= {conf.clip_alert_ratio:.1%})"]
    else:
        threshold = conf.dead_after_s
        reasons = [
            f"below {conf.silence_dbfs} dBFS for {event.value:.1f} s since {seconds(event.start)}"
        ]
    return Finding(
        sid,
        event.kind,
        f"{state.segment}@{event.start}",
        round(event.value, 6),
        threshold,
        reasons,
        state.time_at(event.start),
    )
