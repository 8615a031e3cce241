"""An online anomaly detector per camera: River's Half-Space Trees on window features.

Each camera learns what is normal for itself: its activity level (motion), face count,
brightness and sharpness. Features are mapped into ``[0, 1]`` first, as Half-Space Trees
expect. Scoring and learning are separate calls; the step scores a frame, then learns it.

>>> model = CameraAnomaly(window_size=20, seed=1)
>>> x = model.vector(motion=0.01, faces=1, brightness=100.0, sharpness=250.0)
>>> 0.0 <= model.score(x) <= 1.0
True
>>> model.learn(x); model.seen
1
"""

from __future__ import annotations

import math
from typing import Any, Final

from river import anomaly

__all__ = ["CameraAnomaly"]

VERSION: Final = "hst-river-0.26"
_LIMITS: Final[dict[Any, tuple[float, float]]] = {
    name: (0.0, 1.0) for name in ("activity", "faces", "brightness", "sharpness")
}


class CameraAnomaly:
    """Half-Space Trees for one camera; ``score`` is in ``[0, 1]``, higher is stranger."""

    version: Final = VERSION

    def __init__(self, window_size: int = 50, n_trees: int = 15, height: int = 8, seed: int = 7):
        self.model: Any = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, limits=_LIMITS, seed=seed
        )
        self.seen = 0

    @staticmethod
    def vector(motion: float, faces: int, brightness: float, sharpness: float) -> dict[str, float]:
        """Map raw features into ``[0, 1]``: motion is square-rooted to spread small values."""
        return {
            "activity": min(1.0, math.sqrt(max(0.0, motion))),
            "faces": min(faces, 5) / 5,
            "brightness": min(1.0, max(0.0, brightness / 255)),
            "sharpness": min(1.0, math.log1p(max(0.0, sharpness)) / math.log1p(5000)),
        }

    def score(self, x: dict[str, float]) -> float:
        return float(self.model.score_one(x))

    def learn(self, x: dict[str, float]) -> None:
        self.model.learn_one(x)
        self.seen += 1
