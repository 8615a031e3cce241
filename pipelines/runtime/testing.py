"""Outputs for tests: a step's sends kept in order, without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordingOutputs", "Sent"]


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass
class RecordingOutputs:
    """Keeps what a step sent, in order, for tests."""

    sent: list[Sent] = field(default_factory=list)
    current: Any = None
    deliveries: int = 0
    discards: int = 0
    rollbacks: int = 0
    by_source: bool = False  # as under exactly_once: steps send a record per input partition
    batches: list[list[Any]] = field(default_factory=list)  # each begun batch's events
    sources: list[Any] = field(default_factory=list)  # per send: its source event, if given

    def begin(self, events: Any) -> None:
        self.batches.append(list(events))

    @contextmanager
    def _scope(self, event: Any) -> Iterator[None]:
        self.current = event
        try:
            yield
        finally:
            self.current = None

    def scope(self, event: Any) -> AbstractContextManager[None]:
        return self._scope(event)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        source: Any = None,
    ) -> None:
        self.sent.append(Sent(topic, key, value, partition))
        self.sources.append(source if source is not None else self.current)

    async def delivered(self) -> None:
        self.deliveries += 1

    async def hand_over(self) -> asyncio.Future[None]:
        """Delivers at once (through :meth:`delivered`, which tests override to fail)."""
        result: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await self.delivered()
            result.set_result(None)
        except Exception as exc:
            result.set_exception(exc)
        return result

    def discard(self) -> None:
        self.discards += 1

    def rollback(self) -> bool:
        """A step whose outputs are recorded has no state to roll back."""
        self.rollbacks += 1
        return False

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]
