"""Frame sources (file, image folder, loop) and the producer CLI's import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.video.produce import encode_jpeg
from processors.video.sources import open_source
from tests.video_media import asset


def test_a_video_file_yields_every_frame_resized_to_the_width() -> None:
    source = open_source(str(asset("carphone.mp4")))
    assert source.native_fps is not None
    assert round(source.native_fps) == 30
    frames = list(source.frames(width=352))
    assert len(frames) == 120
    assert frames[0].shape == (288, 352, 3)


def test_an_image_folder_is_read_in_name_order_and_loops(tmp_path: Path) -> None:
    for i, level in enumerate((10, 120, 240)):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((20, 30, 3), level, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path))
    frames = source.frames(loop=True)
    levels = [int(next(frames)[0, 0, 0]) for _ in range(7)]
    assert levels == [10, 120, 240, 10, 120, 240, 10]


def test_a_missing_source_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no video file"):
        open_source("/nonexistent/clip.mp4")


def test_jpeg_frames_decode_to_their_size() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(image), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)


def test_the_cli_does_not_import_faust_which_would_take_the_loop_flag() -> None:
    # faust parses ``--loop`` (its event-loop option) from sys.argv when imported, which
    # broke `streamwise produce video ... --loop`; the CLI imports it only to run a worker.
    code = "import sys, pipelines.cli.main; sys.exit('faust' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
