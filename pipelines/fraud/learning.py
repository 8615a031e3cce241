"""The online learner: one writer, checkpointed in a compacted topic that every scorer reads.

``learn-fraud`` consumes ``fraud-training`` (one partition, so one worker in the group owns
it, whichever it is) and learns each labelled example once, in order (a batch at a time,
``OnlineFraudLearner.learn_prequential``: one SGD step per example). After each batch
it publishes a snapshot (the River model's state as data, :meth:`OnlineFraudLearner.to_bytes`,
and the offset of the last example it covers) to the compacted ``fraud-learner`` topic, and
only then is the batch acked. A refused delivery is sent again (:class:`CheckpointRetry`) while
the learner keeps what it learned; if every try is refused the worker stops
(:class:`~pipelines.runtime.policies.StopWorker`) with the batch unacked, never dead-lettered.
A restarted learner loads the newest snapshot and skips examples the snapshot already covers,
so the learned count is exactly the number of examples delivered, with no double learning and
no loss. A pickled checkpoint of an earlier release is refused unread: the learner then starts
from an empty model. The checkpoint also carries the live evaluation's state
(:mod:`pipelines.fraud.quality`): the scoring policies (champion and challenger), the closed
event days and the drift detectors.

Every worker runs a :class:`SnapshotFollower` (a plain consumer outside the group) that keeps
a :class:`LearnerReplica` current; scorers read the replica and never mutate it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from time import monotonic
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from models.fraud_learner import OnlineFraudLearner, PickledSnapshotError, SnapshotError
from pipelines.fraud.quality import QualityMonitor
from pipelines.kafka.compacted import follow_latest, latest_value
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import DeliveryError, Outputs
from pipelines.runtime.policies import FailurePolicies, StopWorker
from pipelines.runtime.steps import DeadLetterSink
from pipelines.settings import Settings
from processors.fraud.explain import LearnerStats
from processors.fraud.quality import Policies
from processors.fraud.wire import decode_rows

__all__ = [
    "LEARN_STEP",
    "SNAPSHOT_KEY",
    "CheckpointRetry",
    "LearnFraud",
    "LearnerReplica",
    "SnapshotFollower",
    "checkpoint_learned",
    "decode_checkpoint",
    "decode_snapshot",
    "encode_snapshot",
    "latest_snapshot",
]

LEARN_STEP = "learn-fraud"
SNAPSHOT_KEY = b"fraud-learner"
_HEADER = struct.Struct("<8sq")  # magic, offset of the last training record covered
_MAGIC = b"SWCKPT01"
_HEADER2 = struct.Struct("<8sqI")  # magic, offset covered, length of the JSON meta after it
_MAGIC2 = b"SWCKPT02"

log = logging.getLogger(__name__)


def encode_snapshot(
    learner: OnlineFraudLearner, covered: int, meta: dict[str, Any] | None = None
) -> bytes:
    """A checkpoint: the learner, the offset it covers and the evaluation's ``meta``."""
    extra = orjson.dumps(meta or {})
    return _HEADER2.pack(_MAGIC2, covered, len(extra)) + extra + learner.to_bytes()


def _split(raw: bytes) -> tuple[int, dict[str, Any], bytes]:
    """``(covered, meta, learner bytes)`` of a checkpoint of either format."""
    if len(raw) >= _HEADER.size and raw[:8] == _MAGIC:
        _, covered = _HEADER.unpack_from(raw)
        return int(covered), {}, raw[_HEADER.size :]
    if len(raw) < _HEADER2.size or raw[:8] != _MAGIC2:
        raise SnapshotError("not a streamwise learner checkpoint")
    _, covered, size = _HEADER2.unpack_from(raw)
    end = _HEADER2.size + size
    try:
        meta = orjson.loads(raw[_HEADER2.size : end])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"damaged checkpoint meta: {exc}") from exc
    return int(covered), meta, raw[end:]


def decode_checkpoint(raw: bytes) -> tuple[OnlineFraudLearner, int, dict[str, Any]]:
    """The learner, the training offset it covers and the evaluation's meta (``{}``: none)."""
    covered, meta, learner = _split(raw)
    return OnlineFraudLearner.from_bytes(learner), covered, meta


def decode_snapshot(raw: bytes) -> tuple[OnlineFraudLearner, int]:
    """The learner and the training offset it covers; raises :class:`SnapshotError`."""
    learner, covered, _ = decode_checkpoint(raw)
    return learner, covered


def checkpoint_learned(raw: bytes) -> int:
    """The learned count of a checkpoint, read from its headers without decoding the model."""
    return OnlineFraudLearner.snapshot_learned(_split(raw)[2])


def learner_stats(learner: OnlineFraudLearner) -> LearnerStats | None:
    """``feature -> (mean, std, weight)`` of the scaler and logistic regression, if learned."""
    if learner.learned == 0:
        return None
    scaler, regression = learner.model["StandardScaler"], learner.model["LogisticRegression"]
    return {
        name: (
            float(scaler.means.get(name, 0.0)),
            math.sqrt(float(scaler.vars.get(name, 0.0))),
            float(regression.weights.get(name, 0.0)),
        )
        for name in learner.feature_names
    }


class LearnerReplica:
    """The scorers' read-only copy of the learner; :meth:`update` swaps in a snapshot.

    ``policies`` are the champion and challenger of the newest checkpoint (``None`` before
    one: the scorer then uses its settings).
    """

    def __init__(self) -> None:
        self.learner = OnlineFraudLearner()
        self.stats: LearnerStats | None = None
        self.policies: Policies | None = None

    def update(self, raw: bytes) -> None:
        learner, _, meta = decode_checkpoint(raw)
        try:
            policies = Policies.from_dict(meta["policies"]) if meta.get("policies") else None
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"bad scoring policies in a checkpoint: {exc}") from exc
        self.learner, self.stats = learner, learner_stats(learner)  # one swap per field
        self.policies = policies

    def predict_batch_versioned(
        self, x: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], str, LearnerStats | None]:
        learner, stats = self.learner, self.stats
        return learner.predict_batch(x), learner.version, stats


async def latest_snapshot(settings: Settings, topic: str, timeout_s: float = 30.0) -> bytes | None:
    """The newest record of the snapshot topic, or ``None`` if it is empty."""
    return await latest_value(settings, topic, timeout_s)


class SnapshotFollower:
    """Reads every snapshot published to ``topic`` into ``replica`` (no consumer group)."""

    def __init__(self, settings: Settings, topic: str, replica: LearnerReplica) -> None:
        self.settings = settings
        self.topic = topic
        self.replica = replica
        self.applied = 0
        self.ready = asyncio.Event()  # set once the newest checkpoint (if any) is applied

    async def run(self) -> None:
        """Follow the snapshots forever; a broker hiccup reconnects, scoring goes on."""
        await follow_latest(self.settings, self.topic, self._apply, self.ready)

    def _apply(self, raw: bytes) -> None:
        try:
            self.replica.update(raw)
            self.applied += 1
        except SnapshotError as exc:
            log.warning("ignored a bad learner snapshot: %s", exc)


@dataclass(frozen=True)
class CheckpointRetry:
    """How often a refused checkpoint delivery is tried again: ``tries`` in all, waiting
    ``first_s`` after the first refusal, twice as long after each next, at most ``max_s``."""

    tries: int = 5
    first_s: float = 0.2
    max_s: float = 5.0

    def waits(self) -> list[float]:
        """The waits between tries (one fewer than the tries).

        >>> CheckpointRetry().waits()
        [0.2, 0.4, 0.8, 1.6]
        >>> CheckpointRetry(tries=4, first_s=3.0).waits()
        [3.0, 5.0, 5.0]
        """
        return [min(self.first_s * 2**i, self.max_s) for i in range(max(self.tries - 1, 0))]


class LearnFraud:
    """Stage ``learn-fraud``: learn each example once, checkpoint, then ack."""

    name = LEARN_STEP

    def __init__(
        self,
        settings: Settings,
        outputs: Outputs,
        metrics: StepMetrics,
        snapshot_topic: str,
        load_latest: Callable[[], Awaitable[bytes | None]],
        executor: Executor | None = None,
        retry: CheckpointRetry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.outputs = outputs
        self.metrics = metrics
        self.snapshot_topic = snapshot_topic
        self.load_latest = load_latest
        self.executor = executor
        self.retry = retry or CheckpointRetry()
        self.sleep = sleep
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)
        self.failures = FailurePolicies(settings.policies, self.dead)
        self.learner: OnlineFraudLearner | None = None
        self.covered = -1
        self.monitor = QualityMonitor(settings, metrics, LEARN_STEP)

    async def _restore(self) -> OnlineFraudLearner:
        raw = await self.load_latest()
        if raw is None:
            self.covered = -1
            self.monitor.restore(None)
            return OnlineFraudLearner()
        try:
            learner, self.covered, meta = decode_checkpoint(raw)
        except PickledSnapshotError as exc:  # an earlier release's pickle: never unpickled
            log.warning("learner checkpoint not loaded: %s", exc)
            self.covered = -1  # a fresh model has learned nothing: it learns all it reads
            self.monitor.restore(None)
            return OnlineFraudLearner()
        self.monitor.restore(meta)
        log.info("learner restored: %s, covers training offset %d", learner.version, self.covered)
        return learner

    async def handle(self, events: Sequence[Any]) -> None:
        learner = self.learner or await self._restore()
        self.learner = None  # until this batch is checkpointed, memory may run ahead of it
        todo: list[list[Any]] = []
        malformed: list[tuple[Any, str]] = []
        covered = self.covered
        for event in events:
            offset = event.message.offset
            if offset <= self.covered:
                continue  # already in the checkpoint
            try:
                todo.extend(decode_rows(event.message.value, "examples"))
            except ValueError as exc:
                malformed.append((event, str(exc)))
            covered = max(covered, offset)

        monitor, now = self.monitor, monotonic()

        def learn() -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
            # [tx_id, is_fraud, features, scored (optional)]; each predicted, then learned
            flags = [bool(example[1]) for example in todo]
            scores = learner.learn_prequential([example[2] for example in todo], flags)
            monitor.prequential(todo, scores)
            records = monitor.after_batch(todo, learner.version, now)
            return encode_snapshot(learner, covered, monitor.to_meta()), records

        if covered > self.covered:
            loop = asyncio.get_running_loop()
            snapshot, records = await loop.run_in_executor(self.executor, learn)
            await self._checkpoint(malformed, snapshot, records)
            self.covered = covered
        self.learner = learner
        self.metrics.learned.labels(LEARN_STEP).set(learner.learned)
        self.metrics.events.labels(LEARN_STEP, "ok").inc(len(todo))

    async def _checkpoint(
        self,
        malformed: Sequence[tuple[Any, str]],
        snapshot: bytes,
        records: Sequence[tuple[str, bytes, bytes]],
    ) -> None:
        """Send the batch's dead letters, checkpoint and metric records, and wait until the
        broker has them; a refused delivery sends them all again, up to ``retry.tries`` times.

        The learner keeps what it learned meanwhile. If every try is refused this raises
        :class:`StopWorker`: the batch is not acked (nor dead-lettered: its labels would never
        be learned) and is read again after a restart, from the checkpoint before it.
        """
        waits = self.retry.waits()
        for attempt in range(self.retry.tries):
            for event, detail in malformed:
                await self.dead.send(event, LEARN_STEP, "invalid_internal", detail)
            await self.outputs.send(self.snapshot_topic, SNAPSHOT_KEY, snapshot, 0)
            for topic, key, value in records:  # metrics, drifts, promotions of this batch
                await self.outputs.send(topic, key, value)
            try:
                await self.outputs.delivered()
                return
            except DeliveryError as exc:
                if attempt == len(waits):
                    raise StopWorker(
                        f"{LEARN_STEP}: checkpoint refused {self.retry.tries} times ({exc})"
                    ) from exc
                log.warning(
                    "[%s] checkpoint refused (%s); try %d of %d in %g s",
                    LEARN_STEP,
                    exc,
                    attempt + 2,
                    self.retry.tries,
                    waits[attempt],
                )
                await self.sleep(waits[attempt])
