"""The ``audio-chunk/1.1`` envelope: a 34-byte binary header, the session, the stream id, PCM.

Layout (little-endian)::

    offset size field
    0      4    magic b"SWAC"
    4      1    major version (1)
    5      1    sample format: 1 = int16, 2 = float32
    6      1    channels (1..8), samples interleaved
    7      1    minor version: 0 (1.0, no session) or 1 (1.1); was "reserved, 0" in 1.0
    8      4    sample rate, Hz (u32)
    12     4    frames in this chunk (u32); the PCM is frames * channels * width bytes
    16     8    sequence number within the producer session (u64), 0, 1, 2, ...
    24     8    capture time of the first frame, ns since the Unix epoch (i64)
    32     2    length of the stream id in bytes (u16, 1..256)
    34     8    minor 1 only: producer session (u64, 1..2**64-1), new for every producer run
    34|42  n    the stream id, UTF-8 (equal to the Kafka key)
    ...         PCM, little-endian

A chunk of session 0 is written as 1.0, byte for byte what 1.0 producers write, and every
1.0 envelope reads as session 0; a new session of a known stream starts a new segment of
it (sequence numbers count again from the producer's start: see
:mod:`processors.audio.stream_state`). The whole envelope is the Kafka value, so a dead
letter (which keeps the value bytes) keeps everything needed to replay it. Decoding never
raises: it returns :class:`Rejected`.

>>> import numpy as np
>>> raw = encode_chunk(AudioChunk("mic-1", 7, 16000, 1, "int16", 0, np.zeros(4, "<i2").tobytes()))
>>> len(raw), decode_chunk(raw).frames, decode_chunk(raw).session
(47, 4, 0)
>>> raw = encode_chunk(AudioChunk("mic-1", 0, 16000, 1, "int16", 0, b"", session=0x5EED))
>>> len(raw), raw[7], decode_chunk(raw).session
(47, 1, 24301)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from processors.common.schemas import Rejected

__all__ = [
    "AUDIO_CHUNK_SCHEMA",
    "FORMATS",
    "AudioChunk",
    "accept_chunk",
    "decode_chunk",
    "encode_chunk",
    "to_mono_float",
]

AUDIO_CHUNK_SCHEMA: Final = "audio-chunk/1.1"  # the newest version this module writes
MAGIC: Final = b"SWAC"
VERSION: Final = 1  # major
MINOR: Final = 1  # newest minor read and written; 0 is read too
_HEADER = struct.Struct("<4sBBBBIIQqH")
HEADER_BYTES: Final = _HEADER.size  # 34, then the session (minor 1) and the stream id
_SESSION = struct.Struct("<Q")
SESSION_BYTES: Final = _SESSION.size
MAX_SESSION: Final = 2**64 - 1
SampleFormat = Literal["int16", "float32"]
FORMATS: Final[dict[int, SampleFormat]] = {1: "int16", 2: "float32"}
_CODES: Final = {name: code for code, name in FORMATS.items()}
_WIDTH: Final = {"int16": 2, "float32": 4}
MAX_CHANNELS: Final = 8
MAX_STREAM_ID: Final = 256


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One chunk of one stream: header fields and the interleaved PCM bytes."""

    stream_id: str
    seq: int
    sample_rate: int
    channels: int
    sample_format: SampleFormat
    capture_ns: int
    pcm: bytes
    session: int = 0  # the producer run that sent it; 0: none given (a 1.0 envelope)

    @property
    def frames(self) -> int:
        """Samples per channel in this chunk."""
        return len(self.pcm) // (self.channels * _WIDTH[self.sample_format])


def encode_chunk(chunk: AudioChunk) -> bytes:
    """The wire form of ``chunk``; raises ``ValueError`` on a chunk that could not decode."""
    sid = chunk.stream_id.encode()
    if not 0 < len(sid) <= MAX_STREAM_ID:
        raise ValueError(f"stream id must be 1..{MAX_STREAM_ID} UTF-8 bytes")
    if not 1 <= chunk.channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be 1..{MAX_CHANNELS}")
    if len(chunk.pcm) % (chunk.channels * _WIDTH[chunk.sample_format]):
        raise ValueError("PCM length is not a whole number of frames")
    if not 0 <= chunk.session <= MAX_SESSION:
        raise ValueError(f"session must be 0..{MAX_SESSION}")
    minor = MINOR if chunk.session else 0
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        _CODES[chunk.sample_format],
        chunk.channels,
        minor,
        chunk.sample_rate,
        chunk.frames,
        chunk.seq,
        chunk.capture_ns,
        len(sid),
    )
    session = _SESSION.pack(chunk.session) if minor else b""
    return header + session + sid + chunk.pcm


def decode_chunk(raw: bytes) -> AudioChunk | Rejected:
    """Parse and check an envelope's structure (not the pipeline's rate or length limits)."""
    if len(raw) < HEADER_BYTES:
        return Rejected(
            "truncated", f"{len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, code, channels, minor, rate, frames, seq, capture_ns, sid_len = (
        _HEADER.unpack_from(raw)
    )
    if magic != MAGIC:
        return Rejected("not_audio_chunk", f"magic {magic!r} is not {MAGIC!r}")
    if version != VERSION or minor > MINOR:
        detail = f"envelope version {version}.{minor}, this worker reads 1.0 to {VERSION}.{MINOR}"
        return Rejected("unsupported_version", detail)
    if code not in FORMATS:
        return Rejected("unknown_format", f"sample format code {code} (1 int16, 2 float32)")
    if not 1 <= channels <= MAX_CHANNELS:
        return Rejected("bad_channels", f"{channels} channels, expected 1..{MAX_CHANNELS}")
    session, id_at = 0, HEADER_BYTES
    if minor:
        if len(raw) < HEADER_BYTES + SESSION_BYTES:
            return Rejected("truncated", f"{len(raw)} bytes, too short for the session")
        (session,) = _SESSION.unpack_from(raw, HEADER_BYTES)
        if session == 0:
            return Rejected("bad_session", "a 1.1 envelope carries a session, and 0 is none")
        id_at += SESSION_BYTES
    start = id_at + sid_len
    if not 0 < sid_len <= MAX_STREAM_ID or len(raw) < start:
        return Rejected("truncated", f"stream id of {sid_len} bytes does not fit")
    try:
        stream_id = raw[id_at:start].decode()
    except UnicodeDecodeError:
        return Rejected("bad_stream_id", "stream id is not UTF-8")
    fmt = FORMATS[code]
    expected = frames * channels * _WIDTH[fmt]
    if len(raw) - start != expected:
        detail = f"{len(raw) - start} PCM bytes, header says {frames} frames = {expected} bytes"
        return Rejected("wrong_length", detail)
    pcm = bytes(raw[start:])
    if fmt == "float32" and not np.isfinite(np.frombuffer(pcm, dtype="<f4")).all():
        return Rejected("bad_samples", "float32 PCM holds NaN or infinity")
    return AudioChunk(stream_id, seq, rate, channels, fmt, capture_ns, pcm, session)


def to_mono_float(chunk: AudioChunk) -> npt.NDArray[np.float32]:
    """Samples in [-1, 1] as float32, channels averaged."""
    if chunk.sample_format == "int16":
        data = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32) / 32768.0
    else:
        data = np.clip(np.frombuffer(chunk.pcm, dtype="<f4"), -1.0, 1.0).astype(np.float32)
    if chunk.channels > 1:
        data = data.reshape(-1, chunk.channels).mean(axis=1, dtype=np.float32)
    return data


def accept_chunk(raw: object, key: object, rate: int, max_frames: int) -> AudioChunk | Rejected:
    """Decode ``raw`` and check it against the pipeline: rate, size and key.

    The pipeline takes chunks at its own ``rate`` (producers resample), of 1 to
    ``max_frames`` frames, keyed by their stream id (so a stream stays on one partition).
    """
    if not isinstance(raw, bytes) or not raw:
        return Rejected("empty", "message has no value")
    chunk = decode_chunk(raw)
    if isinstance(chunk, Rejected):
        return chunk
    if chunk.sample_rate != rate:
        return Rejected("wrong_sample_rate", f"{chunk.sample_rate} Hz, the pipeline takes {rate}")
    if not 0 < chunk.frames <= max_frames:
        return Rejected("wrong_length", f"{chunk.frames} frames, expected 1..{max_frames}")
    if key != chunk.stream_id.encode():
        return Rejected("key_mismatch", f"key {key!r:.60} is not the stream id {chunk.stream_id!r}")
    return chunk
