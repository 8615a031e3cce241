"""Publishing audio files as concurrent streams of ``audio-chunk/1`` messages.

Each file is read with soundfile (WAV, FLAC, OGG, ...), mixed down to mono and resampled
to the pipeline's 16 kHz with a polyphase filter (``scipy.signal.resample_poly``, which
low-passes before decimating, so nothing aliases), then cut into chunks of ``chunk_ms``
(the last one padded with silence, so every chunk of a stream has the same length) and
published as 16-bit PCM, keyed by stream id. Several files are several streams, sent in
step: chunk ``k`` of every stream, then chunk ``k + 1``. ``realtime`` paces chunk ``k`` at
``k * chunk_ms`` after the start, as live microphones would; otherwise as fast as possible.

Every call is one producer run with its own session (:func:`new_session`, a random 63-bit
id, in every chunk's ``audio-chunk/1.1`` envelope), and sequence numbers count from 0: a
stream published again under the same id is a new segment of it, not a repeat of the
first run's chunks.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.silero_vad import RATE
from pipelines.kafka.admin import client_config
from pipelines.settings import Settings
from processors.audio.codec import AudioChunk, encode_chunk

__all__ = [
    "AudioStream",
    "PublishReport",
    "chunked",
    "load_audio",
    "new_session",
    "publish_audio",
    "resample",
]

Samples = npt.NDArray[np.float32]


def resample(samples: npt.NDArray[np.floating], rate: int, target: int = RATE) -> Samples:
    """``samples`` at ``rate`` Hz, resampled to ``target`` with a polyphase FIR filter."""
    from scipy.signal import resample_poly

    if rate == target:
        return np.asarray(samples, dtype=np.float32)
    common = gcd(rate, target)
    out = resample_poly(np.asarray(samples, dtype=np.float64), target // common, rate // common)
    return np.asarray(out, dtype=np.float32)


def load_audio(path: Path, target: int = RATE) -> Samples:
    """A sound file as mono float32 at ``target`` Hz."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), int(rate), target)


def chunked(samples: Samples, chunk: int) -> list[bytes]:
    """16-bit PCM chunks of ``chunk`` samples; the last padded with silence."""
    count = max(1, -(-len(samples) // chunk))
    padded = np.zeros(count * chunk, dtype=np.float32)
    padded[: len(samples)] = samples
    pcm = np.round(np.clip(padded, -1.0, 32767 / 32768) * 32768).astype("<i2")
    return [pcm[i * chunk : (i + 1) * chunk].tobytes() for i in range(count)]


@dataclass(frozen=True)
class AudioStream:
    """One stream to publish: its id and its PCM chunks (repeated when looping)."""

    stream_id: str
    chunks: list[bytes]


@dataclass(frozen=True)
class PublishReport:
    streams: int
    chunks: int
    seconds: float
    session: int = 0  # the producer session every chunk of the run carried


def new_session() -> int:
    """A producer session id: random in 1..2**63-1, so two runs never share one (no clock
    is involved: a clock set back between runs cannot make a new run look old)."""
    return secrets.randbelow(2**63 - 1) + 1


def _schedule(
    streams: Sequence[AudioStream], loop: bool, limit: int | None
) -> Iterator[tuple[int, AudioStream, bytes]]:
    """``(seq, stream, pcm)`` in publication order: round ``seq`` over every live stream."""
    longest = max(len(s.chunks) for s in streams)
    seq = 0
    while (loop or seq < longest) and (limit is None or seq < limit):
        for stream in streams:
            if loop or seq < len(stream.chunks):
                yield seq, stream, stream.chunks[seq % len(stream.chunks)]
        seq += 1


def publish_audio(
    settings: Settings,
    streams: Sequence[AudioStream],
    *,
    chunk_ms: int = 100,
    realtime: bool = True,
    loop: bool = False,
    max_rounds: int | None = None,
    on_send: Callable[[str, int, int], None] | None = None,
    session: int | None = None,
) -> PublishReport:
    """Publish ``streams`` to ``audio-chunks``; ``on_send(stream, seq, send_ms)`` per chunk.

    ``session`` (default: a new one) is the run's producer session; 0 writes 1.0 envelopes.
    """
    from kafka import KafkaProducer

    if not streams:
        raise ValueError("no streams to publish")
    producer = KafkaProducer(
        **client_config(settings),
        client_id="streamwise-audio-producer",
        acks="all",
        linger_ms=5 if realtime else 20,
        batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    topic = settings.topics.audio_chunks
    run = new_session() if session is None else session
    chunk_s = chunk_ms / 1000
    sent = 0
    started = time.monotonic()
    origin_ns = time.time_ns()
    try:
        for seq, stream, pcm in _schedule(streams, loop, max_rounds):
            due = started + seq * chunk_s
            if realtime and due > time.monotonic():
                producer.flush()
                time.sleep(max(0.0, due - time.monotonic()))
            now_ms = time.time_ns() // 1_000_000
            capture = now_ms * 1_000_000 if realtime else origin_ns + int(seq * chunk_s * 1e9)
            chunk = AudioChunk(stream.stream_id, seq, RATE, 1, "int16", capture, pcm, run)
            producer.send(
                topic, key=stream.stream_id.encode(), value=encode_chunk(chunk), timestamp_ms=now_ms
            )
            if on_send is not None:
                on_send(stream.stream_id, seq, now_ms)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return PublishReport(len(streams), sent, time.monotonic() - started, run)
