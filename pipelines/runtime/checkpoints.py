"""Per-entity state checkpointed with its input partition, in a compacted topic.

A media step (audio streams, cameras) keeps each entity's state in memory. So that an
entity moving to another worker, or surviving a restart, goes on where it was, the step
checkpoints the state of each entity it touched at the end of a batch, at most once every
``every_s`` seconds per entity, to ``<app_prefix>-<pipeline>-state``: compacted, keyed by
the entity's id, with as many partitions as the input topic, each entity's record in the
partition of its input partition's number. The record goes through the batch's outputs with
the entity's last event as its source: under ``exactly_once`` it is in the same transaction
as that partition's consumed offsets, under ``at_least_once`` it is delivered before the
batch is acked. When the step is assigned a partition (:mod:`pipelines.runtime.assignment`)
it reads that partition's newest value of every key (:meth:`Checkpoints.read`,
read_committed) and restores those entities before it handles the partition's records.

The values are data (:mod:`processors.common.state_codec`): whoever can write the topic can
feed a worker wrong state, not run code on it. A restored entity is up to ``every_s`` behind
its partition's committed offset; each step says how it resumes past what it missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipelines.kafka.admin import TopicSpec, client_config
from pipelines.runtime.outputs import Outputs
from pipelines.runtime.policies import StopWorker
from pipelines.settings import Settings

__all__ = ["Checkpoints", "StateReadFailed", "Stored", "state_spec", "state_topic"]

log = logging.getLogger(__name__)

READ_ATTEMPTS = 4
READ_RETRY_S = 0.5  # doubled after each failed attempt
READ_TIMEOUT_S = 30.0  # one attempt at reading the partitions asked to their end


@dataclass(frozen=True)
class Stored:
    """An entity's newest checkpoint: its state, partition, and when it was written."""

    value: bytes
    partition: int
    written_s: float  # the record's timestamp, seconds since the epoch

    def age_s(self, now_s: float) -> float:
        return max(0.0, now_s - self.written_s)


class StateReadFailed(StopWorker):
    """The state of newly assigned partitions could not be read: the worker stops rather
    than handle those partitions' records on state it does not have."""


def state_topic(settings: Settings, pipeline: str) -> str:
    """The compacted topic of ``pipeline``'s per-entity state."""
    return f"{settings.app_prefix}-{pipeline}-state"


def state_spec(settings: Settings, pipeline: str) -> TopicSpec:
    """The state topic's layout: compacted, the input topics' partition count."""
    return TopicSpec(
        state_topic(settings, pipeline),
        settings.topics.partitions,
        {"cleanup.policy": "compact", "max.message.bytes": "8388608"},
        f"{pipeline} state per entity (compacted; key: the entity's id)",
    )


class Checkpoints:
    """When each entity was last checkpointed, and reading partitions' newest state."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.every_s = every_s
        self.clock = clock
        self.last: dict[str, float] = {}  # entity -> when its newest checkpoint was sent

    def due(self, entities: Iterable[str]) -> list[str]:
        """Those of ``entities`` not checkpointed within ``every_s`` (or never)."""
        now = self.clock()
        return [e for e in entities if now - self.last.get(e, -float("inf")) >= self.every_s]

    def written(self, entities: Iterable[str]) -> None:
        now = self.clock()
        for entity in entities:
            self.last[entity] = now

    def forget(self, entities: Iterable[str]) -> None:
        for entity in entities:
            self.last.pop(entity, None)

    async def send(
        self, outputs: Outputs, entity: str, partition: int, value: bytes, source: Any
    ) -> None:
        """Queue ``entity``'s state in the batch of ``outputs``, from its event ``source``."""
        await outputs.send(self.topic, entity.encode(), value, partition=partition, source=source)

    async def read(self, partitions: Iterable[int]) -> dict[str, bytes]:
        """The newest committed value of every key of ``partitions`` (see :meth:`stored`)."""
        return {key: stored.value for key, stored in (await self.stored(partitions)).items()}

    async def stored(self, partitions: Iterable[int]) -> dict[str, Stored]:
        """The newest committed record of every key of ``partitions`` of the state topic
        (a tombstone drops its key); raises :class:`StateReadFailed` when the broker does not
        answer after :data:`READ_ATTEMPTS` tries."""
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        wait = READ_RETRY_S
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return await asyncio.wait_for(self._read(wanted), READ_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker restart, a timeout: try again, then stop
                if attempt == READ_ATTEMPTS:
                    raise StateReadFailed(
                        f"could not read {self.topic} partitions {wanted}: {exc}"
                    ) from exc
                log.warning("reading %s failed (%s); retrying in %g s", self.topic, exc, wait)
                await asyncio.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    async def _read(self, partitions: list[int]) -> dict[str, Stored]:
        consumer = AIOKafkaConsumer(
            **client_config(self.settings),
            enable_auto_commit=False,
            isolation_level="read_committed",  # never an aborted transaction's state
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)  # the last stable offsets
            values: dict[str, Stored] = {}
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    batches = await consumer.getmany(tp, timeout_ms=1000)
                    for record in batches.get(tp, []):
                        if record.key is None:
                            continue
                        key = record.key.decode("utf-8", "replace")
                        if record.value is None:
                            values.pop(key, None)
                        else:
                            values[key] = Stored(
                                record.value, tp.partition, record.timestamp / 1000
                            )
            return values
        finally:
            await consumer.stop()
