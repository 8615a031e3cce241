"""Per-stream acoustic anomaly scoring: River HalfSpaceTrees on standardized features.

Each stream learns its own normal sound. A window is scored first and learned after, so a
window never vouches for itself; scores stay 0 until the trees have a reference window
(``window_size`` windows), and :attr:`StreamAnomaly.ready` says when they mean something.

Every stream's trees are the same random trees (same features, limits and seed), and River
builds them on the first ``learn_one``, which costs about 15 ms of pure Python per stream
(about three seconds of that stream's steady-state analysis). So they are built once per
configuration, into a template that has learned nothing, and each stream starts from a copy.
:meth:`StreamAnomaly.state` and :meth:`StreamAnomaly.restore` carry what a stream learned
as data (:mod:`models.hst_state`), for the checkpoints that follow its partition.
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from river import anomaly, compose, preprocessing

from models.hst_state import hst_state, restore_hst, restore_scaler, scaler_state

__all__ = ["StreamAnomaly"]

# Standardized features beyond +/-4 standard deviations fall into the trees' edge cells.
_LIMIT = 4.0


def _new_model(
    names: tuple[str, ...], window_size: int, n_trees: int, seed: int
) -> compose.Pipeline:
    limits: dict[Hashable, tuple[float, float]] = {n: (-_LIMIT, _LIMIT) for n in names}
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=6, window_size=window_size, limits=limits, seed=seed
        ),
    )


@cache
def _template(names: tuple[str, ...], window_size: int, n_trees: int, seed: int) -> bytes:
    """A pickled pipeline whose trees are built and have learned nothing.

    The trees are built the way River builds them (its own ``learn_one`` on a first point,
    which draws them from the seeded generator), then that point's masses and count are
    taken back, which leaves the state a fresh model has just before its first point.
    """
    model = _new_model(names, window_size, n_trees, seed)
    trees = model["HalfSpaceTrees"]
    trees.learn_one(dict.fromkeys(names, 0.0))
    for nodes in trees._tree_nodes:
        for node in nodes:
            node.l_mass = node.r_mass = 0
    trees.counter = 0
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a copy allocates its ~6000 objects.

    Otherwise those allocations trigger a run of collections, older generations included,
    that traverse every other stream's trees too (most of the copy's cost with a hundred
    streams held); paused, it is one young-generation collection afterwards. The copy makes
    no cyclic garbage, so nothing waits on the pause.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class StreamAnomaly:
    """``score_then_learn(features) -> score in [0, 1]`` (high: unlike this stream so far)."""

    def __init__(
        self, names: Sequence[str], window_size: int = 50, n_trees: int = 15, seed: int = 42
    ):
        self.names = tuple(names)
        self.window_size = window_size
        self.seen = 0
        template = _template(self.names, window_size, n_trees, seed)
        with _gc_paused():
            self.model: compose.Pipeline = pickle.loads(template)

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

    def state(self) -> dict[str, Any]:
        """What this detector learned, as data: windows seen, the scaler, the trees' masses."""
        return {
            "seen": self.seen,
            "scaler": scaler_state(self.model["StandardScaler"]),
            "trees": hst_state(self.model["HalfSpaceTrees"]),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state` of a detector of the same features, window and seed
        (``StateCodecError`` for other trees or a damaged state)."""
        restore_scaler(self.model["StandardScaler"], state["scaler"])
        restore_hst(self.model["HalfSpaceTrees"], state["trees"], dict.fromkeys(self.names, 0.0))
        self.seen = int(state["seen"])
