"""The per-stream anomaly detector starts from a shared template of River's own trees."""

from __future__ import annotations

import random
from collections.abc import Hashable

from river import anomaly, compose, preprocessing

from models.sound_anomaly import StreamAnomaly

NAMES = ("a", "b", "c")


def _fresh(window_size: int) -> compose.Pipeline:
    """The pipeline River builds from scratch, as StreamAnomaly is documented to hold."""
    limits: dict[Hashable, tuple[float, float]] = {n: (-4.0, 4.0) for n in NAMES}
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        anomaly.HalfSpaceTrees(
            n_trees=15, height=6, window_size=window_size, limits=limits, seed=42
        ),
    )


def test_a_stream_scores_exactly_like_a_freshly_built_model() -> None:
    rng = random.Random(7)
    first, second, fresh = StreamAnomaly(NAMES, 10), StreamAnomaly(NAMES, 10), _fresh(10)
    for i in range(60):
        x = {n: rng.gauss(0.0, 8.0 if i % 13 == 12 else 1.0) for n in NAMES}
        expected = fresh.score_one(x)
        fresh.learn_one(x)
        assert first.score_then_learn(list(x.values()))[0] == expected
        assert second.score_then_learn(list(x.values()))[0] == expected
    assert first.ready
    assert first.model is not second.model


def test_streams_do_not_share_what_they_learn() -> None:
    loud, quiet = StreamAnomaly(NAMES, 5), StreamAnomaly(NAMES, 5)
    for _ in range(12):
        loud.score_then_learn([3.0, 3.0, 3.0])
    untouched = StreamAnomaly(NAMES, 5)
    assert quiet.score_then_learn([0.0, 0.0, 0.0]) == untouched.score_then_learn([0.0, 0.0, 0.0])
