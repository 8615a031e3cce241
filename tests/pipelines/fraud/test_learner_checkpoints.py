"""The learner stage never loses or repeats an example when its checkpoint is refused, and
never unpickles a checkpoint.

A refused checkpoint delivery is sent again (the learner keeps what it learned); when every
try is refused the worker stops with the batch unacked, and the batch read again is learned
once. The outputs here model a broker: what a refused delivery carried never arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from models.fraud_learner import LearnerConfig, OnlineFraudLearner, SnapshotError
from pipelines.fraud.learning import (
    CheckpointRetry,
    LearnerReplica,
    LearnFraud,
    decode_snapshot,
)
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import DeliveryError
from pipelines.runtime.policies import StopWorker
from pipelines.runtime.testing import RecordingOutputs, Sent
from pipelines.settings import Settings
from processors.common.schemas import decode_dead_letter
from processors.fraud.features import FEATURE_NAMES
from processors.fraud.wire import decode_rows
from tests.pipelines.fakes import FakeEvent, FakeMessage
from tests.pipelines.fraud.test_fraud_stages import internal


class FlakyBroker(RecordingOutputs):
    """Outputs whose broker refuses the next ``refusals`` deliveries; the records of a
    refused delivery never arrive, those of a delivered one are in :attr:`arrived`."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 0
        self.handed = 0  # records of self.sent handed to the broker so far
        self.arrived: list[Sent] = []

    async def delivered(self) -> None:
        await super().delivered()
        batch, self.handed = self.sent[self.handed :], len(self.sent)
        if self.refusals:
            self.refusals -= 1
            raise DeliveryError(f"{len(batch)} of {len(batch)} records were not delivered")
        self.arrived.extend(batch)

    def landed(self, topic: str) -> list[Sent]:
        return [s for s in self.arrived if s.topic == topic]


class Stage:
    """A learner stage on a :class:`FlakyBroker`, restartable (a new stage, same broker)."""

    def __init__(self, home: Path) -> None:
        self.settings = Settings(home=home)
        self.out = FlakyBroker()
        self.waits: list[float] = []
        self.loads = 0
        self.step = self.restart()

    def restart(self) -> LearnFraud:
        async def latest() -> bytes | None:
            self.loads += 1
            snapshots = self.out.landed("snapshots")
            return snapshots[-1].value if snapshots else None

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)

        self.step = LearnFraud(
            self.settings, self.out, StepMetrics(), "snapshots", latest, sleep=sleep
        )
        return self.step

    def handle(self, events: Sequence[Any]) -> None:
        asyncio.run(self.step.handle(events))

    def newest(self) -> tuple[OnlineFraudLearner, int]:
        return decode_snapshot(self.out.landed("snapshots")[-1].value)


def examples(first: int, n: int, seed: int = 1) -> list[FakeEvent]:
    """``n`` training records of one example each, at offsets ``first`` on."""
    rng = np.random.default_rng(seed + first)
    return [
        internal("training", "examples", [[i, i % 3 == 0, rng.random(15).tolist()]], offset=i)
        for i in range(first, first + n)
    ]


def learned_directly(events: Sequence[FakeEvent]) -> OnlineFraudLearner:
    """Each example learned once, in order, by a learner that never restarted."""
    learner = OnlineFraudLearner()
    for event in events:
        for _, flag, features in decode_rows(event.message.value, "examples"):
            learner.learn(features, bool(flag))
    return learner


PROBE = np.random.default_rng(9).random((4, len(FEATURE_NAMES)))


def same_model(a: OnlineFraudLearner, b: OnlineFraudLearner) -> bool:
    return (
        a.learned == b.learned
        and a.predict_batch(PROBE).tobytes() == b.predict_batch(PROBE).tobytes()
    )


def test_the_waits_between_tries_double_up_to_a_ceiling() -> None:
    assert CheckpointRetry().waits() == [0.2, 0.4, 0.8, 1.6]
    assert CheckpointRetry(tries=8).waits() == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert CheckpointRetry(tries=1).waits() == []


def test_a_refused_checkpoint_is_sent_again_and_the_learner_keeps_the_batch(home: Path) -> None:
    stage = Stage(home)
    first, second = examples(0, 5), examples(5, 3)
    stage.out.refusals = 2
    stage.handle(first)
    assert stage.out.deliveries == 3  # two refused, the third taken
    assert stage.waits == [0.2, 0.4]
    assert stage.step.covered == 4
    assert stage.step.learner is not None
    assert same_model(stage.step.learner, learned_directly(first))  # not rolled back
    (snapshot,) = stage.out.landed("snapshots")  # the refused tries never arrived
    model, covered = decode_snapshot(snapshot.value)
    assert (model.learned, covered) == (5, 4)
    assert stage.out.landed("dead-letters") == []

    stage.handle(second)  # goes on from memory, without reloading a checkpoint
    assert stage.loads == 1
    model, covered = stage.newest()
    assert (model.learned, covered) == (8, 7)
    assert same_model(model, learned_directly(first + second))


def test_a_checkpoint_refused_every_time_stops_the_worker_and_the_batch_is_learned_once(
    home: Path,
) -> None:
    stage = Stage(home)
    first, second = examples(0, 3), examples(3, 4)
    stage.handle(first)
    stage.out.refusals = 5
    with pytest.raises(StopWorker, match="checkpoint refused 5 times"):
        stage.handle(second)
    assert stage.waits == [0.2, 0.4, 0.8, 1.6]
    assert stage.out.deliveries == 1 + 5
    assert stage.step.covered == 2  # the batch is not covered: it is read again
    assert stage.step.learner is None  # what ran ahead of the checkpoint is dropped
    assert stage.out.landed("dead-letters") == []  # nor dead-lettered
    assert stage.newest()[1] == 2

    stage.restart()  # the worker stopped; a restart reads the unacked batch again
    stage.handle(second)
    model, covered = stage.newest()
    assert (model.learned, covered) == (7, 6)  # each example once, not 3 + 4 + 4
    assert same_model(model, learned_directly(first + second))


def test_the_same_stage_reading_the_batch_again_learns_it_once(home: Path) -> None:
    stage = Stage(home)
    batch = examples(0, 4)
    stage.out.refusals = 5
    with pytest.raises(StopWorker):
        stage.handle(batch)
    assert stage.step.covered == -1
    stage.handle(batch)
    model, covered = stage.newest()
    assert (model.learned, covered) == (4, 3)
    assert same_model(model, learned_directly(batch))


def test_malformed_training_records_are_dead_lettered_once_even_across_refusals(
    home: Path,
) -> None:
    stage = Stage(home)
    good = examples(0, 2)
    broken = FakeEvent(FakeMessage("training", 0, 2, None, b'{"v": 99}'))
    stage.out.refusals = 1
    stage.handle([*good, broken])
    (letter,) = [decode_dead_letter(s.value) for s in stage.out.landed("dead-letters")]
    assert (getattr(letter, "reason", None), getattr(letter, "offset", None)) == (
        "invalid_internal",
        2,
    )
    model, covered = stage.newest()
    assert (model.learned, covered) == (2, 2)


class Command:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def pickled_checkpoint(ran: Path, covered: int) -> bytes:
    """A checkpoint as an earlier release wrote it (a pickled learner), carrying a command."""
    body = pickle.dumps((LearnerConfig(), FEATURE_NAMES, 10, Command(f"touch {ran}")))
    learner = struct.pack("<8sHQ32s", b"SWFRAUDL", 1, 10, hashlib.sha256(body).digest()) + body
    meta = orjson.dumps({})
    return struct.pack("<8sqI", b"SWCKPT02", covered, len(meta)) + meta + learner


def test_a_pickled_checkpoint_is_refused_and_the_learner_starts_afresh(
    home: Path, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    old = pickled_checkpoint(ran, covered=40)
    stage = Stage(home)

    async def latest() -> bytes | None:
        return old

    stage.step.load_latest = latest
    batch = examples(41, 3)
    stage.handle(batch)
    assert not ran.exists()
    model, covered = stage.newest()
    assert (model.learned, covered) == (3, 43)
    assert same_model(model, learned_directly(batch))

    replica = LearnerReplica()  # the scorers' follower logs and ignores it
    with pytest.raises(SnapshotError, match="pickled checkpoints of an earlier release"):
        replica.update(old)
    assert replica.learner.learned == 0
    assert not ran.exists()
