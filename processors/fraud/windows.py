"""Per-customer and per-terminal sliding windows for the Fraud Detection Handbook features.

State is a short time-sorted list of the entity's own events still inside the horizon (the
longest window, plus the label delay for terminals, plus the grace period). Windows are
millisecond-exact, which day buckets are not at their edges; with the handbook's rates (a
customer makes at most about four payments a day, a terminal sees about one) a customer holds
about 60 events (16 bytes each when packed) and a terminal about 40 (24 bytes each). An entity
with thousands of events a day would want day buckets plus raw events near the window edges
instead. One event is one insertion (an append when in order) and one eviction of the events
that fell out of the horizon; the 1, 7 and 30-day windows are read from the same list with a
binary search each, not kept as separate states.

Exactness: counts are integers; sums use :func:`math.fsum`, the correctly rounded sum, so a
mean does not depend on the order the amounts are added in and a batch computation that also
uses ``fsum`` agrees with ``==``.

Out-of-order events: an event at most ``grace_ms`` older than the newest event of the entity
is inserted in time order; its features count the events already held with a time up to its
own (ties: those that arrived first). Features already returned for later events are not
revised. An older event is :class:`Late`, returned rather than raised, and is not recorded.

>>> config = FeatureConfig()
>>> customer = CustomerWindow()
>>> customer.add(0, 10.0, config)
[1.0, 10.0, 1.0, 10.0, 1.0, 10.0]
>>> customer.add(DAY_MS, 20.0, config)  # the first payment is exactly one day old: out of 1d
[1.0, 20.0, 2.0, 15.0, 2.0, 15.0]
>>> terminal = TerminalWindow()
>>> terminal.add_transaction(1, 0, config)
[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
>>> terminal.add_label(1, None, 7 * DAY_MS, True, config)
'applied'
>>> terminal.add_transaction(2, 7 * DAY_MS, config)  # tx 1 is exactly one delay old
[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import pairwise
from typing import Any, Final, Literal

__all__ = [
    "DAY_MS",
    "CustomerWindow",
    "FeatureConfig",
    "LabelStatus",
    "Late",
    "TerminalWindow",
]

DAY_MS: Final = 86_400_000
LabelStatus = Literal["applied", "early", "expired", "duplicate"]

_FORMAT_VERSION: Final = 1
_EARLY_VERSION: Final = 2  # a terminal window with labels waiting for their payments
_HEADER = struct.Struct("<BI")  # format version, number of events
_COUNT = struct.Struct("<I")
_UNLABELLED: Final = 2**63 - 1  # ``label_at`` of a transaction without a label yet
_GENUINE: Final = 2**63 - 2  # ``label_at`` of a transaction labelled genuine
_LITTLE: Final = sys.byteorder == "little"


def _le(values: array[Any]) -> bytes:
    """The array's items as little-endian bytes (a copy of its memory on most machines)."""
    if _LITTLE:
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _from_le(typecode: str, raw: bytes, start: int, count: int) -> array[Any]:
    """``count`` little-endian 8-byte items of ``raw`` from ``start``, as an array."""
    values = array(typecode)
    values.frombytes(raw[start : start + 8 * count])
    if not _LITTLE:
        values.byteswap()
    return values


@dataclass(frozen=True)
class FeatureConfig:
    """Window lengths (days, increasing), label delay and out-of-order grace (milliseconds)."""

    windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_ms: int = 7 * DAY_MS
    grace_ms: int = 3_600_000

    def __post_init__(self) -> None:
        """Reject settings the windows cannot honour."""
        days = self.windows_days
        if not days or days[0] < 1 or any(b <= a for a, b in pairwise(days)):
            raise ValueError("windows_days must be positive and strictly increasing")
        if self.label_delay_ms < 1:
            raise ValueError("label_delay_ms must be positive")
        if self.grace_ms < 0:
            raise ValueError("grace_ms must not be negative")

    @cached_property
    def windows_ms(self) -> tuple[int, ...]:
        """The windows in milliseconds."""
        return tuple(d * DAY_MS for d in self.windows_days)

    @cached_property
    def customer_horizon_ms(self) -> int:
        """How far behind its newest event a customer event can still be in a window."""
        return self.windows_ms[-1] + self.grace_ms

    @cached_property
    def terminal_horizon_ms(self) -> int:
        """How far behind its newest event a terminal event can still be in a window."""
        return self.label_delay_ms + self.windows_ms[-1] + self.grace_ms


@dataclass(frozen=True)
class Late:
    """An event older than the entity's newest minus the grace period: not recorded."""

    by_ms: int
    newest_ms: int
    detail: str


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(ms: int) -> str:
    """``2018-04-03T10:00:00Z``, with ``.mmm`` only when the milliseconds are not zero."""
    text = (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def _span(ms: int) -> str:
    """``2h13m``, ``1d``, ``250ms``: the non-zero units of a duration."""
    parts = []
    for unit, name in ((DAY_MS, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")):
        count, ms = divmod(ms, unit)
        if count:
            parts.append(f"{count}{name}")
    return "".join(parts) or "0ms"


def _late(event_ms: int, newest_ms: int, grace_ms: int) -> Late:
    by_ms = newest_ms - grace_ms - event_ms
    detail = (
        f"event {_iso(event_ms)} is {_span(newest_ms - event_ms)} behind the newest "
        f"{_iso(newest_ms)} of its key, {_span(by_ms)} beyond the {_span(grace_ms)} grace"
    )
    return Late(by_ms, newest_ms, detail)


def _unpack(raw: bytes, width: int, early: bool = False) -> tuple[int, int, int]:
    """Events and early labels in a packed state, checking the version and the length;
    early labels (24 bytes each) only where ``early`` allows them (terminal windows)."""
    if len(raw) < _HEADER.size:
        raise ValueError("window state too short")
    version, count = _HEADER.unpack_from(raw)
    size = _HEADER.size + count * width
    if version == _FORMAT_VERSION and len(raw) == size:
        return count, 0, _HEADER.size
    if early and version == _EARLY_VERSION and len(raw) >= size + _COUNT.size:
        (waiting,) = _COUNT.unpack_from(raw, size)
        if len(raw) == size + _COUNT.size + 24 * waiting:
            return count, waiting, _HEADER.size
    raise ValueError(f"not a version {_FORMAT_VERSION} window state of {width}-byte events")


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
            return _late(tx_time_ms, times[-1], config.grace_ms)
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
        header = _HEADER.pack(_FORMAT_VERSION, len(self._times))
        return header + _le(self._times) + _le(self._amounts)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> CustomerWindow:
        """Restore :meth:`to_bytes` output; ``None`` (a key not in the table yet) is empty."""
        if raw is None:
            return cls()
        n, _, offset = _unpack(raw, 16)
        window = cls()
        window._times = _from_le("q", raw, offset, n)
        window._amounts = _from_le("d", raw, offset + 8 * n, n)
        return window


class TerminalWindow:
    """A terminal's recent transactions: times (sorted), tx ids and what their label says.

    ``label_at`` holds, per transaction, the label time of a fraud label, or a sentinel for
    "labelled genuine" or "no label yet"; a fraud counts at time ``t`` if its label time is
    ``<= t``. All three are arrays of 64-bit integers (see :class:`CustomerWindow`).

    A label for a transaction not seen yet, and not beyond the horizon, is kept (``early``)
    until its transaction arrives, which then records it: when labels are replayed beside
    their payments, the labels topic can be read ahead of the payments. A label's time is what
    counts, not when it was applied, so the features are the same either way. Early labels
    leave the window with the horizon (a payment precedes its label).
    """

    __slots__ = ("_early", "_ids", "_label_at", "_times")

    def __init__(
        self,
        times: Sequence[int] | None = None,
        ids: Sequence[int] | None = None,
        label_at: Sequence[int] | None = None,
    ) -> None:
        self._times: array[int] = array("q", times if times is not None else ())
        self._ids: array[int] = array("q", ids if ids is not None else ())
        self._label_at: array[int] = array("q", label_at if label_at is not None else ())
        # tx id -> (label_at, label time) of a label that came before its transaction
        self._early: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._times)

    @property
    def early_labels(self) -> int:
        """Labels held for transactions not seen yet."""
        return len(self._early)

    def __contains__(self, tx_id: object) -> bool:
        """Whether the transaction is held (seen, and still inside the horizon)."""
        return tx_id in self._ids

    def transaction_ids(self) -> list[int]:
        """The ids of the transactions held, in time order."""
        return self._ids.tolist()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TerminalWindow):
            return NotImplemented
        return (self._times, self._ids, self._label_at, self._early) == (
            other._times,
            other._ids,
            other._label_at,
            other._early,
        )

    def __repr__(self) -> str:
        return f"TerminalWindow(events={len(self._times)})"

    def add_transaction(
        self, tx_id: int, tx_time_ms: int, config: FeatureConfig
    ) -> list[float] | Late:
        """Record a transaction (once per ``tx_id``, with its label if that came first:
        :meth:`early_label`); ``[nb, risk]`` per window.

        A window covers ``(t - delay - w, t - delay]``; risk is the share of its transactions
        with a fraud label received by ``t`` (0 when the window is empty).
        """
        times = self._times
        if times and tx_time_ms < times[-1] - config.grace_ms:
            return _late(tx_time_ms, times[-1], config.grace_ms)
        if tx_id not in self._ids:
            self._record(tx_id, tx_time_ms, config)
        return self._features(tx_time_ms, config)

    def _record(self, tx_id: int, tx_time_ms: int, config: FeatureConfig) -> None:
        times, ids, label_at = self._times, self._ids, self._label_at
        label = self._early.pop(tx_id, (_UNLABELLED, 0))[0] if self._early else _UNLABELLED
        if not times or tx_time_ms >= times[-1]:
            times.append(tx_time_ms)
            ids.append(tx_id)
            label_at.append(label)
            cutoff = tx_time_ms - config.terminal_horizon_ms
            if times[0] <= cutoff:
                gone = bisect_right(times, cutoff)
                del times[:gone], ids[:gone], label_at[:gone]
            if self._early:
                self._expire_early(cutoff)
        else:
            at = bisect_right(times, tx_time_ms)
            times.insert(at, tx_time_ms)
            ids.insert(at, tx_id)
            label_at.insert(at, label)

    def early_label(self, tx_id: int) -> bool | None:
        """Whether the label that came before ``tx_id`` says fraud, or ``None`` if none did
        (:meth:`add_transaction` records the two together)."""
        entry = self._early.get(tx_id)
        return None if entry is None else entry[0] != _GENUINE

    def _expire_early(self, cutoff_ms: int) -> None:
        """Drop early labels whose label time is at or before ``cutoff_ms``: their payment,
        no later than its label, would be beyond the horizon."""
        gone = [tx for tx, (_, label_ms) in self._early.items() if label_ms <= cutoff_ms]
        for tx in gone:
            del self._early[tx]

    def _features(self, now_ms: int, config: FeatureConfig) -> list[float]:
        times, label_at = self._times, self._label_at
        edge = now_ms - config.label_delay_ms
        end = bisect_right(times, edge)
        starts = [bisect_right(times, edge - w, 0, end) for w in config.windows_ms]
        widest = label_at[starts[-1] : end]
        any_fraud = bool(widest) and min(widest) <= now_ms
        features: list[float] = []
        for start in starts:
            count = end - start
            frauds = sum(1 for at in label_at[start:end] if at <= now_ms) if any_fraud else 0
            features += (float(count), frauds / count if count else 0.0)
        return features

    def add_label(
        self,
        tx_id: int,
        tx_time_ms: int | None,
        label_time_ms: int,
        is_fraud: bool,
        config: FeatureConfig,
    ) -> LabelStatus:
        """Attach a label to a held transaction; the first label of a transaction wins.

        ``tx_time_ms`` (when the caller knows it) only speeds up the search; ``tx_id``
        decides. A transaction not held is ``"expired"`` if its time (or, when unknown,
        ``label_time_ms - label_delay_ms``) is beyond the horizon, else ``"early"``: the label
        is kept until the transaction arrives (or the horizon passes the label's time).
        """
        at = self._find(tx_id, tx_time_ms)
        label = label_time_ms if is_fraud else _GENUINE
        if at < 0:
            when = label_time_ms - config.label_delay_ms if tx_time_ms is None else tx_time_ms
            times = self._times
            expired = bool(times) and when <= times[-1] - config.terminal_horizon_ms
            if expired:
                return "expired"
            if tx_id in self._early:
                return "duplicate"
            self._early[tx_id] = (label, label_time_ms)
            return "early"
        if self._label_at[at] != _UNLABELLED:
            return "duplicate"
        self._label_at[at] = label
        return "applied"

    def _find(self, tx_id: int, tx_time_ms: int | None) -> int:
        ids = self._ids
        if tx_time_ms is not None:
            lo = bisect_left(self._times, tx_time_ms)
            hi = bisect_right(self._times, tx_time_ms, lo)
            for at in range(lo, hi):
                if ids[at] == tx_id:
                    return at
        try:
            return ids.index(tx_id)
        except ValueError:
            return -1

    def to_bytes(self) -> bytes:
        """Packed little-endian form: header, int64 times, int64 tx ids, int64 label times;
        with early labels (format 2) then their number, tx ids and ``label_at`` values, and
        label times."""
        early = self._early
        version = _EARLY_VERSION if early else _FORMAT_VERSION
        header = _HEADER.pack(version, len(self._times))
        packed = header + _le(self._times) + _le(self._ids) + _le(self._label_at)
        if not early:
            return packed
        ids = array("q", early)
        labels = array("q", [label for label, _ in early.values()])
        times = array("q", [at for _, at in early.values()])
        return packed + _COUNT.pack(len(early)) + _le(ids) + _le(labels) + _le(times)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> TerminalWindow:
        """Restore :meth:`to_bytes` output; ``None`` (a key not in the table yet) is empty."""
        if raw is None:
            return cls()
        n, waiting, offset = _unpack(raw, 24, early=True)
        window = cls()
        window._times = _from_le("q", raw, offset, n)
        window._ids = _from_le("q", raw, offset + 8 * n, n)
        window._label_at = _from_le("q", raw, offset + 16 * n, n)
        if waiting:
            at = offset + 24 * n + _COUNT.size
            ids = _from_le("q", raw, at, waiting)
            labels = _from_le("q", raw, at + 8 * waiting, waiting)
            times = _from_le("q", raw, at + 16 * waiting, waiting)
            window._early = {
                tx: (label, t) for tx, label, t in zip(ids, labels, times, strict=True)
            }
        return window
