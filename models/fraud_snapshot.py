"""The fraud learner's snapshots: its River state as JSON, behind a checksummed header.

A snapshot (:func:`encode`) is data only: the scaler's counts, means and variances, the
regression's weights, intercept, rates, loss weights and SGD step count, the config and the
feature names, as JSON with a sha256 of it (integrity: it is safe because reading it runs
nothing, not because of the hash). :func:`decode` builds a fresh learner from the config and
sets the state on it. Pickled snapshots of earlier releases are refused unread
(:class:`PickledSnapshotError`). :class:`models.fraud_learner.OnlineFraudLearner` reads and
writes them through ``from_bytes`` and ``to_bytes``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Final

import orjson
from river import compose, linear_model, optim, preprocessing

if TYPE_CHECKING:
    from models.fraud_learner import OnlineFraudLearner

__all__ = ["PickledSnapshotError", "SnapshotError", "decode", "encode", "learned_count"]

_MAGIC: Final = b"SWFRJSON"
_FORMAT: Final = 2
_HEADER: Final = struct.Struct("<8sHQ32s")  # magic, format, learned, sha256 of the JSON
_PICKLED: Final = b"SWFRAUDL"  # format 1 of earlier releases, a pickle: refused unread

#: Builds a fresh learner from a snapshot's config values and feature names.
Make = Callable[[dict[str, float], Sequence[str]], "OnlineFraudLearner"]


class SnapshotError(ValueError):
    """Bytes that are not a snapshot of this format, a damaged one, or a model it cannot hold."""


class PickledSnapshotError(SnapshotError):
    """A snapshot of an earlier release (a pickle): refused, never unpickled."""


def encode(learner: OnlineFraudLearner) -> bytes:
    """A header (format, learned count, sha256 of the payload), then the state as JSON."""
    payload = orjson.dumps(_state(learner))
    digest = hashlib.sha256(payload).digest()
    return _HEADER.pack(_MAGIC, _FORMAT, learner.learned, digest) + payload


def learned_count(raw: bytes) -> int:
    """The learned count in a snapshot's header, without decoding the state."""
    if len(raw) < _HEADER.size:
        raise SnapshotError(f"a snapshot has at least {_HEADER.size} bytes, got {len(raw)}")
    magic, fmt, learned, _ = _HEADER.unpack_from(raw)
    if magic == _PICKLED:
        raise PickledSnapshotError(
            "pickled checkpoints of an earlier release are no longer loaded; the learner "
            "starts from an empty model (0 labels learned)"
        )
    if magic != _MAGIC or fmt != _FORMAT:
        raise SnapshotError(f"not a format-{_FORMAT} fraud learner snapshot")
    return int(learned)


def decode(raw: bytes, make: Make) -> OnlineFraudLearner:
    """The learner of a snapshot of :func:`encode`, built by ``make`` and given its state."""
    learned = learned_count(raw)
    digest = raw[_HEADER.size - 32 : _HEADER.size]
    payload = raw[_HEADER.size :]
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotError("snapshot checksum mismatch: damaged or truncated")
    try:
        state = orjson.loads(payload)
        learner = _restore(make, state)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"bad snapshot state: {exc!r}") from exc
    if learner.learned != learned:
        raise SnapshotError(f"snapshot header says {learned} learned, state says {learner.learned}")
    return learner


def _storable(model: Any) -> tuple[Any, Any]:
    """``(scaler, regression)`` of a pipeline the data-only format holds all of: a plain
    ``StandardScaler`` and a ``LogisticRegression`` stepped by SGD at constant rates on the log
    loss, without L1 (whose cumulative penalties it does not store)."""
    steps = list(model.steps.values()) if type(model) is compose.Pipeline else []
    if len(steps) == 2:
        scaler, regression = steps
        if (
            type(scaler) is preprocessing.StandardScaler
            and scaler.window_size is None
            and type(regression) is linear_model.LogisticRegression
            and type(regression.optimizer) is optim.SGD
            and type(regression.optimizer.lr) is optim.schedulers.Constant
            and type(regression.intercept_lr) is optim.schedulers.Constant
            and type(regression.loss) is optim.losses.Log
            and type(regression.initializer) is optim.initializers.Zeros
            and regression.initializer.value == 0.0
            and not regression.l1
        ):
            return scaler, regression
    raise SnapshotError(f"the snapshot format cannot hold this model: {model!r}")


def _num(value: float) -> float | str:
    """A float for JSON: ``nan``, ``inf`` and ``-inf`` as strings (JSON has no such numbers)."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def _nums(table: Any) -> dict[str, float | str]:
    return {str(name): _num(value) for name, value in table.items()}


def _state(learner: OnlineFraudLearner) -> dict[str, Any]:
    """Everything the learner predicts and learns from, as JSON-ready data."""
    scaler, regression = _storable(learner.model)
    sgd, loss = regression.optimizer, regression.loss
    return {
        "version": _FORMAT,
        "learned": learner.learned,
        "feature_names": list(learner.feature_names),
        "config": {f.name: _num(getattr(learner.config, f.name)) for f in fields(learner.config)},
        "scaler": {
            "with_std": bool(scaler.with_std),
            "counts": {str(name): int(count) for name, count in scaler.counts.items()},
            "means": _nums(scaler.means),
            "vars": _nums(scaler.vars),
        },
        "regression": {
            "weights": _nums(regression._weights.to_dict()),
            "intercept": _num(regression.intercept),
            "intercept_init": _num(regression.intercept_init),
            "intercept_lr": _num(regression.intercept_lr.learning_rate),
            "l2": _num(regression.l2),
            "clip_gradient": _num(regression.clip_gradient),
            "loss": {
                "name": "log",
                "weight_pos": _num(loss.weight_pos),
                "weight_neg": _num(loss.weight_neg),
            },
            "optimizer": {
                "name": "sgd",
                "learning_rate": _num(sgd.lr.learning_rate),
                "n_iterations": int(sgd.n_iterations),
            },
        },
    }


def _float(value: Any) -> float:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a count, got {value!r}")
    return value


def _table(value: Any, names: Sequence[str]) -> dict[str, Any]:
    """A JSON object keyed by features of ``names``, in its own order."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    unknown = set(value) - set(names)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}")
    return value


def _restore(make: Make, state: Any) -> OnlineFraudLearner:
    """A learner built afresh (``make``) from ``state``'s config and feature names, then given
    its state."""
    if not isinstance(state, dict) or state.get("version") != _FORMAT:
        raise ValueError(f"not a format-{_FORMAT} learner state")
    names = state["feature_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TypeError("feature_names must be a list of strings")
    if len(set(names)) != len(names):
        raise ValueError("feature_names repeat a name")
    config = state["config"]
    if not isinstance(config, dict):
        raise TypeError("config must be an object")
    learner = make({str(name): _float(value) for name, value in config.items()}, names)
    scaler, regression = learner.model.steps.values()
    s, r = state["scaler"], state["regression"]
    if not isinstance(s["with_std"], bool):
        raise TypeError("with_std must be a boolean")
    scaler.with_std = s["with_std"]
    for name, count in _table(s["counts"], names).items():
        scaler.counts[name] = _count(count)
    for name, mean in _table(s["means"], names).items():
        scaler.means[name] = _float(mean)
    for name, var in _table(s["vars"], names).items():
        scaler.vars[name] = _float(var)
    for name, weight in _table(r["weights"], names).items():
        regression._weights[name] = _float(weight)
    regression.intercept = _float(r["intercept"])
    regression.intercept_init = _float(r["intercept_init"])
    regression.intercept_lr.learning_rate = _float(r["intercept_lr"])
    regression.l2 = _float(r["l2"])
    regression.clip_gradient = _float(r["clip_gradient"])
    loss, sgd = r["loss"], r["optimizer"]
    if loss["name"] != "log" or sgd["name"] != "sgd":
        raise ValueError(f"unknown loss {loss['name']!r} or optimizer {sgd['name']!r}")
    regression.loss.weight_pos = _float(loss["weight_pos"])
    regression.loss.weight_neg = _float(loss["weight_neg"])
    regression.optimizer.lr.learning_rate = _float(sgd["learning_rate"])
    regression.optimizer.n_iterations = _count(sgd["n_iterations"])
    learner.learned = _count(state["learned"])
    return learner
