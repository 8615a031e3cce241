"""Properties of the audio-chunk/1.1 envelope: round trips, 1.0 still read, no input raises."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.audio.codec import (
    HEADER_BYTES,
    SESSION_BYTES,
    AudioChunk,
    accept_chunk,
    decode_chunk,
    encode_chunk,
    to_mono_float,
)
from processors.common.schemas import Rejected

stream_ids = st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.encode()) <= 256)
formats = st.sampled_from(["int16", "float32"])


@st.composite
def chunks(draw: st.DrawFn) -> AudioChunk:
    fmt = draw(formats)
    channels = draw(st.integers(1, 8))
    frames = draw(st.integers(0, 64))
    if fmt == "int16":
        values = draw(
            st.lists(
                st.integers(-32768, 32767), min_size=frames * channels, max_size=frames * channels
            )
        )
        pcm = np.array(values, dtype="<i2").tobytes()
    else:
        floats = st.floats(-1, 1, width=32, allow_nan=False)
        values = draw(st.lists(floats, min_size=frames * channels, max_size=frames * channels))
        pcm = np.array(values, dtype="<f4").tobytes()
    return AudioChunk(
        draw(stream_ids),
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(1, 2**32 - 1)),
        channels,
        fmt,
        draw(st.integers(-(2**63), 2**63 - 1)),
        pcm,
        draw(st.one_of(st.just(0), st.integers(1, 2**64 - 1))),
    )


@given(chunks())
def test_round_trip(chunk: AudioChunk) -> None:
    raw = encode_chunk(chunk)
    session_bytes = SESSION_BYTES if chunk.session else 0
    assert len(raw) == HEADER_BYTES + session_bytes + len(chunk.stream_id.encode()) + len(chunk.pcm)
    assert raw[7] == (1 if chunk.session else 0)  # the minor version
    assert decode_chunk(raw) == chunk
    samples = to_mono_float(chunk)
    assert samples.dtype == np.float32
    assert len(samples) == chunk.frames
    assert np.all(np.abs(samples) <= 1.0)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_rejected_without_raising(raw: bytes) -> None:
    result = decode_chunk(raw)
    assert isinstance(result, AudioChunk | Rejected)
    if isinstance(result, AudioChunk):
        assert encode_chunk(result) == raw


@given(chunks(), st.integers(1, 40))
def test_a_truncated_chunk_is_rejected(chunk: AudioChunk, cut: int) -> None:
    raw = encode_chunk(chunk)
    result = decode_chunk(raw[: max(0, len(raw) - cut)])
    assert isinstance(result, Rejected)
    assert result.reason in {"truncated", "wrong_length", "bad_stream_id"}


@given(chunks())
def test_accept_checks_rate_length_and_key(chunk: AudioChunk) -> None:
    raw = encode_chunk(chunk)
    key = chunk.stream_id.encode()
    result = accept_chunk(raw, key, 16000, 32)
    if chunk.sample_rate != 16000:
        assert isinstance(result, Rejected)
        assert result.reason == "wrong_sample_rate"
    elif not 0 < chunk.frames <= 32:
        assert isinstance(result, Rejected)
        assert result.reason == "wrong_length"
    else:
        assert result == chunk
        other = accept_chunk(raw, key + b"x", 16000, 32)
        assert isinstance(other, Rejected)
        assert other.reason == "key_mismatch"


def test_header_fields_are_checked() -> None:
    good = encode_chunk(AudioChunk("m", 0, 16000, 1, "float32", 0, np.zeros(2, "<f4").tobytes()))
    assert decode_chunk(b"XXXX" + good[4:]).reason == "not_audio_chunk"  # type: ignore[union-attr]
    assert decode_chunk(good[:4] + b"\x02" + good[5:]).reason == "unsupported_version"  # type: ignore[union-attr]
    assert decode_chunk(good[:5] + b"\x09" + good[6:]).reason == "unknown_format"  # type: ignore[union-attr]
    assert decode_chunk(good[:6] + b"\x00" + good[7:]).reason == "bad_channels"  # type: ignore[union-attr]
    nan = good[:-4] + struct.pack("<f", float("nan"))
    assert decode_chunk(nan).reason == "bad_samples"  # type: ignore[union-attr]
    assert accept_chunk(None, b"m", 16000, 10).reason == "empty"  # type: ignore[union-attr]


def encode_1_0(chunk: AudioChunk) -> bytes:
    """The envelope as a 1.0 producer writes it (byte 7 reserved, 0; no session)."""
    sid = chunk.stream_id.encode()
    codes = {"int16": 1, "float32": 2}
    header = struct.pack(
        "<4sBBBBIIQqH",
        b"SWAC",
        1,
        codes[chunk.sample_format],
        chunk.channels,
        0,
        chunk.sample_rate,
        chunk.frames,
        chunk.seq,
        chunk.capture_ns,
        len(sid),
    )
    return header + sid + chunk.pcm


@given(chunks())
def test_a_1_0_envelope_reads_as_session_0_and_session_0_writes_1_0(chunk: AudioChunk) -> None:
    old = encode_1_0(chunk)
    decoded = decode_chunk(old)
    assert isinstance(decoded, AudioChunk)
    assert decoded.session == 0
    assert decoded == AudioChunk(
        chunk.stream_id,
        chunk.seq,
        chunk.sample_rate,
        chunk.channels,
        chunk.sample_format,
        chunk.capture_ns,
        chunk.pcm,
    )
    assert encode_chunk(decoded) == old


def test_the_session_is_checked() -> None:
    pcm = np.zeros(2, "<i2").tobytes()
    good = encode_chunk(AudioChunk("m", 0, 16000, 1, "int16", 0, pcm, session=7))
    assert decode_chunk(good[:7] + b"\x02" + good[8:]).reason == "unsupported_version"  # type: ignore[union-attr]
    zero = good[:HEADER_BYTES] + b"\0" * SESSION_BYTES + good[HEADER_BYTES + SESSION_BYTES :]
    assert decode_chunk(zero).reason == "bad_session"  # type: ignore[union-attr]
    assert decode_chunk(good[: HEADER_BYTES + 4]).reason == "truncated"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="session"):
        encode_chunk(AudioChunk("m", 0, 16000, 1, "int16", 0, pcm, session=2**64))
    with pytest.raises(ValueError, match="session"):
        encode_chunk(AudioChunk("m", 0, 16000, 1, "int16", 0, pcm, session=-1))
