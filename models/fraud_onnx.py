"""The fraud scorer: an ONNX model from ``models/fraud.toml``, checked by sha256, hot-reloadable.

The manifest lists one ``[[model]]`` table per file (name, file relative to the manifest,
sha256, version, feature_names, licence, source, and how it was trained). A file is loaded
once into memory, hashed, and the session is built from those same bytes, so what runs is
what was checked.

:class:`ReloadingFraudModel` watches the file and the manifest. A changed file is accepted
only if the manifest, read again, lists it with that sha256: an unlisted or mismatched file
is refused and the model that was scoring keeps scoring, because the manifest is what pins
a model's checksum and feature order. Writing the new file and then the new manifest entry
(either order) makes the swap; the refusal in between is recorded, not raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.assets import AssetError

__all__ = [
    "DEFAULT_MANIFEST",
    "ModelEntry",
    "OnnxFraudModel",
    "ReloadingFraudModel",
    "find_entry",
    "load_entries",
    "write_atomic",
    "write_manifest",
]

log = logging.getLogger(__name__)

DEFAULT_MANIFEST: Final = Path(__file__).with_name("fraud.toml")
_MANIFEST_HEADER = (
    "# Fraud scorers, written by `python -m models.fraud_train` and read by models/fraud_onnx.py.\n"
    "# `file` is relative to this manifest; `sha256` is checked on every load."
)
_PROBABILITIES: Final = "probabilities"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ModelEntry:
    """One ``[[model]]`` table of the manifest; ``details`` keeps the training record."""

    name: str
    file: str
    sha256: str
    version: str
    feature_names: tuple[str, ...]
    licence: str
    source: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def path(self, manifest: Path) -> Path:
        """The model file; ``file`` is relative to the manifest's folder."""
        return manifest.parent / self.file


def load_entries(manifest: Path) -> list[ModelEntry]:
    """Every ``[[model]]`` of ``manifest``; each must name its file, checksum and features."""
    entries = []
    for raw in tomllib.loads(manifest.read_text()).get("model", []):
        table = dict(raw)
        try:
            entry = ModelEntry(
                name=table.pop("name"),
                file=table.pop("file"),
                sha256=table.pop("sha256"),
                version=table.pop("version"),
                feature_names=tuple(table.pop("feature_names")),
                licence=table.pop("licence"),
                source=table.pop("source"),
                details=table,
            )
        except KeyError as exc:
            raise AssetError(f"{manifest}: a [[model]] lacks {exc.args[0]!r}") from exc
        entries.append(entry)
    return entries


def find_entry(manifest: Path, name: str | None = None, path: Path | None = None) -> ModelEntry:
    """The entry called ``name``, or the one whose file is ``path``."""
    for entry in load_entries(manifest):
        if name is not None and entry.name == name:
            return entry
        if path is not None and entry.path(manifest).resolve() == path.resolve():
            return entry
    raise AssetError(f"{manifest} lists no model {name or path}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")


def _toml_table(header: str, table: dict[str, Any], lines: list[str]) -> None:
    """``table`` under ``header``: plain keys first, then nested tables as sub-headers."""
    lines.append(header)
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    prefix = header.strip("[]")
    for key, value in nested.items():
        lines.append("")
        _toml_table(f"[{prefix}.{_toml_key(key)}]", value, lines)


def write_manifest(manifest: Path, entry: dict[str, Any]) -> None:
    """Put ``entry`` in place of the model of the same name (others kept), atomically."""
    models = tomllib.loads(manifest.read_text()).get("model", []) if manifest.exists() else []
    models = [m for m in models if m.get("name") != entry["name"]] + [entry]
    lines = [_MANIFEST_HEADER]
    for model in sorted(models, key=lambda m: str(m["name"])):
        lines.append("")
        _toml_table("[[model]]", model, lines)
    write_atomic(manifest, ("\n".join(lines) + "\n").encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside ``path`` and rename over it, so a watcher never reads half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


class OnnxFraudModel:
    """``predict_batch(features [n, k]) -> [n]`` fraud probabilities from one ONNX session."""

    def __init__(
        self,
        path: Path,
        sha256: str,
        feature_names: Sequence[str],
        version: str | None = None,
        threads: int = 1,
    ) -> None:
        if not path.is_file():
            raise AssetError(f"fraud model {path} is missing; run `python -m models.fraud_train`")
        raw = path.read_bytes()
        actual = hashlib.sha256(raw).hexdigest()
        if actual != sha256:
            raise AssetError(f"fraud model {path}: sha256 {actual} != expected {sha256}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unexported error types
            raise AssetError(f"fraud model {path}: onnxruntime cannot load it: {exc}") from exc
        self.path = path
        self.sha256 = actual
        self.feature_names = tuple(feature_names)
        self.version = version or f"fraud-onnx/{actual[:12]}"
        self._input = self._check_signature()

    @classmethod
    def from_manifest(
        cls, manifest: Path = DEFAULT_MANIFEST, name: str = "fraud_lgbm", threads: int = 1
    ) -> OnnxFraudModel:
        """Load the entry ``name`` of ``manifest``, verified against its sha256."""
        entry = find_entry(manifest, name=name)
        return cls(entry.path(manifest), entry.sha256, entry.feature_names, entry.version, threads)

    def _check_signature(self) -> str:
        """The input's name; the model must take ``[N, k]`` floats and give probabilities."""
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        width = len(self.feature_names)
        if len(inputs) != 1 or list(inputs[0].shape)[1:] != [width]:
            shapes = [i.shape for i in inputs]
            raise AssetError(f"fraud model {self.path}: inputs {shapes}, expected one [N, {width}]")
        if _PROBABILITIES not in outputs:
            raise AssetError(f"fraud model {self.path}: no {_PROBABILITIES!r} output")
        name: str = inputs[0].name
        return name

    def predict_batch(self, features: npt.ArrayLike) -> FloatArray:
        """Fraud probability of each row; columns in :attr:`feature_names` order."""
        x = np.asarray(features)
        width = len(self.feature_names)
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"expected features of shape [n, {width}], got {x.shape}")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        (probs,) = self.session.run([_PROBABILITIES], {self._input: x32})
        scores: FloatArray = np.asarray(probs, dtype=np.float64)[:, 1]
        return scores


def _stamp(*paths: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """(mtime_ns, size, inode) of each path, None where missing: a cheap change check."""
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


class ReloadingFraudModel:
    """An :class:`OnnxFraudModel` that picks up a new file listed in the manifest.

    ``maybe_reload()`` costs two ``stat`` calls when nothing changed. A batch is always scored
    by one model, whose version :meth:`predict_batch_versioned` returns with the scores.
    """

    def __init__(self, path: Path, manifest: Path = DEFAULT_MANIFEST, threads: int = 1) -> None:
        self.path = path
        self.manifest = manifest
        self.threads = threads
        self._seen = _stamp(path, manifest)
        self._model = self._load()  # a bad model at start-up is an error, not a fallback
        self.reloads = 0
        self.last_error: str | None = None

    def _load(self) -> OnnxFraudModel:
        entry = find_entry(self.manifest, path=self.path)
        return OnnxFraudModel(
            self.path, entry.sha256, entry.feature_names, entry.version, self.threads
        )

    @property
    def model(self) -> OnnxFraudModel:
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._model.feature_names

    def maybe_reload(self) -> bool:
        """Swap in the file if it or the manifest changed and it verifies; True if swapped.

        A refused file (unlisted, checksum mismatch, unloadable, other feature order) leaves
        the current model in place; the reason is logged and kept in :attr:`last_error`, and
        the same file and manifest are not tried again until one of them changes.
        """
        stamp = _stamp(self.path, self.manifest)
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            fresh = self._load()
            if fresh.feature_names != self._model.feature_names:
                raise AssetError(f"{self.path}: feature order changed; needs a worker restart")
        except Exception as exc:  # whatever is wrong with the new file, scoring goes on
            self.last_error = str(exc)
            log.warning("fraud model reload refused, keeping %s: %s", self.version, exc)
            return False
        self.last_error = None
        if fresh.sha256 == self._model.sha256 and fresh.version == self._model.version:
            return False  # touched or re-listed, same model
        old, self._model = self._model, fresh  # one reference store: batches see old or new
        self.reloads += 1
        log.info("fraud model reloaded: %s -> %s", old.version, fresh.version)
        return True

    def predict_batch_versioned(self, features: npt.ArrayLike) -> tuple[FloatArray, str]:
        """Scores and the version of the one model that produced all of them."""
        model = self._model
        return model.predict_batch(features), model.version

    def predict_batch(self, features: npt.ArrayLike) -> FloatArray:
        return self.predict_batch_versioned(features)[0]
