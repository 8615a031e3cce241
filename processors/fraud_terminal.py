"""A terminal's whole state: its window and the features awaiting their labels, one value.

Both are keyed by terminal, owned by the same partition, read and changed by the same batch;
kept as one table value they cost one changelog record and one store write per terminal and
batch instead of two.

Format 2: header (version 2, length of the window's bytes), the window's bytes
(:meth:`TerminalWindow.to_bytes <processors.fraud_windows.TerminalWindow.to_bytes>`), the
pending features' bytes (:meth:`PendingFeatures.to_bytes
<processors.fraud_pending.PendingFeatures.to_bytes>`). A value that starts with version 1 is
a bare window of an earlier release, whose pending features live in a table of their own:
:attr:`TerminalState.bare` is then true and the caller fills :attr:`TerminalState.pending`
from there.

>>> from processors.fraud_windows import FeatureConfig
>>> state = TerminalState()
>>> state.window.add_transaction(1, 0, FeatureConfig())
[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
>>> state.pending.add(1, 0, [2.5])
>>> again = TerminalState.from_bytes(state.to_bytes())
>>> (len(again.window), again.pending.get(1)[:2])
(1, (0, [2.5]))
"""

from __future__ import annotations

import struct
from typing import Final

from processors.fraud_pending import PendingFeatures
from processors.fraud_windows import TerminalWindow

__all__ = ["TerminalState"]

_HEADER = struct.Struct("<BI")  # format version, length of the window's bytes
_VERSION: Final = 2
_BARE_WINDOW: Final = 1  # the version byte of a TerminalWindow value of an earlier release


class TerminalState:
    """A terminal's :class:`TerminalWindow` and :class:`PendingFeatures`."""

    __slots__ = ("bare", "pending", "window")

    def __init__(
        self, window: TerminalWindow | None = None, pending: PendingFeatures | None = None
    ) -> None:
        self.window = window if window is not None else TerminalWindow()
        self.pending = pending if pending is not None else PendingFeatures()
        self.bare = False  # read from a bare window: pending features are elsewhere

    def to_bytes(self) -> bytes:
        window = self.window.to_bytes()
        return _HEADER.pack(_VERSION, len(window)) + window + self.pending.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> TerminalState:
        """Restore :meth:`to_bytes`; ``None`` is an empty terminal, a bare window of an
        earlier release comes back ``bare``, with empty pending features."""
        if raw is None:
            return cls()
        if raw[:1] == bytes([_BARE_WINDOW]):
            state = cls(TerminalWindow.from_bytes(raw))
            state.bare = True
            return state
        if len(raw) < _HEADER.size:
            raise ValueError("terminal state too short")
        version, size = _HEADER.unpack_from(raw)
        end = _HEADER.size + size
        if version != _VERSION or len(raw) < end:
            raise ValueError(f"not a version {_VERSION} terminal state")
        window = TerminalWindow.from_bytes(raw[_HEADER.size : end])
        return cls(window, PendingFeatures.from_bytes(raw[end:]))
