"""Exactly-once: each batch's outputs and offsets in the Kafka transactions of its sources.

Under ``STREAMWISE_PROCESSING_GUARANTEE=exactly_once`` the runtime keeps one transactional
producer per input partition of each stage (transactional id ``<app id>-<stage>-<partition>``;
a stage's co-partitioned inputs, like the scorer's two, share it). aiokafka 0.14 has no
KIP-447, so a transactional id per input partition is what fences a partition's previous
owner: a producer is started (``init_transactions``) the first time its partition is read in a
generation, before the group's committed offset is asked (:meth:`Transactions.claim`); that
fences the previous owner and ends its open transaction (aborted, or completed if it was
committing), so the committed offset read next is final. Producers of partitions a rebalance
took away are stopped.

Faust's own per-partition producers are not used: their id is per Faust *topic group*, which
here holds every stage's topics, so the stages of one worker would share (and commit) each
other's transactions; its ``send`` picks the producer of the *destination* partition (none
for a sink topic: the record goes out untransacted, faust #177); and its commit commits every
transaction whenever its periodic commit fires, also in the middle of a batch. Faust keeps
its transactional mode for what it reads (``read_committed``, changelog recovery past commit
markers), and its commits only record the offsets (:func:`~pipelines.runtime.compat.
take_over_transactions`).

So that:

* every record a batch sends (predictions, alerts, dead letters, records to internal
  topics, checkpoints, and the changelog records of its state changes) goes through the
  producer of the input partition it came from (:meth:`Transactions.source_id`);
* once all of them were acknowledged, each of those producers adds its input partitions'
  next offsets to its transaction (``send_offsets_to_transaction``) and commits it
  (:meth:`Transactions.commit`), so a batch's outputs of one input partition become visible
  to ``read_committed`` consumers together with the offsets that mark its inputs consumed;
* a batch whose records the broker refused aborts its transactions (:meth:`Transactions.
  abort`): nothing of it is visible, and what the failure policy sends instead (dead
  letters) goes into fresh transactions, committed with the same offsets.

A worker killed mid-batch leaves its transactions open; the partition's next owner (or the
same worker, restarted) starts the same transactional id, which aborts them, and reads from
the offsets the last committed transaction stored. No record is ever sent outside a
transaction: a record of a partition without a producer fails its batch.

A failed commit or abort (``ProducerFenced``: another worker owns the partition now; or any
error of the commit itself, after which the transaction's outcome is not known here) stops
the worker (:class:`TransactionFailed`, a :class:`~pipelines.runtime.policies.StopWorker`):
the batch is not acked, and a restart reads it again from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.types import TP

from pipelines.kafka.admin import client_config
from pipelines.runtime import compat
from pipelines.runtime.policies import StopWorker
from pipelines.settings import Settings

__all__ = ["BatchOffsets", "TransactionFailed", "Transactions"]

log = logging.getLogger(__name__)

BatchOffsets = dict[str, dict[TopicPartition, int]]
"""For each transactional id of a batch: the next offset of each of its input partitions."""

#: How long the broker lets a transaction stay open before it aborts it (a worker that died
#: mid-batch and whose partition nobody took over yet). A batch commits in well under this.
TRANSACTION_TIMEOUT_MS = 60_000


class TransactionFailed(StopWorker):
    """A transaction could not be used or committed: the worker stops, the batch unacked."""


class Transactions:
    """The transactional producers of one app's stages' input partitions."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.group = str(app.conf.id)
        self.stages: dict[str, str] = {}  # input topic -> the stage that reads it
        self.ids: dict[tuple[str, int], str] = {}
        self.producers: dict[str, Any] = {}  # transactional id -> started producer
        self.starting: dict[str, asyncio.Task[Any]] = {}
        self.partitions: dict[str, tuple[str, int]] = {}  # id -> (stage, partition)
        self.commits = 0
        self.aborts = 0
        compat.take_over_transactions(app.consumer)
        compat.stable_highwaters(app.consumer)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    @classmethod
    def of(cls, app: faust.App) -> Transactions | None:
        """The app's :class:`Transactions` (``app.streamwise_transactions``, made by
        :func:`~pipelines.runtime.app.create_app` under ``exactly_once``), else ``None``."""
        found: Transactions | None = getattr(app, "streamwise_transactions", None)
        return found

    def register(self, stage: str, topics: Iterable[str]) -> None:
        """Stage ``stage`` reads ``topics`` (co-partitioned: one producer a partition)."""
        for topic in topics:
            self.stages[topic] = stage

    def source_id(self, topic: str, partition: int) -> str:
        """The transactional id of input partition ``topic``/``partition``."""
        key = (topic, partition)
        tid = self.ids.get(key)
        if tid is None:
            stage = self.stages.get(topic)
            if stage is None:
                raise TransactionFailed(f"{topic!r} is no stage's input: it has no transaction")
            tid = self.ids[key] = f"{self.group}-{stage}-{partition}"
            self.partitions[tid] = (stage, partition)
        return tid

    async def claim(self, tp: Any) -> None:
        """Start the producer of input partition ``tp`` (fencing its previous owner and ending
        that owner's open transaction) unless it runs; before its committed offset is read."""
        await self.producer(self.source_id(tp.topic, tp.partition))

    def offsets(self, events: Sequence[Any]) -> BatchOffsets:
        """The offsets a batch of ``events`` commits: one past the highest of each input
        partition, grouped by transactional id."""
        found: BatchOffsets = {}
        for event in events:
            message = event.message
            tid = self.source_id(message.topic, message.partition)
            tp = TopicPartition(message.topic, message.partition)
            by_tp = found.setdefault(tid, {})
            nxt = message.offset + 1
            if by_tp.get(tp, -1) < nxt:
                by_tp[tp] = nxt
        return found

    async def producer(self, tid: str) -> Any:
        """The started producer of ``tid``, in a transaction (started on first use)."""
        producer = self.producers.get(tid)
        if producer is not None:
            return producer
        task = self.starting.get(tid)
        if task is None:
            task = self.starting[tid] = asyncio.ensure_future(self._start(tid))
        try:
            return await asyncio.shield(task)
        except Exception as exc:
            raise TransactionFailed(
                f"transactional producer {tid!r} did not start: {exc!r}"
            ) from exc
        finally:
            if task.done():
                self.starting.pop(tid, None)

    async def _start(self, tid: str) -> Any:
        conf: Any = self.app.conf
        producer = AIOKafkaProducer(
            **client_config(self.settings),
            transactional_id=tid,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(conf.producer_linger * 1000),
            max_batch_size=conf.producer_max_batch_size,
            max_request_size=conf.producer_max_request_size,
        )
        await producer.start()  # init_transactions: fences the previous owner
        await producer.begin_transaction()
        self.producers[tid] = producer
        log.info("transactional producer %s started", tid)
        return producer

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Stop the producers of partitions this worker no longer holds (a rebalance): if
        the partition comes back, a new one fences whoever had it meanwhile."""
        held = {(self.stages.get(tp.topic), tp.partition) for tp in assigned}
        gone = [tid for tid in self.producers if self.partitions.get(tid) not in held]
        for tid in gone:
            producer = self.producers.pop(tid)
            try:
                await producer.stop()
            except Exception as exc:  # it is fenced or gone either way
                log.warning("transactional producer %s did not stop cleanly: %r", tid, exc)
        if gone:
            log.info("%d transactional producer(s) of revoked partitions stopped", len(gone))

    async def commit(self, offsets: BatchOffsets) -> None:
        """Commit each transaction of a batch with its input offsets (in parallel), and begin
        the next one on the same producer."""
        await _each("commit", [self._commit(tid, by_tp) for tid, by_tp in offsets.items()])
        self.commits += len(offsets)

    async def _commit(self, tid: str, by_tp: dict[TopicPartition, int]) -> None:
        producer = await self.producer(tid)
        if by_tp:
            await producer.send_offsets_to_transaction(by_tp, self.group)
        await producer.commit_transaction()
        await producer.begin_transaction()

    async def abort(self, tids: Iterable[str]) -> None:
        """Abort the transactions of ``tids`` (a refused batch) and begin new ones."""
        tids = list(tids)
        await _each("abort", [self._abort(tid) for tid in tids])
        self.aborts += len(tids)
        log.warning("aborted %d transaction(s) of a refused batch", len(tids))

    async def _abort(self, tid: str) -> None:
        producer = await self.producer(tid)
        await producer.abort_transaction()
        await producer.begin_transaction()

    async def stop(self) -> None:
        """Stop every producer (the worker stops; open transactions hold nothing unsent)."""
        producers, self.producers = list(self.producers.values()), {}
        await asyncio.gather(*(p.stop() for p in producers), return_exceptions=True)


async def _each(what: str, steps: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``steps`` (one a transaction) together; :class:`TransactionFailed` if any failed."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise TransactionFailed(
            f"{len(failures)} of {len(results)} transactions did not {what}: {failures[0]!r}"
        ) from failures[0]
