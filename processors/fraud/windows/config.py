"""What both windows share: their lengths and limits (:class:`FeatureConfig`), and the verdict
on an event too old to record (:class:`Late`, with a detail a person can read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import pairwise
from typing import Final

__all__ = ["DAY_MS", "FeatureConfig", "Late", "late"]

DAY_MS: Final = 86_400_000


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


def late(event_ms: int, newest_ms: int, grace_ms: int) -> Late:
    """The verdict on an event at ``event_ms`` when its key's newest is ``newest_ms``."""
    by_ms = newest_ms - grace_ms - event_ms
    detail = (
        f"event {_iso(event_ms)} is {_span(newest_ms - event_ms)} behind the newest "
        f"{_iso(newest_ms)} of its key, {_span(by_ms)} beyond the {_span(grace_ms)} grace"
    )
    return Late(by_ms, newest_ms, detail)
