"""Replay the fraud pipeline's models over a simulated table, in event time.

The ONNX scorer is the one ``streamwise worker transactions`` loads
(:func:`pipelines.fraud.build.load_model`: the manifest's file, sha256 checked). The River
learner is :class:`models.fraud_learner.OnlineFraudLearner` with its default configuration,
as ``learn-fraud`` builds it, and learns what that agent learns: each transaction's scored
features with its label, one :meth:`~models.fraud_learner.OnlineFraudLearner.learn` call per
example, in label order, starting from an empty model at the simulation's first label.

The label of a payment at ``t`` exists from ``t + label delay``. Scoring uses checkpoints: at
the start of each ``step_ms`` of event time (an hour by default) the learner has learned every
label whose time has come, and scores that hour's payments with that state (the live scorers
read the newest checkpoint, published after each learned batch). Nothing is learned while
scoring, and no label is seen before its time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.fraud_learner import OnlineFraudLearner

__all__ = ["LearnerReplay", "replay_learner"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LearnerReplay:
    """River scores of the scored rows, the same with the learner frozen at ``freeze_ms``."""

    scores: FloatArray
    frozen: FloatArray
    learned_at_freeze: int
    learned: int
    version: str


def replay_learner(
    times_ms: IntArray,
    x: FloatArray,
    y: npt.NDArray[np.int8],
    rows: IntArray,
    delay_ms: int,
    freeze_ms: int,
    step_ms: int = 3_600_000,
    learner: OnlineFraudLearner | None = None,
) -> LearnerReplay:
    """Score ``rows`` (indices into the table) with a learner fed labels as they arrive.

    Scores come back in ascending row-index order (``np.sort(rows)``).

    ``frozen`` scores the same rows with a copy of the learner as it was at ``freeze_ms``
    (the test week's start): what the learner would give had it stopped learning there.
    """
    learner = learner or OnlineFraudLearner()
    order = np.lexsort((np.arange(times_ms.size), times_ms))  # stable time order = label order
    label_ms = times_ms[order] + delay_ms
    rows = rows[np.argsort(times_ms[rows], kind="stable")]
    buckets = times_ms[rows] // step_ms
    scores = np.empty(rows.size, dtype=np.float64)
    frozen: OnlineFraudLearner | None = None
    learned_at_freeze = 0
    done = 0
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    for begin, end in zip(starts.tolist(), [*starts[1:].tolist(), rows.size], strict=True):
        at = int(buckets[begin]) * step_ms
        if frozen is None and at >= freeze_ms:
            done = _learn_until(learner, order, label_ms, x, y, done, freeze_ms)
            frozen = OnlineFraudLearner.from_bytes(learner.to_bytes())
            learned_at_freeze = learner.learned
        done = _learn_until(learner, order, label_ms, x, y, done, at)
        scores[begin:end] = learner.predict_batch(x[rows[begin:end]])
    if frozen is None:  # the rows end before freeze_ms
        frozen = learner
    return _back_in_order(rows, scores, frozen, x, learned_at_freeze, learner)


def _learn_until(
    learner: OnlineFraudLearner,
    order: IntArray,
    label_ms: IntArray,
    x: FloatArray,
    y: npt.NDArray[np.int8],
    done: int,
    until_ms: int,
) -> int:
    """Learn the labels whose time is ``<= until_ms`` after the first ``done``; the new count."""
    stop = int(np.searchsorted(label_ms, until_ms, side="right"))
    if stop > done:
        batch = order[done:stop]
        learner.learn_many(x[batch], y[batch].astype(bool))
    return max(stop, done)


def _back_in_order(
    sorted_rows: IntArray,
    scores: FloatArray,
    frozen: OnlineFraudLearner,
    x: FloatArray,
    learned_at_freeze: int,
    learner: OnlineFraudLearner,
) -> LearnerReplay:
    """Scores in ascending row-index order (the caller's ``np.sort(rows)``)."""
    back = np.argsort(sorted_rows, kind="stable")
    in_order = sorted_rows[back]
    return LearnerReplay(
        scores[back],
        frozen.predict_batch(x[in_order]),
        learned_at_freeze,
        learner.learned,
        learner.version,
    )
