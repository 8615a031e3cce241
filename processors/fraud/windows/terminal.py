"""A terminal's sliding window: its recent transactions, what their labels say, and the
number and fraud share of transactions in each delayed window
(:meth:`TerminalWindow.add_transaction`)."""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Final, Literal

from processors.fraud.windows.codec import (
    COUNT,
    EARLY_VERSION,
    FORMAT_VERSION,
    HEADER,
    from_le,
    to_le,
    unpack,
)
from processors.fraud.windows.config import FeatureConfig, Late, late

__all__ = ["LabelStatus", "TerminalWindow"]

LabelStatus = Literal["applied", "early", "expired", "duplicate"]

_UNLABELLED: Final = 2**63 - 1  # ``label_at`` of a transaction without a label yet
_GENUINE: Final = 2**63 - 2  # ``label_at`` of a transaction labelled genuine


class TerminalWindow:
    """A terminal's recent transactions: times (sorted), tx ids and what their label says.

    ``label_at`` holds, per transaction, the label time of a fraud label, or a sentinel for
    "labelled genuine" or "no label yet"; a fraud counts at time ``t`` if its label time is
    ``<= t``. All three are arrays of 64-bit integers (see
    :class:`~processors.fraud.windows.customer.CustomerWindow`).

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
            return late(tx_time_ms, times[-1], config.grace_ms)
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
        version = EARLY_VERSION if early else FORMAT_VERSION
        header = HEADER.pack(version, len(self._times))
        packed = header + to_le(self._times) + to_le(self._ids) + to_le(self._label_at)
        if not early:
            return packed
        ids = array("q", early)
        labels = array("q", [label for label, _ in early.values()])
        times = array("q", [at for _, at in early.values()])
        return packed + COUNT.pack(len(early)) + to_le(ids) + to_le(labels) + to_le(times)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> TerminalWindow:
        """Restore :meth:`to_bytes` output; ``None`` (a key not in the table yet) is empty."""
        if raw is None:
            return cls()
        n, waiting, offset = unpack(raw, 24, early=True)
        window = cls()
        window._times = from_le("q", raw, offset, n)
        window._ids = from_le("q", raw, offset + 8 * n, n)
        window._label_at = from_le("q", raw, offset + 16 * n, n)
        if waiting:
            at = offset + 24 * n + COUNT.size
            ids = from_le("q", raw, at, waiting)
            labels = from_le("q", raw, at + 8 * waiting, waiting)
            times = from_le("q", raw, at + 16 * waiting, waiting)
            window._early = {
                tx: (label, t) for tx, label, t in zip(ids, labels, times, strict=True)
            }
        return window
