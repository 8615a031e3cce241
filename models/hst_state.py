"""River's Half-Space Trees and standard scaler as data, for checkpoints that run nothing.

A stream's or a camera's learner is checkpointed with its partition
(:mod:`processors.common.state_codec`). What a Half-Space Trees model learns is its node
masses and window counter; the trees themselves (each branch's feature and threshold) are
drawn from the model's seeded generator when it sees its first point, so a model made with
the same parameters and seed draws the same trees. :func:`hst_state` therefore stores the
masses as two integer arrays in River's depth-first node order, with a fingerprint of the
trees they belong to; :func:`restore_hst` puts them into a model of the same parameters
(building its trees first if it has none) and refuses masses of other trees. A scaler is
its counts, means and variances per feature.

These read River 0.26's attributes (``trees``, ``_tree_nodes``, ``counter``,
``_first_window``; ``counts``, ``means``, ``vars``), as :mod:`models.sound_anomaly` does to
build its template; :data:`RIVER_VERSIONS` names the releases checked, and
``tests/unit/models/test_hst_state.py`` checks the round trip on the installed one.

>>> from river import anomaly
>>> limits = {"a": (0.0, 1.0), "b": (0.0, 1.0)}
>>> make = lambda: anomaly.HalfSpaceTrees(n_trees=3, height=3, window_size=4, limits=limits, seed=1)
>>> model = make()
>>> for v in (0.1, 0.2, 0.15, 0.12, 0.11, 0.9):
...     model.learn_one({"a": v, "b": v})
>>> copy = make()
>>> restore_hst(copy, hst_state(model), {"a": 0.0, "b": 0.0})
>>> copy.score_one({"a": 0.9, "b": 0.1}) == model.score_one({"a": 0.9, "b": 0.1})
True
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping
from functools import cache
from importlib.metadata import version
from typing import Any, Final

import numpy as np

from processors.common.state_codec import StateCodecError

__all__ = ["RIVER_VERSIONS", "hst_state", "restore_hst", "restore_scaler", "scaler_state"]

RIVER_VERSIONS: Final = ("0.26",)  # releases whose attributes these functions were checked on


@cache
def _checked() -> None:
    """Refuse a River release these attribute reads were not checked on (once)."""
    installed = version("river")
    if not installed.startswith(RIVER_VERSIONS):
        raise RuntimeError(
            f"models.hst_state reads River {'/'.join(RIVER_VERSIONS)} attributes;"
            f" River {installed} is installed"
        )


def _fingerprint(model: Any) -> str:
    """sha256 of every branch's feature and threshold, in depth-first order."""
    digest = hashlib.sha256(f"{model.n_trees}/{model.height}/{model.window_size}".encode())
    for nodes in model._tree_nodes:
        for node in nodes:
            feature = getattr(node, "feature", None)
            if feature is None:
                digest.update(b"L")
            else:
                digest.update(f"B{feature}={float(node.threshold)!r}".encode())
    return digest.hexdigest()


def hst_state(model: Any) -> dict[str, Any]:
    """What ``model`` (a ``river.anomaly.HalfSpaceTrees``) learned, as data."""
    _checked()
    built = bool(model.trees)
    nodes = [node for tree in model._tree_nodes for node in tree] if built else []
    return {
        "built": built,
        "counter": int(model.counter),
        "first_window": bool(model._first_window),
        "fingerprint": _fingerprint(model) if built else "",
        "l_mass": np.array([node.l_mass for node in nodes], dtype=np.int64),
        "r_mass": np.array([node.r_mass for node in nodes], dtype=np.int64),
    }


def restore_hst(model: Any, state: Mapping[str, Any], first_point: Mapping[Any, float]) -> None:
    """Put ``state`` (of :func:`hst_state`) into ``model``, made with the same parameters
    and seed; a model without trees builds them from ``first_point`` (every feature, the
    way River does on its first ``learn_one``) with nothing learned. A state of other trees
    raises :class:`StateCodecError` and leaves the masses as they were."""
    _checked()
    try:
        built, counter = bool(state["built"]), int(state["counter"])
        first_window, fingerprint = bool(state["first_window"]), str(state["fingerprint"])
        l_mass, r_mass = np.asarray(state["l_mass"]), np.asarray(state["r_mass"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StateCodecError(f"bad Half-Space Trees state: {exc}") from exc
    if not built:
        if model.trees:
            raise StateCodecError("an empty Half-Space Trees state for a model that learned")
        return
    if not model.trees:
        model.learn_one(dict(first_point))
        for tree in model._tree_nodes:
            for node in tree:
                node.l_mass = node.r_mass = 0
        model.counter, model._first_window = 0, True
    if _fingerprint(model) != fingerprint:
        raise StateCodecError("the Half-Space Trees state is of other trees (seed or limits)")
    nodes = [node for tree in model._tree_nodes for node in tree]
    if l_mass.shape != (len(nodes),) or r_mass.shape != (len(nodes),):
        raise StateCodecError(f"Half-Space Trees masses for {l_mass.shape}, not {len(nodes)}")
    for node, left, right in zip(nodes, l_mass.tolist(), r_mass.tolist(), strict=True):
        node.l_mass, node.r_mass = left, right
    model.counter, model._first_window = counter, first_window


def scaler_state(scaler: Any) -> dict[str, Any]:
    """What ``scaler`` (a ``river.preprocessing.StandardScaler``) learned, as data."""
    _checked()
    names = sorted(scaler.counts)
    return {
        "names": names,
        "counts": np.array([scaler.counts[n] for n in names], dtype=np.int64),
        "means": np.array([scaler.means[n] for n in names], dtype=np.float64),
        "vars": np.array([scaler.vars[n] for n in names], dtype=np.float64),
    }


def restore_scaler(scaler: Any, state: Mapping[str, Any]) -> None:
    """Put ``state`` (of :func:`scaler_state`) into ``scaler``."""
    _checked()
    try:
        names = [str(n) for n in state["names"]]
        counts = np.asarray(state["counts"]).tolist()
        means = np.asarray(state["means"], dtype=np.float64).tolist()
        variances = np.asarray(state["vars"], dtype=np.float64).tolist()
    except (KeyError, TypeError, ValueError) as exc:
        raise StateCodecError(f"bad scaler state: {exc}") from exc
    if not len(names) == len(counts) == len(means) == len(variances):
        raise StateCodecError("scaler state of unequal lengths")
    scaler.counts = Counter(dict(zip(names, (int(c) for c in counts), strict=True)))
    scaler.means = defaultdict(float, zip(names, means, strict=True))
    scaler.vars = defaultdict(float, zip(names, variances, strict=True))
