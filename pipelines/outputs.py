"""Where a step's outputs go: Faust topics in a worker, a list in tests.

A step handles Faust events but only touches ``event.message`` (topic, partition, offset,
key, value), writes state inside ``outputs.scope(event)`` and produces through
``outputs.send``. The worker passes :class:`FaustOutputs`; tests pass
:class:`RecordingOutputs` and plain dicts for state, so a step's logic runs without a
broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

from pipelines.app import event_scope

__all__ = ["FaustOutputs", "MessageLike", "Outputs", "RecordingOutputs", "Sent"]


class MessageLike(Protocol):
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


class EventLike(Protocol):
    @property
    def message(self) -> MessageLike: ...


class Outputs(Protocol):
    def scope(self, event: Any) -> AbstractContextManager[None]: ...

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...


class FaustOutputs:
    """Sends through the app's producer; scope makes the event current for table writes.

    Records go straight to the producer (already serialized bytes), skipping Faust's
    per-message topic machinery; the producer is flushed before every offset commit.
    """

    def __init__(self, app: faust.App, topics: list[str]) -> None:
        self.app = app
        self.topics = set(topics)

    def scope(self, event: Any) -> AbstractContextManager[None]:
        return event_scope(event)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic not in self.topics:
            raise KeyError(f"{topic!r} is not an output of this step")
        await self.app.producer.send(topic, key, value, None, None, None)


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class RecordingOutputs:
    """Keeps what a step sent, in order, for tests."""

    sent: list[Sent] = field(default_factory=list)
    current: Any = None

    @contextmanager
    def _scope(self, event: Any) -> Iterator[None]:
        self.current = event
        try:
            yield
        finally:
            self.current = None

    def scope(self, event: Any) -> AbstractContextManager[None]:
        return self._scope(event)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append(Sent(topic, key, value))

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]
