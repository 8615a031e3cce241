"""River learners as data: a restored learner goes on exactly as the one it was taken from."""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest
from river import anomaly, preprocessing

from models.hst_state import hst_state, restore_hst, restore_scaler, scaler_state
from processors.common.state_codec import StateCodecError, pack, unpack

LIMITS: dict[Hashable, tuple[float, float]] = {"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (0.0, 1.0)}
ZERO = dict.fromkeys(LIMITS, 0.0)


def make(seed: int = 3) -> Any:  # River's learners are untyped
    model: Any = anomaly.HalfSpaceTrees(
        n_trees=5, height=5, window_size=10, limits=LIMITS, seed=seed
    )
    return model


def points(n: int, seed: int) -> list[dict[Hashable, float]]:
    rng = random.Random(seed)
    return [{k: rng.random() ** 2 for k in LIMITS} for _ in range(n)]


@pytest.mark.parametrize("learned", [0, 1, 9, 10, 25, 40])
def test_a_restored_forest_scores_and_learns_as_the_original(learned: int) -> None:
    model = make()
    for x in points(learned, 1):
        model.learn_one(x)
    raw = pack("hst", 1, hst_state(model))  # through the stored format, as a checkpoint is
    copy = make()
    restore_hst(copy, unpack(raw, "hst", 1), ZERO)
    for x in points(30, 2):
        assert copy.score_one(x) == model.score_one(x)
        model.learn_one(x)
        copy.learn_one(x)


def test_masses_of_other_trees_are_refused() -> None:
    model = make(seed=3)
    for x in points(12, 1):
        model.learn_one(x)
    other = make(seed=4)
    with pytest.raises(StateCodecError, match="other trees"):
        restore_hst(other, hst_state(model), ZERO)


def test_a_state_with_too_few_masses_is_refused() -> None:
    model = make()
    for x in points(3, 1):
        model.learn_one(x)
    state = hst_state(model) | {"l_mass": np.zeros(3, dtype=np.int64)}
    with pytest.raises(StateCodecError, match="masses"):
        restore_hst(make(), state, ZERO)


def test_a_restored_scaler_transforms_and_learns_as_the_original() -> None:
    scaler: Any = preprocessing.StandardScaler()
    for x in points(20, 5):
        scaler.learn_one(x)
    copy: Any = preprocessing.StandardScaler()
    restore_scaler(copy, unpack(pack("s", 1, scaler_state(scaler)), "s", 1))
    for x in points(5, 6):
        assert copy.transform_one(x) == scaler.transform_one(x)
        scaler.learn_one(x)
        copy.learn_one(x)
    assert copy.transform_one(ZERO) == scaler.transform_one(ZERO)
