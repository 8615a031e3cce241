"""Where a step's outputs go: Faust topics in a worker, a list in tests.

A step handles Faust events but only touches ``event.message`` (topic, partition, offset,
key, value), writes state inside ``outputs.scope(event)`` and produces through
``outputs.send``. The worker passes :class:`FaustOutputs`; tests pass
:class:`RecordingOutputs` and plain dicts for state, so a step's logic runs without a
broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

from pipelines.app import event_scope

__all__ = ["DeliveryError", "FaustOutputs", "MessageLike", "Outputs", "RecordingOutputs", "Sent"]


class DeliveryError(RuntimeError):
    """The broker did not take some records; the batch that sent them must not be acked."""


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

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None: ...

    async def delivered(self) -> None: ...


class FaustOutputs:
    """Sends through the app's producer; scope makes the event current for table writes.

    Records go straight to the producer (already serialized bytes), skipping Faust's
    per-message topic machinery. :meth:`delivered` waits for the broker's acknowledgement of
    everything sent since its last call and raises if any record failed, so a step can finish
    a batch (and let it be acked) only once its outputs exist. Faust's own flush before a
    commit waits too, but ignores failed deliveries: a record the broker refused would be
    committed past silently.
    """

    def __init__(self, app: faust.App, topics: list[str]) -> None:
        self.app = app
        self.topics = set(topics)
        self.pending: list[Awaitable[Any]] = []

    def scope(self, event: Any) -> AbstractContextManager[None]:
        return event_scope(event)

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        if topic not in self.topics:
            raise KeyError(f"{topic!r} is not an output of this step")
        producer = self.app.producer
        self.pending.append(await producer.send(topic, key, value, partition, None, None))

    async def delivered(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise DeliveryError(
                f"{len(failures)} of {len(results)} records were not delivered: {failures[0]!r}"
            )


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
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        self.sent.append(Sent(topic, key, value, partition))

    async def delivered(self) -> None:
        self.deliveries += 1

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]
