"""A data-only format for checkpointed state: JSON with exact numpy arrays, checksummed.

State that leaves a worker (a stream's or a camera's state in a compacted topic) must be
data: reading it back never runs code, whoever wrote the topic. :func:`pack` writes a
nested structure of ``str``, ``int``, ``float``, ``bool``, ``None``, lists, string-keyed
dicts and numpy arrays (of a few plain dtypes) as JSON, arrays as dtype, shape and base64
bytes (exact, NaN and infinities included), compressed with zlib, behind a header that names
the state's kind and version and holds the sha256 of the body. :func:`unpack` refuses
anything else with :class:`StateCodecError`: another kind or version, a damaged body, a
body that inflates past :data:`MAX_BYTES`, an array whose bytes do not fit its shape.
The sha256 finds damage; safety comes from the format, not from the hash.

>>> import numpy as np
>>> raw = pack("demo", 1, {"n": 3, "w": np.arange(3, dtype=np.float32), "x": float("nan")})
>>> state = unpack(raw, "demo", 1)
>>> state["n"], state["w"].tolist(), state["x"] != state["x"]
(3, [0.0, 1.0, 2.0], True)
>>> unpack(raw, "other", 1)
Traceback (most recent call last):
...
processors.common.state_codec.StateCodecError: a 'demo' state, not 'other'
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import orjson

__all__ = ["MAGIC", "MAX_BYTES", "StateCodecError", "pack", "unpack"]

MAGIC: Final = b"SWSTATE1"
MAX_BYTES: Final = 64 * 1024 * 1024  # a body inflating past this is refused
_HEADER: Final = struct.Struct("<8s24sI32s")  # magic, kind (utf-8, padded), version, sha256
_DTYPES: Final = frozenset(
    {"bool", "uint8", "int16", "int32", "int64", "uint32", "float32", "float64"}
)
_ARRAY: Final = "__ndarray__"
_FLOAT: Final = "__float__"  # NaN and infinities, which JSON cannot write


class StateCodecError(ValueError):
    """Bytes that are not a state of the kind and version asked for, or a damaged one."""


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.name not in _DTYPES:
            raise TypeError(f"arrays of {value.dtype} are not storable")
        data = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False)
        return {
            _ARRAY: value.dtype.name,
            "shape": list(value.shape),
            "data": base64.b64encode(data.tobytes()).decode("ascii"),
        }
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else {_FLOAT: repr(number)}
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or key in (_ARRAY, _FLOAT):
                raise TypeError(f"state keys must be plain strings, not {key!r}")
            out[key] = _encode(item)
        return out
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    raise TypeError(f"{type(value).__name__} is not storable as state")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if _FLOAT in value:
        text = value[_FLOAT]
        if len(value) != 1 or text not in ("nan", "inf", "-inf"):
            raise StateCodecError(f"bad special float {value!r}")
        return float(text)
    if _ARRAY in value:
        return _array(value)
    return {key: _decode(item) for key, item in value.items()}


def _array(value: dict[str, Any]) -> np.ndarray[Any, Any]:
    dtype, shape, data = value.get(_ARRAY), value.get("shape"), value.get("data")
    if dtype not in _DTYPES or not isinstance(shape, list) or not isinstance(data, str):
        raise StateCodecError("bad array in state")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise StateCodecError(f"bad array shape {shape!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise StateCodecError(f"bad array bytes: {exc}") from exc
    kind = np.dtype(dtype).newbyteorder("<")
    if len(raw) != math.prod(shape) * kind.itemsize:
        raise StateCodecError(f"array bytes do not fill shape {shape} of {dtype}")
    return np.frombuffer(raw, dtype=kind).astype(dtype).reshape(shape)


def _kind_bytes(kind: str) -> bytes:
    encoded = kind.encode()
    if not encoded or len(encoded) > 24:
        raise ValueError(f"state kind {kind!r} must be 1 to 24 bytes")
    return encoded


def pack(kind: str, version: int, state: Mapping[str, Any]) -> bytes:
    """``state`` as bytes that :func:`unpack` reads back (``TypeError`` on what it cannot
    store: objects, non-string keys, other dtypes)."""
    body = zlib.compress(orjson.dumps(_encode(state)), 6)
    header = _HEADER.pack(MAGIC, _kind_bytes(kind), version, hashlib.sha256(body).digest())
    return header + body


def unpack(raw: bytes, kind: str, version: int) -> dict[str, Any]:
    """The state :func:`pack` wrote under ``kind`` and ``version``, arrays as writable
    numpy arrays; :class:`StateCodecError` for anything else."""
    if len(raw) < _HEADER.size:
        raise StateCodecError("too short for a state")
    magic, stored_kind, stored_version, digest = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise StateCodecError("not a streamwise state")
    name = stored_kind.rstrip(b"\0").decode("utf-8", "replace")
    if name != kind:
        raise StateCodecError(f"a {name!r} state, not {kind!r}")
    if stored_version != version:
        raise StateCodecError(
            f"{kind} state version {stored_version}, this release reads {version}"
        )
    body = raw[_HEADER.size :]
    if hashlib.sha256(body).digest() != digest:
        raise StateCodecError("damaged state (sha256 differs)")
    inflate = zlib.decompressobj()
    try:
        text = inflate.decompress(body, MAX_BYTES)
    except zlib.error as exc:
        raise StateCodecError(f"damaged state: {exc}") from exc
    if inflate.unconsumed_tail:
        raise StateCodecError(f"state inflates past {MAX_BYTES} bytes")
    try:
        state = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StateCodecError(f"damaged state JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise StateCodecError("a state is a JSON object")
    decoded: dict[str, Any] = _decode(state)
    return decoded
