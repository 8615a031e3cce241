"""The pluggable sound-event classifier: any ONNX model that takes log-mel patches.

streamwise ships none (the pretrained AudioSet models found in registry packages carry no
clear licence). Name your own with ``STREAMWISE_AUDIO__CLASSIFIER_PATH`` (an ``.onnx`` file
whose first input takes ``[N, 96, 64]`` or ``[N, 1, 96, 64]`` log-mel patches and whose first
output is ``[N, classes]`` scores) and ``STREAMWISE_AUDIO__CLASSIFIER_CLASSES`` (a text file,
one class name per line, in output order). ``STREAMWISE_AUDIO__CLASSIFIER_SHA256`` pins it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.assets import AssetError, sha256_of

__all__ = ["OnnxSoundClassifier", "SoundClassifier"]


class SoundClassifier(Protocol):
    """What the audio step needs of a classifier."""

    @property
    def version(self) -> str: ...

    @property
    def classes(self) -> list[str]: ...

    def predict_batch(self, patches: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


class OnnxSoundClassifier:
    """An ONNX classifier over ``[N, frames, mels]`` log-mel patches."""

    def __init__(self, model: Path, classes: Path, sha256: str | None = None) -> None:
        if not model.is_file() or not classes.is_file():
            raise AssetError(f"classifier {model} or its class map {classes} is missing")
        actual = sha256_of(model)
        if sha256 is not None and actual != sha256:
            raise AssetError(f"classifier {model}: sha256 {actual} != pinned {sha256}")
        self.classes = [line.strip() for line in classes.read_text().splitlines() if line.strip()]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.rank = len(first.shape)
        self.version = f"{model.stem}@{actual[:12]}"

    def predict_batch(self, patches: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = patches[:, None] if self.rank == 4 else patches
        scores = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)
        if scores.shape != (len(patches), len(self.classes)):
            raise ValueError(
                f"classifier output {scores.shape}, expected {len(self.classes)} classes"
            )
        return scores
