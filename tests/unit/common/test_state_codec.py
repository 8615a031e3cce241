"""The data-only state format: what it stores comes back exactly; anything else is refused."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from processors.common.state_codec import MAGIC, MAX_BYTES, StateCodecError, pack, unpack

DTYPES = ["bool", "uint8", "int16", "int32", "int64", "uint32", "float32", "float64"]

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text()
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
)
values = st.recursive(
    scalars | arrays,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, list | tuple):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(st.dictionaries(st.text(max_size=8), values, max_size=5))
def test_what_is_packed_comes_back_exactly(state: dict[str, object]) -> None:
    assert same(state, unpack(pack("kind", 3, state), "kind", 3))


def test_arrays_come_back_writable() -> None:
    state = unpack(pack("k", 1, {"a": np.arange(4, dtype=np.int32)}), "k", 1)
    state["a"][0] = 7
    assert state["a"].tolist() == [7, 1, 2, 3]


@pytest.mark.parametrize(
    ("kind", "version", "why"),
    [("other", 1, "a 'k' state, not 'other'"), ("k", 2, "version 1, this release reads 2")],
)
def test_another_kind_or_version_is_refused(kind: str, version: int, why: str) -> None:
    with pytest.raises(StateCodecError, match=why):
        unpack(pack("k", 1, {"x": 1}), kind, version)


def test_damaged_or_foreign_bytes_are_refused() -> None:
    raw = bytearray(pack("k", 1, {"x": list(range(50))}))
    raw[-3] ^= 0xFF
    with pytest.raises(StateCodecError, match="sha256"):
        unpack(bytes(raw), "k", 1)
    with pytest.raises(StateCodecError, match="not a streamwise state"):
        unpack(b"\x80\x04" + bytes(100), "k", 1)  # a pickle's opening bytes
    with pytest.raises(StateCodecError, match="too short"):
        unpack(MAGIC, "k", 1)


def _forged(body_json: bytes, kind: str = "k") -> bytes:
    """A well-formed header around ``body_json``: what a writer of the topic could send."""
    import hashlib

    body = zlib.compress(body_json)
    header = struct.pack("<8s24sI32s", MAGIC, kind.encode(), 1, hashlib.sha256(body).digest())
    return header + body


def test_a_body_that_inflates_too_far_is_refused() -> None:
    with pytest.raises(StateCodecError, match="inflates past"):
        unpack(_forged(b"[" + b"0," * (MAX_BYTES // 2) + b"0]"), "k", 1)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": {"__ndarray__": "object", "shape": [1], "data": ""}}',
        b'{"a": {"__ndarray__": "int32", "shape": [3], "data": "AAAA"}}',
        b'{"a": {"__ndarray__": "int32", "shape": [-1], "data": ""}}',
        b'{"a": {"__float__": "__import__(\'os\')"}}',
        b"[1, 2]",
        b"not json",
    ],
)
def test_forged_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(StateCodecError):
        unpack(_forged(body), "k", 1)


@pytest.mark.parametrize(
    "state",
    [{"f": object()}, {"a": np.array(["x"])}, {"n": {1: 2}}, {"__ndarray__": 1}],
)
def test_what_is_not_data_is_not_packed(state: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        pack("k", 1, state)
