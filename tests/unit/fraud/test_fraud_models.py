"""Conformance of the fraud models.

Every ``[[model]]`` of ``models/fraud.toml`` loads with its checksum verified (a tampered
copy is refused), takes the handbook features in order, and scores a fixed batch the same
way twice. Hot reload swaps in a new file only once the manifest lists it, and a bad file
leaves the old model scoring. The River learner learns, never learns while scoring, and a
snapshot restores identical predictions. Training is reproducible to the byte.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.assets import AssetError
from models.fraud_learner import OnlineFraudLearner, SnapshotError
from models.fraud_onnx import (
    DEFAULT_MANIFEST,
    ModelEntry,
    OnnxFraudModel,
    ReloadingFraudModel,
    load_entries,
    write_manifest,
)
from models.fraud_train import LgbmParams, fit, main, roc_auc, to_onnx
from processors.fraud.features import FEATURE_NAMES

ENTRIES = load_entries(DEFAULT_MANIFEST)
WIDTH = len(FEATURE_NAMES)


def features(n: int, seed: int) -> npt.NDArray[np.float64]:
    """Plausible handbook feature rows: amounts, flags, counts, means and risks."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, WIDTH))
    x[:, 0] = rng.gamma(2.0, 40.0, n)
    x[:, 1:3] = rng.integers(0, 2, (n, 2))
    for col, top in zip((3, 5, 7), (5, 25, 100), strict=True):
        x[:, col] = rng.integers(1, top, n)
        x[:, col + 1] = rng.gamma(2.0, 30.0, n)
    for col, top in zip((9, 11, 13), (10, 60, 250), strict=True):
        x[:, col] = rng.integers(0, top, n)
        x[:, col + 1] = rng.beta(0.3, 5.0, n)
    return x


def labels(x: npt.NDArray[np.float64], seed: int) -> npt.NDArray[np.int8]:
    """Fraud when the amount is high or the terminal risky, plus some noise."""
    noise = np.random.default_rng(seed).random(len(x)) < 0.02
    return ((x[:, 0] > 220) | (x[:, 14] > 0.4) | noise).astype(np.int8)


FIXED = features(64, seed=7)


def tiny_onnx(seed: int) -> bytes:
    x = features(3000, seed)
    params = LgbmParams(n_trees=5 + seed, num_leaves=4, min_child_samples=20, seed=seed)
    return to_onnx(fit(x, labels(x, seed), params), WIDTH)


def listing(path: Path, raw: bytes, version: str) -> dict[str, Any]:
    import hashlib

    return {
        "name": "fraud_lgbm",
        "file": path.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "version": version,
        "feature_names": list(FEATURE_NAMES),
        "licence": "Apache-2.0",
        "source": "test",
    }


def put(path: Path, raw: bytes) -> None:
    """Replace ``path`` the way a deployment should: write aside, rename over."""
    path.with_suffix(".tmp").write_bytes(raw)
    os.replace(path.with_suffix(".tmp"), path)


# ----------------------------------------------------------------------------- conformance
def test_the_manifest_lists_a_model() -> None:
    assert [e.name for e in ENTRIES] == ["fraud_lgbm"]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_loads_verified_and_scores_deterministically(entry: ModelEntry) -> None:
    assert entry.licence
    assert entry.source
    assert entry.details["training"]["rows"] > 0
    assert entry.feature_names == FEATURE_NAMES  # what the workers compute, in this order
    model = OnnxFraudModel.from_manifest(DEFAULT_MANIFEST, entry.name)
    assert model.version == entry.version
    assert model.sha256 == entry.sha256
    first = model.predict_batch(FIXED)
    again = OnnxFraudModel.from_manifest(DEFAULT_MANIFEST, entry.name).predict_batch(FIXED)
    assert first.dtype == np.float64
    assert first.shape == (64,)
    assert first.tobytes() == again.tobytes() == model.predict_batch(FIXED).tobytes()
    assert ((first >= 0) & (first <= 1)).all()
    assert np.ptp(first) > 0.1  # it tells rows apart
    one_by_one = np.concatenate([model.predict_batch(FIXED[i : i + 1]) for i in range(64)])
    np.testing.assert_allclose(one_by_one, first, rtol=0, atol=1e-6)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_a_tampered_copy_is_refused(entry: ModelEntry, tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    raw = bytearray(entry.path(DEFAULT_MANIFEST).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    with pytest.raises(AssetError, match="sha256"):
        OnnxFraudModel(copy, entry.sha256, entry.feature_names, entry.version)
    with pytest.raises(AssetError, match="missing"):
        OnnxFraudModel(tmp_path / "absent.onnx", entry.sha256, entry.feature_names)


def test_shapes_are_checked_with_clear_errors() -> None:
    model = OnnxFraudModel.from_manifest()
    with pytest.raises(ValueError, match=r"shape \[n, 15\], got \(64, 14\)"):
        model.predict_batch(FIXED[:, :14])
    with pytest.raises(ValueError, match=r"got \(15,\)"):
        model.predict_batch(FIXED[0])
    assert model.predict_batch(FIXED[:0]).shape == (0,)
    with pytest.raises(AssetError, match=r"expected one \[N, 14\]"):
        OnnxFraudModel(model.path, model.sha256, FEATURE_NAMES[:14])


# ----------------------------------------------------------------------------- hot reload
@pytest.fixture(scope="module")
def two_models() -> tuple[bytes, bytes]:
    return tiny_onnx(1), tiny_onnx(2)


def test_reload_takes_a_new_file_once_the_manifest_lists_it(
    tmp_path: Path, two_models: tuple[bytes, bytes]
) -> None:
    old, new = two_models
    path, manifest = tmp_path / "fraud.onnx", tmp_path / "fraud.toml"
    put(path, old)
    write_manifest(manifest, listing(path, old, "t/1"))
    model = ReloadingFraudModel(path, manifest)
    before, version = model.predict_batch_versioned(FIXED)
    assert version == "t/1"
    assert not model.maybe_reload()

    put(path, new)  # the file first: not listed yet, refused, the old model scores on
    assert not model.maybe_reload()
    assert "sha256" in str(model.last_error)
    scores, version = model.predict_batch_versioned(FIXED)
    assert version == "t/1"
    assert scores.tobytes() == before.tobytes()

    write_manifest(manifest, listing(path, new, "t/2"))
    assert model.maybe_reload()
    after, version = model.predict_batch_versioned(FIXED)
    assert version == model.version == "t/2"
    assert model.last_error is None
    assert not np.array_equal(after, before)
    assert model.reloads == 1
    assert not model.maybe_reload()


def test_a_bad_file_is_refused_and_the_old_model_keeps_scoring(
    tmp_path: Path, two_models: tuple[bytes, bytes]
) -> None:
    good = two_models[0]
    path, manifest = tmp_path / "fraud.onnx", tmp_path / "fraud.toml"
    put(path, good)
    write_manifest(manifest, listing(path, good, "t/1"))
    model = ReloadingFraudModel(path, manifest)
    expected = model.predict_batch(FIXED)

    put(path, good[: len(good) // 2])  # truncated: checksum mismatch
    assert not model.maybe_reload()
    assert "sha256" in str(model.last_error)
    garbage = b"not an onnx model"
    put(path, garbage)  # listed, so the checksum passes, but onnxruntime cannot load it
    write_manifest(manifest, listing(path, garbage, "t/2"))
    assert not model.maybe_reload()
    assert "onnxruntime" in str(model.last_error)
    path.unlink()
    assert not model.maybe_reload()
    assert "missing" in str(model.last_error)
    put(path, good)
    reordered = {**listing(path, good, "t/3"), "feature_names": list(FEATURE_NAMES[::-1])}
    write_manifest(manifest, reordered)
    assert not model.maybe_reload()
    assert "feature order" in str(model.last_error)
    write_manifest(manifest, {**listing(path, good, "t/1"), "file": "other.onnx"})
    assert not model.maybe_reload()
    assert "lists no model" in str(model.last_error)

    scores, version = model.predict_batch_versioned(FIXED)
    assert version == "t/1"
    assert scores.tobytes() == expected.tobytes()
    assert model.reloads == 0


# ----------------------------------------------------------------------------- River learner
def test_the_learner_learns_only_when_told() -> None:
    x = features(4000, seed=3)
    y = labels(x, seed=3)
    learner = OnlineFraudLearner()
    untrained = learner.predict_batch(FIXED)
    assert learner.learned == 0
    assert learner.version == "river-logreg/0"
    learner.learn_many(x[:3000], y[:3000])
    assert learner.learned == 3000
    assert learner.version == "river-logreg/3000"
    snapshot = learner.to_bytes()
    scores = learner.predict_batch(x[3000:])
    assert learner.to_bytes() == snapshot  # scoring changed nothing
    assert not np.array_equal(learner.predict_batch(FIXED), untrained)
    assert roc_auc(y[3000:], scores) > 0.8

    looped = OnlineFraudLearner()
    for row, label in zip(x[:3000], y[:3000], strict=True):
        looped.learn(row, bool(label))
    assert looped.predict_batch(FIXED).tobytes() == learner.predict_batch(FIXED).tobytes()


def test_a_snapshot_restores_identical_predictions() -> None:
    x = features(1500, seed=4)
    y = labels(x, seed=4)
    learner = OnlineFraudLearner()
    learner.learn_many(x[:1000], y[:1000])
    raw = learner.to_bytes()
    assert OnlineFraudLearner.snapshot_learned(raw) == 1000
    clone = OnlineFraudLearner.from_bytes(raw)
    assert clone.learned == 1000
    assert clone.version == learner.version
    assert clone.predict_batch(FIXED).tobytes() == learner.predict_batch(FIXED).tobytes()
    for model in (learner, clone):  # and both keep learning the same way
        model.learn_many(x[1000:], y[1000:])
    assert clone.predict_batch(FIXED).tobytes() == learner.predict_batch(FIXED).tobytes()

    damaged = bytearray(raw)
    damaged[-10] ^= 0xFF
    with pytest.raises(SnapshotError, match="checksum"):
        OnlineFraudLearner.from_bytes(bytes(damaged))
    with pytest.raises(SnapshotError, match="not a format-2"):
        OnlineFraudLearner.from_bytes(b"x" * 100)
    with pytest.raises(SnapshotError, match="at least"):
        OnlineFraudLearner.from_bytes(raw[:10])


def test_the_learner_checks_shapes() -> None:
    learner = OnlineFraudLearner()
    with pytest.raises(ValueError, match=r"shape \[n, 15\]"):
        learner.predict_batch(FIXED[:, :3])
    with pytest.raises(ValueError, match="expected 15 features, got 14"):
        learner.learn(FIXED[0, :14], True)
    with pytest.raises(ValueError, match="do not match"):
        learner.learn_many(FIXED, [True])
    assert learner.learned == 0


# ----------------------------------------------------------------------------- training
def test_training_is_reproducible_and_versions_count_new_files(tmp_path: Path) -> None:
    tiny = ["--customers", "200", "--terminals", "400", "--days", "136", "--trees", "20"]
    manifest = tmp_path / "fraud.toml"
    for out in ("a", "b"):
        assert main([*tiny, "--out", str(tmp_path / out), "--manifest", str(manifest)]) == 0
    a, b = (tmp_path / d / "fraud_lgbm.onnx" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    [entry] = load_entries(manifest)
    assert entry.file == "b/fraud_lgbm.onnx"
    assert entry.version == f"fraud-lgbm/1+{entry.sha256[:12]}"  # same bytes, same version
    assert entry.details["evaluation"]["rows"] > 0
    trained = OnnxFraudModel.from_manifest(manifest)
    scores = trained.predict_batch(FIXED)
    shutil.copyfile(a, tmp_path / "again.onnx")
    same = OnnxFraudModel(tmp_path / "again.onnx", entry.sha256, FEATURE_NAMES)
    assert same.predict_batch(FIXED).tobytes() == scores.tobytes()

    assert main([*tiny[:-1], "21", "--out", str(tmp_path / "c"), "--manifest", str(manifest)]) == 0
    [entry] = load_entries(manifest)
    assert entry.version.startswith("fraud-lgbm/2+")
    assert entry.file == "c/fraud_lgbm.onnx"


@pytest.mark.parametrize("learned", [0, 1, 7, 2500])
def test_batch_scores_of_the_learner_are_rivers_own_scores_bit_for_bit(learned: int) -> None:
    """predict_batch computes a column at a time; River, asked row by row, must agree."""
    x = features(3000, seed=11)
    x[::5, 2] = 0.0  # a column with ties and zeros
    learner = OnlineFraudLearner()
    learner.learn_many(x[:learned], labels(x, seed=11)[:learned])
    rows = x[2500:]
    river = [learner.model.predict_proba_one(learner._row(r)).get(True, 0.0) for r in rows]
    assert learner.predict_batch(rows).tobytes() == np.asarray(river, np.float64).tobytes()
    one = [learner.predict_one(r) for r in rows.tolist()]  # the prequential score
    assert np.asarray(one, np.float64).tobytes() == np.asarray(river, np.float64).tobytes()


def test_the_learners_steps_learn_exactly_what_rivers_pipeline_learns() -> None:
    """learn() calls the scaler and the regression itself; River's Pipeline must agree."""
    x = features(2000, seed=5)
    x[::7, 4] = 0.0
    y = labels(x, seed=5)
    ours, river = OnlineFraudLearner(), OnlineFraudLearner()
    ours.learn_many(x, y)
    for row, flag in zip(x.tolist(), y.tolist(), strict=True):
        river.model.learn_one(river._row(row), bool(flag))
    ours_scaler, ours_lr = ours.model.steps.values()
    river_scaler, river_lr = river.model.steps.values()
    assert (ours_scaler.means, ours_scaler.vars) == (river_scaler.means, river_scaler.vars)
    assert ours_lr._weights.to_dict() == river_lr._weights.to_dict()
    assert ours_lr.intercept == river_lr.intercept
    rows = features(50, seed=6)
    assert ours.predict_batch(rows).tobytes() == river.predict_batch(rows).tobytes()


def _river_state(learner: OnlineFraudLearner) -> tuple[Any, ...]:
    scaler, regression = learner.model.steps.values()
    return (
        dict(scaler.counts),
        dict(scaler.means),
        dict(scaler.vars),
        regression._weights.to_dict(),
        regression.intercept,
        regression.optimizer.n_iterations,
        learner.learned,
    )


@pytest.mark.parametrize("warm", [0, 1, 300])
def test_prequential_learning_is_rivers_predict_then_learn_bit_for_bit(warm: int) -> None:
    """learn_prequential steps lists, not River's dicts: River, row by row, must agree."""
    x = features(1500, seed=21)
    x[::3, 6] = 0.0  # a column with ties and zeros
    x[:, 1] = 1.0  # a constant column: no variance, scaled to 0.0
    y = labels(x, seed=21).astype(bool)
    ours, river = OnlineFraudLearner(), OnlineFraudLearner()
    for model in (ours, river):
        model.learn_many(x[:warm], y[:warm])
    scores = ours.learn_prequential(x[warm:].tolist(), y[warm:].tolist())
    expected = []
    for row, flag in zip(x[warm:].tolist(), y[warm:].tolist(), strict=True):
        expected.append(river.model.predict_proba_one(river._row(row)).get(True, 0.0))
        river.model.learn_one(river._row(row), flag)
        river.learned += 1
    assert np.asarray(scores).tobytes() == np.asarray(expected, np.float64).tobytes()
    assert _river_state(ours) == _river_state(river)
    assert ours.predict_batch(FIXED).tobytes() == river.predict_batch(FIXED).tobytes()


def test_prequential_learning_of_another_pipeline_goes_row_by_row() -> None:
    """An L2 penalty is outside the plain SGD step; River learns it row by row instead."""
    from river import linear_model, optim

    x = features(400, seed=22)
    y = labels(x, seed=22).astype(bool)
    ours, river = OnlineFraudLearner(), OnlineFraudLearner()
    for model in (ours, river):
        scaler = model.model["StandardScaler"]
        model.model = scaler | linear_model.LogisticRegression(optim.SGD(0.005), l2=0.01)
    assert ours._sgd_parts() is None
    scores = ours.learn_prequential(x.tolist(), y.tolist())
    expected = []
    for row, flag in zip(x.tolist(), y.tolist(), strict=True):
        expected.append(river.model.predict_proba_one(river._row(row)).get(True, 0.0))
        river.model.learn_one(river._row(row), flag)
    assert scores == expected
    assert ours.learned == 400
    assert ours.predict_batch(FIXED).tobytes() == river.predict_batch(FIXED).tobytes()


def test_prequential_learning_checks_every_row_before_learning_any() -> None:
    learner = OnlineFraudLearner()
    learner.learn_many(FIXED[:10], [True, False] * 5)
    before = learner.to_bytes()
    rows = [*FIXED[:3].tolist(), FIXED[3, :14].tolist()]
    with pytest.raises(ValueError, match="expected 15 features, got 14"):
        learner.learn_prequential(rows, [True] * 4)
    with pytest.raises(ValueError, match="3 rows do not match 2 labels"):
        learner.learn_prequential(FIXED[:3].tolist(), [True, False])
    assert learner.learn_prequential([], []) == []
    assert learner.to_bytes() == before
