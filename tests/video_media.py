"""Real video test media and the CenterFace model, from the manifests (fetched if missing)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from models.assets import fetch, load_manifest
from models.centerface import CenterFace

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / ".streamwise" / "assets"
MANIFESTS = (ROOT / "models" / "video.toml", ROOT / "tests" / "media" / "video.toml")

Image = npt.NDArray[np.uint8]


def asset(name: str) -> Path:
    """The checked file of manifest asset ``name`` (``make assets`` fetched it already)."""
    for manifest in MANIFESTS:
        for entry in load_manifest(manifest):
            if entry.name == name:
                return fetch(entry, ASSETS)
    raise KeyError(name)


@cache
def detector() -> CenterFace:
    pinned = {a.name: a.sha256 for a in load_manifest(MANIFESTS[0])}
    return CenterFace(asset("centerface.onnx"), pinned["centerface.onnx"])


def image(name: str) -> Image:
    loaded = cv2.imread(str(asset(name)), cv2.IMREAD_COLOR)
    assert loaded is not None, name
    return np.asarray(loaded, np.uint8)


@cache
def clip(name: str) -> tuple[Image, ...]:
    """Every frame of a clip, BGR."""
    capture = cv2.VideoCapture(str(asset(name)))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(np.asarray(frame, np.uint8))
        ok, frame = capture.read()
    capture.release()
    assert frames, name
    return tuple(frames)
