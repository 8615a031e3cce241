"""Batch formatting equals the per-value calls it replaces, bit for bit."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.common.formatting import format_epoch_ms, round_like_python
from processors.common.schemas import format_time

# Values like the features: any double, cents and their means, counts and their fractions
# (k / n has exact ties such as 1/128 = 0.0078125), and decimals right at the sixth digit.
doubles = st.floats(allow_nan=True, allow_infinity=True, width=64)
fractions = st.tuples(st.integers(0, 10_000), st.integers(1, 4096)).map(lambda t: t[0] / t[1])
cents = st.lists(st.integers(0, 10_000_000), min_size=1, max_size=40).map(
    lambda c: math.fsum(v / 100 for v in c) / len(c)
)
near_ties = st.tuples(st.integers(-(10**12), 10**12), st.sampled_from([-1, 0, 1])).map(
    lambda t: (t[0] + 0.5) / 1e6 + t[1] * 1e-18
)
values = st.one_of(doubles, fractions, cents, near_ties)


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


@settings(max_examples=500)
@given(st.lists(values, min_size=1, max_size=40), st.integers(0, 8))
def test_rounding_a_batch_is_python_round_of_each_value(xs: list[float], digits: int) -> None:
    got = round_like_python(np.array(xs, dtype=np.float64), digits).tolist()
    want = [round(v, digits) for v in xs]
    assert [_bits(v) for v in got] == [_bits(v) for v in want]


def test_rounding_keeps_the_shape_of_a_matrix() -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    assert round_like_python(x, 6).tolist() == [[round(v, 6) for v in row] for row in x.tolist()]


@settings(max_examples=500)
@given(st.integers(-(10**13), 10**14))
def test_epoch_milliseconds_format_like_format_time(ms: int) -> None:
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert format_epoch_ms(ms) == format_time(instant)
