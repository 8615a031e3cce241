"""Events shaped like Faust's (only ``.message`` is used by steps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


@dataclass
class FakeEvent:
    message: FakeMessage


def events(topic: str, values: list[bytes | None], key: bytes = b"1") -> list[FakeEvent]:
    return [FakeEvent(FakeMessage(topic, 0, i, key, v)) for i, v in enumerate(values)]
