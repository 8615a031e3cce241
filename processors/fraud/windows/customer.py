"""A customer's sliding window: its recent payments' times and amounts, and the number and
mean amount of payments in each window (:meth:`CustomerWindow.add`)."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Sequence

from processors.fraud.windows.codec import FORMAT_VERSION, HEADER, from_le, to_le, unpack
from processors.fraud.windows.config import FeatureConfig, Late, late

__all__ = ["CustomerWindow"]


class CustomerWindow:
    """A customer's recent payments: times (sorted) and amounts.

    Both are arrays of 64-bit numbers, so the packed form is two copies of their memory and a
    window takes 16 bytes a payment in memory too.

    Duplicates are not detected here (a payment carries no id in this state): a transaction
    delivered twice is counted twice, so deduplicate upstream (``TerminalWindow`` reports
    whether it already holds a ``tx_id``).
    """

    __slots__ = ("_amounts", "_times")

    def __init__(
        self, times: Sequence[int] | None = None, amounts: Sequence[float] | None = None
    ) -> None:
        self._times: array[int] = array("q", times if times is not None else ())
        self._amounts: array[float] = array("d", amounts if amounts is not None else ())

    def __len__(self) -> int:
        return len(self._times)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CustomerWindow):
            return NotImplemented
        return self._times == other._times and self._amounts == other._amounts

    def __repr__(self) -> str:
        return f"CustomerWindow(events={len(self._times)})"

    def add(self, tx_time_ms: int, amount: float, config: FeatureConfig) -> list[float] | Late:
        """Record a payment; ``[nb, mean amount]`` per window ``(t - w, t]``, itself included."""
        times, amounts = self._times, self._amounts
        if not times or tx_time_ms >= times[-1]:
            times.append(tx_time_ms)
            amounts.append(amount)
            cutoff = tx_time_ms - config.customer_horizon_ms
            if times[0] <= cutoff:
                gone = bisect_right(times, cutoff)
                del times[:gone], amounts[:gone]
            end = len(times)
        elif tx_time_ms < times[-1] - config.grace_ms:
            return late(tx_time_ms, times[-1], config.grace_ms)
        else:
            end = bisect_right(times, tx_time_ms)
            times.insert(end, tx_time_ms)
            amounts.insert(end, amount)
            end += 1
        features: list[float] = []
        for window in config.windows_ms:
            start = bisect_right(times, tx_time_ms - window, 0, end)
            count = end - start
            features += (float(count), math.fsum(amounts[start:end]) / count)
        return features

    def to_bytes(self) -> bytes:
        """Packed little-endian form: header, int64 times, float64 amounts."""
        header = HEADER.pack(FORMAT_VERSION, len(self._times))
        return header + to_le(self._times) + to_le(self._amounts)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> CustomerWindow:
        """Restore :meth:`to_bytes` output; ``None`` (a key not in the table yet) is empty."""
        if raw is None:
            return cls()
        n, _, offset = unpack(raw, 16)
        window = cls()
        window._times = from_le("q", raw, offset, n)
        window._amounts = from_le("d", raw, offset + 8 * n, n)
        return window
