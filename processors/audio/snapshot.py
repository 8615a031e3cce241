"""One stream's state as data (``audio-stream`` version 1), for the checkpoint that follows
its partition (:mod:`pipelines.runtime.checkpoints`).

Everything a stream's analysis goes on from is kept: the session and the sessions it
replaced, the reassembler's position, buffered chunks and counters, the sample clock and the
samples not yet framed or windowed, the VAD's recurrent state, the cached frame statistics
of the window in progress (rebuilding them from the samples gives values equal only to
about 1e-12, which could move an anomaly tree's branch: kept, so a restored stream goes on
bit for bit), the speech probabilities of frames not yet windowed, the speech segment, the
level conditions, the anomaly detector (:meth:`models.sound_anomaly.StreamAnomaly.state`)
and the capture times. Not kept: the wall-clock fields (the last chunk's arrival is the
restore's time, nothing is stalled). A restored stream is *resumed*
(:meth:`~processors.audio.stream_state.StreamState.resume_at`): it is behind its
partition's committed offset by up to a checkpoint interval.

A state of other window lengths, hop, anomaly window or features is refused
(:class:`~processors.common.state_codec.StateCodecError`): its windows and trees mean
something else, and the stream starts afresh instead.

>>> from pipelines.settings import Settings
>>> conf = Settings().audio
>>> state = StreamState(conf, 0.0, "mic-1", 7)
>>> back = decode_stream(encode_stream(state), conf, now=5.0)
>>> back.segment, back.resumed, back.last_arrival
('mic-1/0000000000000007', True, 5.0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from models.silero_vad import CONTEXT, FRAME, RATE, STATE_SHAPE
from processors.audio.config import AnalyzerConfig
from processors.audio.features import FEATURE_NAMES
from processors.audio.stream_state import StreamState
from processors.common.state_codec import StateCodecError, pack, unpack

__all__ = ["KIND", "VERSION", "decode_stream", "encode_stream", "layout"]

KIND: Final = "audio-stream"
VERSION: Final = 1


def layout(conf: AnalyzerConfig) -> dict[str, Any]:
    """What a state's meaning depends on: a state of another layout is refused."""
    return {
        "rate": RATE,
        "frame": FRAME,
        "context": CONTEXT,
        "window": round(conf.window_s * RATE),
        "hop": round(conf.hop_s * RATE),
        "anomaly_window": conf.anomaly_window,
        "features": list(FEATURE_NAMES),
    }


def stream_data(state: StreamState) -> dict[str, Any]:
    """``state`` as the nested data :func:`processors.common.state_codec.pack` stores."""
    return {
        "layout": layout(state.conf),
        "stream": state.stream_id,
        "session": state.session,
        "retired": list(state.retired),
        "reassembler": state.reassembler.state(),
        "buffer": state.buffer.state(),
        "vad": state.vad_state,
        "spectra": {"start": state.spectra.start, "rows": state.spectra.rows},
        "probs": {
            "starts": [s for s, _ in state.probs],
            "values": np.array([p for _, p in state.probs], dtype=np.float64),
        },
        "speech": state.speech.state(),
        "level": state.level.state(),
        "anomaly": state.anomaly.state(),
        "anomalous": state.anomalous,
        "captures": [[seq, ns] for seq, ns in sorted(state.captures.items())],
        "anchor": list(state.anchor),
    }


def encode_stream(state: StreamState) -> bytes:
    """The checkpoint of one stream (CPU work: call it off the event loop)."""
    return pack(KIND, VERSION, stream_data(state))


def decode_stream(raw: bytes, conf: AnalyzerConfig, now: float) -> StreamState:
    """The stream of checkpoint ``raw``, resumed, its stall clock starting at ``now``;
    :class:`StateCodecError` for a damaged state or one of another layout."""
    data = unpack(raw, KIND, VERSION)
    if data.get("layout") != layout(conf):
        raise StateCodecError(
            f"an audio stream state of layout {data.get('layout')}, not {layout(conf)}"
        )
    try:
        return _restored(data, conf, now)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateCodecError(f"bad audio stream state: {exc!r}") from exc


def _restored(data: Mapping[str, Any], conf: AnalyzerConfig, now: float) -> StreamState:
    state = StreamState(
        conf, now, str(data["stream"]), int(data["session"]), None, tuple(data["retired"])
    )
    state.reassembler.restore(data["reassembler"])
    state.buffer.restore(data["buffer"])
    vad = np.asarray(data["vad"], dtype=np.float32)
    if vad.shape != STATE_SHAPE:
        raise ValueError(f"VAD state of shape {vad.shape}, not {STATE_SHAPE}")
    state.vad_state = vad
    spectra = data["spectra"]
    state.spectra.start, state.spectra.rows = int(spectra["start"]), np.asarray(spectra["rows"])
    probs = data["probs"]
    values = np.asarray(probs["values"], dtype=np.float64).tolist()
    state.probs = deque(zip((int(s) for s in probs["starts"]), values, strict=True))
    state.speech.restore(data["speech"])
    state.level.restore(data["level"])
    state.anomaly.restore(data["anomaly"])
    state.anomalous = bool(data["anomalous"])
    state.captures = {int(seq): int(ns) for seq, ns in data["captures"]}
    index, ns = data["anchor"]
    state.anchor = (int(index), int(ns))
    state.resumed = True
    return state
