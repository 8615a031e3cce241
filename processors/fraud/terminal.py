"""A terminal's state in a worker: its window and the features awaiting their labels.

Both are keyed by terminal, owned by the same partition and changed by the same batch, so a
worker keeps them as one object. They are stored apart: the window as one value a terminal
(:meth:`TerminalState.to_bytes` is the window's own format), each pending entry as one value a
transaction (:meth:`PendingFeatures.changes <processors.fraud.pending.PendingFeatures.changes>`),
so a payment writes one small row instead of rewriting every entry of its terminal. A state
read back from bytes has only its window (``pending_loaded`` false) until the caller restores
its entries: the window holds the id of every transaction that can still have one.

>>> from processors.fraud.windows import FeatureConfig
>>> state = TerminalState()
>>> state.window.add_transaction(1, 0, FeatureConfig())
[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
>>> state.pending.add(1, 0, [2.5])
>>> again = TerminalState.from_bytes(state.to_bytes())
>>> (len(again.window), len(again.pending), again.pending_loaded, again.transactions())
(1, 0, False, [1])
"""

from __future__ import annotations

from processors.fraud.pending import PendingFeatures
from processors.fraud.windows import TerminalWindow

__all__ = ["TerminalState"]


class TerminalState:
    """A terminal's :class:`TerminalWindow` and :class:`PendingFeatures`."""

    __slots__ = ("pending", "pending_loaded", "window")

    def __init__(
        self, window: TerminalWindow | None = None, pending: PendingFeatures | None = None
    ) -> None:
        self.window = window if window is not None else TerminalWindow()
        self.pending = pending if pending is not None else PendingFeatures()
        self.pending_loaded = True  # a new terminal has no entries stored anywhere

    def transactions(self) -> list[int]:
        """Ids of the transactions the window holds (any pending entry is one of them)."""
        return self.window.transaction_ids()

    def to_bytes(self) -> bytes:
        """The window's bytes: pending entries are stored a transaction at a time."""
        return self.window.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> TerminalState:
        """The window of :meth:`to_bytes` (``None``: a new terminal); its pending entries are
        not in ``raw`` and are to be restored by the caller."""
        state = cls(TerminalWindow.from_bytes(raw))
        state.pending_loaded = raw is None
        return state
