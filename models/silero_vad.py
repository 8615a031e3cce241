"""Silero VAD (ONNX): speech probability of 32 ms frames, batched across streams.

The model is recurrent: each stream has its own state ``[2, 128]`` and each frame is the
512 new samples at 16 kHz preceded by the previous frame's last 64 (``[B, 576]``). One call
scores one frame of each of ``B`` streams, so a batch holds at most one frame per stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.assets import Asset, AssetError, load_manifest, sha256_of

__all__ = ["CONTEXT", "FRAME", "RATE", "STATE_SHAPE", "SileroVad", "pinned_asset"]

RATE: Final = 16000
FRAME: Final = 512
CONTEXT: Final = 64
STATE_SHAPE: Final = (2, 128)
_MANIFEST: Final = Path(__file__).with_name("audio.toml")
_NAME: Final = "silero_vad.onnx"

Array = npt.NDArray[np.float32]


def pinned_asset() -> Asset:
    """The VAD file's entry in ``models/audio.toml`` (version, sha256, licence)."""
    for asset in load_manifest(_MANIFEST):
        if asset.name == _NAME and asset.sha256:
            return asset
    raise AssetError(f"{_MANIFEST} has no pinned {_NAME}")


class SileroVad:
    """``predict_batch(frames, state) -> (probabilities, state)`` over one ONNX session."""

    def __init__(self, path: Path, sha256: str | None = None, threads: int = 1) -> None:
        pinned = pinned_asset()
        expected = sha256 or str(pinned.sha256)
        if not path.is_file():
            raise AssetError(f"VAD model {path} is missing; run `streamwise assets fetch`")
        actual = sha256_of(path)
        if actual != expected:
            raise AssetError(f"VAD model {path}: sha256 {actual} != pinned {expected}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one core per worker
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.version = f"silero-vad/{pinned.version}"
        self._sr = np.array(RATE, dtype=np.int64)

    @staticmethod
    def initial_state() -> Array:
        """The state of a stream that has seen nothing."""
        return np.zeros(STATE_SHAPE, dtype=np.float32)

    def predict_batch(self, frames: Array, states: Array) -> tuple[Array, Array]:
        """Score ``frames [B, 576]`` with ``states [B, 2, 128]``; return ``[B]`` and new states."""
        state = np.ascontiguousarray(states.transpose(1, 0, 2), dtype=np.float32)
        out, new_state = self.session.run(
            None, {"input": frames.astype(np.float32, copy=False), "state": state, "sr": self._sr}
        )
        probs = np.asarray(out, dtype=np.float32).reshape(-1)
        return probs, np.asarray(new_state, dtype=np.float32).transpose(1, 0, 2).copy()
