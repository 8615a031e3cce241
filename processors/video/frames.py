"""The ``video-frame/1`` envelope: a JSON header and the encoded image, in one message.

Layout: the 4 magic bytes ``SWVF``, the header length as a 4-byte big-endian unsigned
integer, the UTF-8 JSON header, then the image bytes (JPEG by default)::

    {"schema": "video-frame/1", "camera_id": "cam0", "frame_no": 17,
     "capture_time": "2026-01-01T00:00:00.040Z", "encoding": "jpeg",
     "width": 640, "height": 480}

The key of the message is the camera id. Decoding never raises: a bad envelope is a
:class:`~processors.common.schemas.Rejected` that says why. The image itself is decoded later, off
the event loop, where a size that disagrees with the header is rejected too.

>>> from datetime import UTC, datetime
>>> frame = VideoFrame("cam0", 1, datetime(2026, 1, 1, tzinfo=UTC), "jpeg", 4, 2, b"...")
>>> decode_frame(encode_frame(frame)) == frame
True
>>> decode_frame(b"not a frame").reason
'bad_envelope'
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from processors.common.schemas import Rejected, format_time, parse_time

__all__ = ["ENCODINGS", "FRAME_SCHEMA", "MAGIC", "VideoFrame", "decode_frame", "encode_frame"]

FRAME_SCHEMA: Final = "video-frame/1"
MAGIC: Final = b"SWVF"
ENCODINGS: Final = ("jpeg", "png")
MAX_SIDE: Final = 8192
_HEADER: Final = struct.Struct(">4sI")
_MAX_HEADER: Final = 4096
_CAMERA_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One camera frame: where and when it was taken, and its encoded image."""

    camera_id: str
    frame_no: int
    capture_time: datetime
    encoding: str
    width: int
    height: int
    image: bytes

    def header(self) -> dict[str, Any]:
        return {
            "schema": FRAME_SCHEMA,
            "camera_id": self.camera_id,
            "frame_no": self.frame_no,
            "capture_time": format_time(self.capture_time),
            "encoding": self.encoding,
            "width": self.width,
            "height": self.height,
        }


def encode_frame(frame: VideoFrame) -> bytes:
    """The wire form of ``frame``."""
    header = orjson.dumps(frame.header())
    return _HEADER.pack(MAGIC, len(header)) + header + frame.image


def _bounded(data: dict[str, Any], name: str, lower: int, upper: int) -> int | Rejected:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejected("bad_type", f"field {name!r} must be an integer, got {value!r:.40}")
    if not lower <= value <= upper:
        return Rejected("bad_value", f"field {name!r} must be in [{lower}, {upper}], got {value}")
    return value


def decode_frame(raw: bytes) -> VideoFrame | Rejected:
    """Parse and validate an envelope; the image bytes are kept as they are."""
    if len(raw) < _HEADER.size or raw[:4] != MAGIC:
        return Rejected("bad_envelope", "message does not start with the SWVF magic")
    _, length = _HEADER.unpack_from(raw)
    if length > _MAX_HEADER or _HEADER.size + length > len(raw):
        return Rejected("bad_envelope", f"header length {length} is out of range")
    try:
        data = orjson.loads(raw[_HEADER.size : _HEADER.size + length])
    except orjson.JSONDecodeError as exc:
        return Rejected("invalid_json", str(exc)[:200])
    if not isinstance(data, dict):
        return Rejected("invalid_json", f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if not isinstance(schema, str) or schema.split("/")[0] != "video-frame":
        return Rejected("wrong_schema", f"expected {FRAME_SCHEMA}, got {schema!r:.40}")
    if schema != FRAME_SCHEMA:
        return Rejected("unsupported_version", f"expected {FRAME_SCHEMA}, got {schema!r:.40}")
    camera = data.get("camera_id")
    if not isinstance(camera, str) or not _CAMERA_ID.match(camera):
        return Rejected("bad_camera_id", f"camera_id must match {_CAMERA_ID.pattern}")
    encoding = data.get("encoding")
    if encoding not in ENCODINGS:
        return Rejected(
            "bad_encoding", f"encoding must be one of {ENCODINGS}, got {encoding!r:.40}"
        )
    fields: list[int] = []
    for name, lower, upper in (
        ("frame_no", 0, 2**62),
        ("width", 1, MAX_SIDE),
        ("height", 1, MAX_SIDE),
    ):
        value = _bounded(data, name, lower, upper)
        if isinstance(value, Rejected):
            return value
        fields.append(value)
    captured = parse_time(data.get("capture_time"))
    if isinstance(captured, Rejected):
        return Rejected(captured.reason, f"field 'capture_time': {captured.detail}")
    image = raw[_HEADER.size + length :]
    if not image:
        return Rejected("empty_image", "the envelope carries no image bytes")
    return VideoFrame(camera, fields[0], captured, encoding, fields[1], fields[2], image)
