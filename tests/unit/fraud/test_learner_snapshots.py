"""The fraud learner's snapshots are data only: a JSON state that restores the same learner.

A clone scores and keeps learning exactly as the original (floats equal); a pickle of an
earlier release, or one forged with a command in it, is refused without being unpickled;
damaged or ill-typed states are refused with :class:`SnapshotError`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from river import linear_model, optim, preprocessing

from models.fraud_learner import (
    LearnerConfig,
    OnlineFraudLearner,
    PickledSnapshotError,
    SnapshotError,
)
from processors.fraud.features import FEATURE_NAMES

OLD_HEADER = struct.Struct("<8sHQ32s")  # the pickled format 1 of earlier releases
HEADER_SIZE = OLD_HEADER.size


def rows(n: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Rows of the handbook width with a learnable label, and a constant column."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 30.0, (n, len(FEATURE_NAMES)))
    x[:, 1] = 1.0  # no variance: scaled to 0.0
    x[::4, 2] = 0.0
    y = (x[:, 0] + rng.normal(0, 20, n)) > 80
    return x, y


def river_state(learner: OnlineFraudLearner) -> tuple[Any, ...]:
    """Every number River predicts and learns from, with the order of its dicts."""
    scaler, regression = learner.model.steps.values()
    return (
        list(scaler.counts.items()),
        list(scaler.means.items()),
        list(scaler.vars.items()),
        list(regression._weights.to_dict().items()),
        regression.intercept,
        regression.optimizer.n_iterations,
        regression.optimizer.lr.learning_rate,
        regression.intercept_lr.learning_rate,
        (regression.loss.weight_pos, regression.loss.weight_neg),
        regression.l2,
        learner.learned,
        learner.feature_names,
        learner.config,
    )


def payload(raw: bytes) -> dict[str, Any]:
    state: dict[str, Any] = orjson.loads(raw[HEADER_SIZE:])
    return state


def forge(state: dict[str, Any], learned: int | None = None) -> bytes:
    """A snapshot of ``state`` with a correct header and checksum."""
    body = orjson.dumps(state)
    count = state["learned"] if learned is None else learned
    digest = hashlib.sha256(body).digest()
    return OLD_HEADER.pack(b"SWFRJSON", 2, count, digest) + body


def test_a_clone_predicts_and_keeps_learning_exactly_as_the_original() -> None:
    x, y = rows(1700, seed=1)
    config = LearnerConfig(learning_rate=0.01, weight_pos=3.0)
    learner = OnlineFraudLearner(config)
    learner.learn_many(x[:1000], y[:1000])
    raw = learner.to_bytes()
    assert OnlineFraudLearner.snapshot_learned(raw) == 1000
    clone = OnlineFraudLearner.from_bytes(raw)
    assert clone is not learner
    assert river_state(clone) == river_state(learner)
    assert clone.to_bytes() == raw
    probe = x[1000:1500]
    assert clone.predict_batch(probe).tobytes() == learner.predict_batch(probe).tobytes()
    river = [clone.model.predict_proba_one(clone._row(r))[True] for r in probe[:20]]
    assert river == [learner.model.predict_proba_one(learner._row(r))[True] for r in probe[:20]]

    # 200 more examples on both: the same prequential scores and the same state after.
    more_x, more_y = x[1500:1700].tolist(), y[1500:1700].tolist()
    assert clone.learn_prequential(more_x, more_y) == learner.learn_prequential(more_x, more_y)
    assert river_state(clone) == river_state(learner)
    assert clone.learned == learner.learned == 1200
    assert clone.predict_batch(probe).tobytes() == learner.predict_batch(probe).tobytes()
    # and River's own learn_one path (one step at a time) agrees too
    for model in (learner, clone):
        model.model.learn_one(model._row(x[0]), bool(y[0]))
    assert river_state(clone) == river_state(learner)


def test_a_snapshot_is_json_of_the_models_numbers() -> None:
    x, y = rows(50, seed=2)
    learner = OnlineFraudLearner(feature_names=FEATURE_NAMES)
    learner.learn_many(x, y)
    raw = learner.to_bytes()
    assert raw[:8] == b"SWFRJSON"
    state = payload(raw)
    assert state["version"] == 2
    assert state["learned"] == 50
    assert state["feature_names"] == list(FEATURE_NAMES)
    assert state["config"] == {"learning_rate": 0.005, "weight_pos": 1.0, "l2": 0.0}
    assert state["scaler"]["counts"] == dict.fromkeys(FEATURE_NAMES, 50)
    assert state["regression"]["optimizer"] == {
        "name": "sgd",
        "learning_rate": 0.005,
        "n_iterations": 50,
    }
    assert list(state["regression"]["weights"]) == list(FEATURE_NAMES)
    empty = OnlineFraudLearner.from_bytes(OnlineFraudLearner().to_bytes())
    assert empty.learned == 0
    assert river_state(empty) == river_state(OnlineFraudLearner())


def test_values_json_has_no_number_for_round_trip_as_strings() -> None:
    learner = OnlineFraudLearner(feature_names=("a", "b"))
    learner.learn_many([[1.0, 2.0], [3.0, 5.0]], [True, False])
    scaler, regression = learner.model.steps.values()
    scaler.vars["a"] = float("inf")
    regression._weights["b"] = float("-inf")
    regression.intercept = float("nan")
    clone = OnlineFraudLearner.from_bytes(learner.to_bytes())
    c_scaler, c_regression = clone.model.steps.values()
    assert c_scaler.vars["a"] == float("inf")
    assert c_regression._weights["b"] == float("-inf")
    assert np.isnan(c_regression.intercept)


class Command:
    """A pickle that runs a shell command when it is unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def test_a_pickle_with_the_old_header_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    body = pickle.dumps((LearnerConfig(), FEATURE_NAMES, 0, Command(f"touch {ran}")))
    forged = OLD_HEADER.pack(b"SWFRAUDL", 1, 0, hashlib.sha256(body).digest()) + body
    with pytest.raises(PickledSnapshotError, match="pickled checkpoints of an earlier release"):
        OnlineFraudLearner.from_bytes(forged)
    with pytest.raises(PickledSnapshotError, match="starts from an empty model"):
        OnlineFraudLearner.snapshot_learned(forged)
    assert not ran.exists()  # the command did not run

    pickle.loads(body)  # the payload is live: unpickling it runs the command
    assert ran.exists()


def test_a_pickle_behind_the_new_header_is_refused_as_damaged_state(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    body = pickle.dumps(Command(f"touch {ran}"))
    forged = OLD_HEADER.pack(b"SWFRJSON", 2, 0, hashlib.sha256(body).digest()) + body
    with pytest.raises(SnapshotError, match="bad snapshot state"):
        OnlineFraudLearner.from_bytes(forged)
    assert not ran.exists()


def good_state() -> dict[str, Any]:
    learner = OnlineFraudLearner(feature_names=("a", "b"))
    learner.learn_many([[1.0, 2.0], [3.0, 5.0]], [True, False])
    return payload(learner.to_bytes())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.update(version=3), "not a format-2 learner state"),
        (lambda s: s["scaler"]["counts"].update(a=-1), "expected a count"),
        (lambda s: s["scaler"]["counts"].update(a=True), "expected a count"),
        (lambda s: s["scaler"]["means"].update(c=1.0), "unknown features"),
        (lambda s: s["regression"]["weights"].update(a="1.0"), "expected a number"),
        (lambda s: s["regression"].update(intercept=[0.0]), "expected a number"),
        (lambda s: s["regression"]["loss"].update(name="hinge"), "unknown loss"),
        (lambda s: s["regression"].pop("optimizer"), "optimizer"),
        (lambda s: s.update(feature_names=["a", "a"]), "repeat"),
        (lambda s: s.update(feature_names="ab"), "list of strings"),
        (lambda s: s["scaler"].update(with_std=1), "boolean"),
        (lambda s: s["config"].update(l2=None), "expected a number"),
    ],
)
def test_an_ill_typed_state_is_refused(damage: Any, message: str) -> None:
    state = good_state()
    damage(state)
    with pytest.raises(SnapshotError, match=message):
        OnlineFraudLearner.from_bytes(forge(state))


def test_damaged_and_foreign_bytes_are_refused() -> None:
    state = good_state()
    raw = forge(state)
    with pytest.raises(SnapshotError, match="header says 5 learned, state says 2"):
        OnlineFraudLearner.from_bytes(forge(state, learned=5))
    damaged = bytearray(raw)
    damaged[-3] ^= 0x01
    with pytest.raises(SnapshotError, match="checksum"):
        OnlineFraudLearner.from_bytes(bytes(damaged))
    body = b"{not json"
    with pytest.raises(SnapshotError, match="bad snapshot state"):
        OnlineFraudLearner.from_bytes(
            OLD_HEADER.pack(b"SWFRJSON", 2, 0, hashlib.sha256(body).digest()) + body
        )
    with pytest.raises(SnapshotError, match="not a format-2"):
        OnlineFraudLearner.from_bytes(b"x" * 100)
    with pytest.raises(SnapshotError, match="at least"):
        OnlineFraudLearner.from_bytes(raw[:10])


def test_a_model_the_format_cannot_hold_is_not_snapshotted() -> None:
    learner = OnlineFraudLearner()
    scaler = learner.model["StandardScaler"]
    learner.model = scaler | linear_model.LogisticRegression(optim.Adam(0.01))
    with pytest.raises(SnapshotError, match="cannot hold"):
        learner.to_bytes()
    learner.model = preprocessing.StandardScaler(window_size=10) | linear_model.LogisticRegression()
    with pytest.raises(SnapshotError, match="cannot hold"):
        learner.to_bytes()
    learner.model = scaler | linear_model.LogisticRegression(l1=0.1)  # cumulative L1 state
    with pytest.raises(SnapshotError, match="cannot hold"):
        learner.to_bytes()
