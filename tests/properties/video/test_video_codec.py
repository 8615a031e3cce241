"""The ``video-frame/1`` envelope: round trips, and never raises on any bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from processors.common.schemas import Rejected
from processors.video.frames import MAGIC, VideoFrame, decode_frame, encode_frame

cameras = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
frames = st.builds(
    VideoFrame,
    camera_id=cameras,
    frame_no=st.integers(0, 2**62),
    capture_time=times,
    encoding=st.sampled_from(["jpeg", "png"]),
    width=st.integers(1, 8192),
    height=st.integers(1, 8192),
    image=st.binary(min_size=1, max_size=2048),
)


@given(frames)
def test_round_trip(frame: VideoFrame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_rejected(raw: bytes) -> None:
    assert isinstance(decode_frame(raw), VideoFrame | Rejected)


@given(st.binary(max_size=256))
def test_any_bytes_after_the_magic_decode_or_are_rejected(rest: bytes) -> None:
    assert isinstance(decode_frame(MAGIC + rest), VideoFrame | Rejected)


@given(frames, st.integers(0, 200))
def test_a_truncated_envelope_is_rejected_not_misread(frame: VideoFrame, cut: int) -> None:
    raw = encode_frame(frame)
    header_end = raw.index(b"}") + 1
    result = decode_frame(raw[: min(cut, header_end)])
    assert isinstance(result, Rejected)


@given(
    frames,
    st.sampled_from(["camera_id", "frame_no", "capture_time", "encoding", "width", "height"]),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 0), st.text(max_size=5), st.floats()),
)
def test_a_bad_field_is_rejected_with_a_reason(frame: VideoFrame, name: str, bad: object) -> None:
    header = frame.header() | {name: bad}
    body = orjson.dumps(header)
    raw = MAGIC + len(body).to_bytes(4, "big") + body + frame.image
    result = decode_frame(raw)
    if isinstance(result, VideoFrame):  # some replacements are still valid values
        assert name != "capture_time"
        assert getattr(result, name) == bad
    else:
        assert result.reason
        assert result.detail
