"""Property: any learned state survives a snapshot, and the clone goes on learning identically."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.fraud_learner import LearnerConfig, OnlineFraudLearner

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
configs = st.builds(
    LearnerConfig,
    learning_rate=st.floats(min_value=1e-5, max_value=0.5),
    weight_pos=st.floats(min_value=0.1, max_value=20.0),
    l2=st.sampled_from([0.0, 0.0, 1e-4, 0.01]),  # l2 > 0: River's own learn_one path
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[LearnerConfig, int, list[list[float]], list[bool]]:
    width = draw(st.integers(min_value=1, max_value=5))
    n = draw(st.integers(min_value=0, max_value=40))
    row = st.lists(values, min_size=width, max_size=width)
    rows = draw(st.lists(row, min_size=n, max_size=n))
    labels = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return draw(configs), width, rows, labels


@settings(max_examples=60)
@given(histories(), st.integers(min_value=0, max_value=40))
def test_a_snapshot_round_trips_any_learned_state(
    history: tuple[LearnerConfig, int, list[list[float]], list[bool]], split: int
) -> None:
    config, width, rows, labels = history
    names = tuple(f"f{i}" for i in range(width))
    split = min(split, len(rows))
    learner = OnlineFraudLearner(config, names)
    learner.learn_prequential(rows[:split], labels[:split])
    raw = learner.to_bytes()
    clone = OnlineFraudLearner.from_bytes(raw)
    assert clone.to_bytes() == raw
    assert (clone.config, clone.feature_names, clone.learned) == (config, names, split)
    probe = np.asarray(rows or [[0.0] * width], dtype=np.float64)
    assert clone.predict_batch(probe).tobytes() == learner.predict_batch(probe).tobytes()
    rest, flags = rows[split:], labels[split:]
    assert clone.learn_prequential(rest, flags) == learner.learn_prequential(rest, flags)
    assert clone.to_bytes() == learner.to_bytes()
