"""Formatting numbers and times for output records, a whole batch at a time.

Predictions carry their features and scores rounded to six decimals, exactly as Python's
``round(v, 6)`` rounds them, and their event time as RFC 3339 text. Per value those are
among the dearest calls of the scorer (``round`` with digits converts through a decimal
string: about 0.6 µs a value, 15 features a payment), so this module does them per batch.

:func:`round_like_python` rounds a float array with numpy and checks its own work: with
``p = x * 10**d`` and ``y = rint(p)``, ``y / 10**d`` is the double nearest to the decimal
``y * 10**-d`` (``y`` and ``10**d`` are exact doubles, and IEEE division rounds correctly),
which is what ``round`` returns, *if* ``y`` is the integer ``round`` picks. It is, unless the
exact ``x * 10**d`` is within the product's rounding error of a half (a tie, or nearly one),
or ``x`` is too large for that error to be small; those values (and non-finite ones) are
rounded by ``round`` itself.

>>> round_like_python(np.array([0.0078125, 2.675, 1e-7, -1.23456789, 40.0]), 6).tolist()
[0.007812, 2.675, 0.0, -1.234568, 40.0]
>>> format_epoch_ms(1_522_541_276_007)
'2018-04-01T00:07:56.007Z'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["epoch_ms", "format_epoch_ms", "round_like_python"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Below 1e14 (< 2**47) the product x * 10**d is off by at most 2**-6 from the exact one;
# products within 0.05 of a half, or larger, are left to ``round``.
_SAFE_PRODUCT = 1e14
_TIE_MARGIN = 0.05


def round_like_python(values: npt.NDArray[np.float64], digits: int) -> npt.NDArray[np.float64]:
    """``round(v, digits)`` of every element (bit for bit), as a new float64 array."""
    if not 0 <= digits <= 8:
        raise ValueError("digits must be between 0 and 8")
    x = np.asarray(values, dtype=np.float64)
    scale = float(10**digits)
    with np.errstate(invalid="ignore", over="ignore"):
        p = x * scale
        y = np.rint(p)
        result = y / scale
        unsure = ~(np.abs(p) < _SAFE_PRODUCT)  # also NaN and infinities
        unsure |= np.abs(np.abs(p - y) - 0.5) < _TIE_MARGIN
    if unsure.any():
        flat = result.reshape(-1)
        for i in np.flatnonzero(unsure.reshape(-1)).tolist():
            flat[i] = round(float(x.reshape(-1)[i]), digits)
    return result


_DAYS: dict[int, str] = {}
_MINUTES = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]  # of a day
_SECONDS = [f"{s:02d}." for s in range(60)]
_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (exact, no float rounding): the
    inverse of :func:`format_epoch_ms` to the millisecond."""
    delta = value - _EPOCH  # days, seconds, microseconds
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def format_epoch_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds of epoch milliseconds (``processors.common.schemas
    .format_time`` of the same instant), from the date's text (remembered per day) and
    tables of the minutes of a day, seconds and milliseconds."""
    days, rest = divmod(ms, 86_400_000)
    head = _DAYS.get(days)
    if head is None:
        if len(_DAYS) > 10_000:
            _DAYS.clear()
        head = _DAYS[days] = (_EPOCH + timedelta(days=days)).isoformat()[:11]  # "YYYY-MM-DDT"
    minute, rest = divmod(rest, 60_000)
    second, millis = divmod(rest, 1000)
    return head + _MINUTES[minute] + _SECONDS[second] + _MILLIS[millis]
