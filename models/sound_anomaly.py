"""Per-stream acoustic anomaly scoring: River HalfSpaceTrees on standardized features.

Each stream learns its own normal sound. A window is scored first and learned after, so a
window never vouches for itself; scores stay 0 until the trees have a reference window
(``window_size`` windows), and :attr:`StreamAnomaly.ready` says when they mean something.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from river import anomaly, compose, preprocessing

__all__ = ["StreamAnomaly"]

# Standardized features beyond +/-4 standard deviations fall into the trees' edge cells.
_LIMIT = 4.0


class StreamAnomaly:
    """``score_then_learn(features) -> score in [0, 1]`` (high: unlike this stream so far)."""

    def __init__(
        self, names: Sequence[str], window_size: int = 50, n_trees: int = 15, seed: int = 42
    ):
        self.names = tuple(names)
        self.window_size = window_size
        self.seen = 0
        limits: dict[Hashable, tuple[float, float]] = {n: (-_LIMIT, _LIMIT) for n in self.names}
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            anomaly.HalfSpaceTrees(
                n_trees=n_trees, height=6, window_size=window_size, limits=limits, seed=seed
            ),
        )

    @property
    def ready(self) -> bool:
        """True once the trees have a full reference window of this stream's sound."""
        return self.seen >= 2 * self.window_size

    def score_then_learn(self, values: Sequence[float]) -> tuple[float, dict[str, float]]:
        """The window's score and its features' z-scores, both before learning it."""
        x = dict(zip(self.names, (float(v) for v in values), strict=True))
        score = float(self.model.score_one(x))
        scaled = self.model["StandardScaler"].transform_one(x)
        self.model.learn_one(x)
        self.seen += 1
        return score, {name: float(z) for name, z in scaled.items()}
