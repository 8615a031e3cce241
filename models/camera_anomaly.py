"""An online anomaly detector per camera: River's Half-Space Trees on window features.

Each camera learns what is normal for itself: its activity level (motion), face count,
brightness and sharpness. Features are mapped into ``[0, 1]`` first, as Half-Space Trees
expect. Scoring and learning are separate calls; the step scores a frame, then learns it.
What it learned leaves the worker as data (:meth:`CameraAnomaly.state`, through
:mod:`models.hst_state`) and comes back with :meth:`CameraAnomaly.restore` into a model of
the same parameters, which then scores and learns exactly as the original would have.

>>> model = CameraAnomaly(window_size=20, seed=1)
>>> x = model.vector(motion=0.01, faces=1, brightness=100.0, sharpness=250.0)
>>> 0.0 <= model.score(x) <= 1.0
True
>>> model.learn(x); model.seen
1
>>> copy = CameraAnomaly(window_size=20, seed=1)
>>> copy.restore(model.state()); copy.seen, copy.score(x) == model.score(x)
(1, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from river import anomaly

from models.hst_state import hst_state, restore_hst
from processors.common.state_codec import StateCodecError

__all__ = ["CameraAnomaly"]

VERSION: Final = "hst-river-0.26"
_LIMITS: Final[dict[Any, tuple[float, float]]] = {
    name: (0.0, 1.0) for name in ("activity", "faces", "brightness", "sharpness")
}


class CameraAnomaly:
    """Half-Space Trees for one camera; ``score`` is in ``[0, 1]``, higher is stranger."""

    version: Final = VERSION

    def __init__(self, window_size: int = 50, n_trees: int = 15, height: int = 8, seed: int = 7):
        self.config = {
            "window_size": window_size,
            "n_trees": n_trees,
            "height": height,
            "seed": seed,
        }
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

    def state(self) -> dict[str, Any]:
        """What this model learned, as data (with the parameters it needs to mean that)."""
        return {"config": dict(self.config), "seen": self.seen, "hst": hst_state(self.model)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`state` of a model of the same parameters into this fresh one;
        :class:`StateCodecError` for another window, tree count, height or seed."""
        if state.get("config") != self.config:
            raise StateCodecError(
                f"camera anomaly state for {state.get('config')!r}, not {self.config!r}"
            )
        seen = state.get("seen")
        if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
            raise StateCodecError(f"bad camera anomaly example count {seen!r}")
        restore_hst(self.model, state.get("hst", {}), self.vector(0.0, 0, 0.0, 0.0))
        self.seen = seen
