"""The video step with fake events, the real detector and recorded outputs (no broker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import orjson

from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from pipelines.video.settings import VideoSettings
from pipelines.video.step import STEP, AnalyzeFrames
from processors.common.schemas import decode_dead_letter
from processors.video.frames import VideoFrame, decode_frame, encode_frame
from tests.pipelines.fakes import FakeEvent, FakeMessage
from tests.video_media import clip, detector

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TOPIC = "video-frames"


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(data.tobytes())


def frame_event(
    camera: str, n: int, image: np.ndarray, age_s: float = 0.0, offset: int = 0
) -> FakeEvent:
    h, w = image.shape[:2]
    at = NOW - timedelta(seconds=age_s)
    raw = encode_frame(VideoFrame(camera, n, at, "jpeg", w, h, jpeg(image)))
    return FakeEvent(FakeMessage(TOPIC, 0, offset, camera.encode(), raw))


def make_step(home: Path, **video: object) -> tuple[AnalyzeFrames, RecordingOutputs, StepMetrics]:
    settings = Settings(home=home, video=VideoSettings(**video))  # type: ignore[arg-type]
    outputs = RecordingOutputs()
    metrics = StepMetrics()
    step = AnalyzeFrames(settings, detector(), outputs, metrics, clock=NOW.timestamp)
    return step, outputs, metrics


def sent(outputs: RecordingOutputs, topic: str) -> list[dict[str, object]]:
    return [orjson.loads(s.value) for s in outputs.on(topic)]


def count(metrics: StepMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "streamwise_events_total", {"step": STEP, "outcome": outcome}
    )
    return value or 0.0


def test_one_prediction_per_frame_with_faces_across_two_cameras(home: Path) -> None:
    # 320x256, not the default 256x192: the cyclist's face (24x31 px of a 640x272 frame) is
    # ~12 px at that scale and below the smaller default's reach (see docs/operations.md).
    step, out, _ = make_step(
        home, motion_gating=False, mode="complete", detect_width=320, detect_height=256
    )
    car = clip("carphone.mp4")
    street = clip("bikes.mp4")
    batch = [frame_event("car", i, car[i], offset=i) for i in range(0, 12, 3)]
    batch += [frame_event("street", i, street[i], offset=100 + i) for i in (60, 125)]
    asyncio.run(run_batch(step, batch))
    predictions = sent(out, "predictions")
    assert [p["event_id"] for p in predictions] == [
        "car:0", "car:3", "car:6", "car:9", "street:60", "street:125",
    ]  # fmt: skip
    assert all(p["schema"] == "prediction/1" and p["detected"] for p in predictions)
    assert [len(p["faces"]) for p in predictions] == [1, 1, 1, 1, 0, 1]  # type: ignore[arg-type]
    assert predictions[0]["model_versions"]["detector"].startswith("centerface@")  # type: ignore[index]
    kinds = [(a["entity"], a["kind"]) for a in sent(out, "alerts")]
    assert kinds == [("camera:car", "faces_present"), ("camera:street", "faces_present")]


def test_bad_frames_go_to_dead_letters_and_the_rest_is_processed(home: Path) -> None:
    step, out, metrics = make_step(home, mode="complete")
    car = clip("carphone.mp4")
    good = frame_event("car", 1, car[1], offset=1)
    h, w = car[2].shape[:2]
    wrong_size = encode_frame(VideoFrame("car", 2, NOW, "jpeg", w + 1, h, jpeg(car[2])))
    garbage = encode_frame(VideoFrame("car", 3, NOW, "jpeg", w, h, b"\xff\xd8 not a jpeg"))
    batch = [
        FakeEvent(FakeMessage(TOPIC, 0, 10, b"car", b"{}")),
        FakeEvent(FakeMessage(TOPIC, 0, 11, b"car", wrong_size)),
        FakeEvent(FakeMessage(TOPIC, 0, 12, b"car", garbage)),
        FakeEvent(FakeMessage(TOPIC, 0, 13, b"car", None)),
        good,
    ]
    asyncio.run(run_batch(step, batch))
    letters = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    reasons = [(d.offset, d.reason) for d in letters]  # type: ignore[union-attr]
    assert reasons == [
        (10, "bad_envelope"), (13, "empty"), (11, "size_mismatch"), (12, "undecodable_image"),
    ]  # fmt: skip
    assert letters[2].value == wrong_size  # type: ignore[union-attr]
    assert [p["event_id"] for p in sent(out, "predictions")] == ["car:1"]
    assert count(metrics, "dead_letter") == 4
    assert count(metrics, "ok") == 1


def test_realtime_mode_skips_and_counts_stale_frames_under_overload(home: Path) -> None:
    step, out, metrics = make_step(home, mode="realtime", max_lag_s=1.0)
    car = clip("carphone.mp4")
    # a backlog: 20 frames per camera captured 5 s ago, the newest of each 0.1 s ago
    batch = []
    for cam in ("a", "b"):
        batch += [frame_event(cam, i, car[i], age_s=5.0, offset=i) for i in range(20)]
        batch.append(frame_event(cam, 20, car[20], age_s=0.1, offset=20))
    asyncio.run(run_batch(step, batch))
    predictions = sent(out, "predictions")
    assert [p["event_id"] for p in predictions] == ["a:20", "b:20"]
    assert [p["features"]["skipped_before"] for p in predictions] == [20.0, 20.0]  # type: ignore[index]
    assert count(metrics, "skipped") == 40
    assert count(metrics, "ok") == 2


def test_complete_mode_processes_every_frame_of_the_same_backlog(home: Path) -> None:
    step, out, metrics = make_step(home, mode="complete", max_lag_s=1.0)
    car = clip("carphone.mp4")
    batch = [frame_event("a", i, car[i], age_s=5.0, offset=i) for i in range(21)]
    asyncio.run(run_batch(step, batch))
    assert [p["frame_no"] for p in sent(out, "predictions")] == list(range(21))
    assert count(metrics, "skipped") == 0


def test_motion_gating_runs_the_detector_only_on_moving_frames(home: Path) -> None:
    step, out, _ = make_step(home, mode="complete", motion_gating=True, motion_threshold=0.01)
    still = clip("carphone.mp4")[0]
    batch = [frame_event("a", i, still, offset=i) for i in range(5)]
    asyncio.run(run_batch(step, batch))
    predictions = sent(out, "predictions")
    assert [p["detected"] for p in predictions] == [True, False, False, False, False]
    assert all(len(p["faces"]) == 1 for p in predictions)  # type: ignore[arg-type]
    assert all(p["faces_frame_no"] == 0 for p in predictions)


def test_anonymized_frames_have_their_faces_blurred(home: Path) -> None:
    step, out, _ = make_step(home, mode="complete", anonymize=True)
    car = clip("carphone.mp4")
    asyncio.run(run_batch(step, [frame_event("a", 0, car[0])]))
    [message] = out.on("video-anonymized")
    frame = decode_frame(message.value)
    assert isinstance(frame, VideoFrame)
    assert (frame.camera_id, frame.frame_no, frame.width, frame.height) == ("a", 0, 176, 144)
    image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
    from processors.video.face_boxes import detect_faces

    assert len(detect_faces(detector(), [car[0]], 320, 256, 0.3)[0]) == 1
    assert len(detect_faces(detector(), [image], 320, 256, 0.3)[0]) == 0


def test_a_camera_that_stops_sending_raises_camera_silent_once(home: Path) -> None:
    step, out, _ = make_step(home, silent_after_s=5.0)
    wall = [NOW.timestamp()]
    step.clock = lambda: wall[0]
    asyncio.run(run_batch(step, [frame_event("a", 0, clip("carphone.mp4")[0])]))
    wall[0] += 3
    assert asyncio.run(step.check_silent()) == 0
    wall[0] += 3
    assert asyncio.run(step.check_silent()) == 1
    assert asyncio.run(step.check_silent()) == 0
    [alert] = sent(out, "alerts")[-1:]
    assert alert["kind"] == "camera_silent"
    assert alert["entity"] == "camera:a"


# 640x480 frames: the analysis decodes the JPEGs at half size (see frame_analysis.reduction).


def vga(i: int) -> np.ndarray:
    return np.asarray(cv2.resize(clip("carphone.mp4")[i], (640, 480)), np.uint8)


def vga_frame(n: int, image: np.ndarray, width: int = 640, height: int = 480) -> VideoFrame:
    return VideoFrame("a", n, NOW, "jpeg", width, height, jpeg(image))


def test_reduced_decoding_is_chosen_for_large_jpegs_only() -> None:
    from processors.video.frame_analysis import AnalysisConfig, reduction

    config = AnalysisConfig(256, 192)
    assert reduction(vga_frame(0, vga(0)), config) == 2
    assert reduction(VideoFrame("a", 0, NOW, "jpeg", 1280, 960, b""), config) == 4
    assert reduction(VideoFrame("a", 0, NOW, "png", 640, 480, b""), config) == 1
    assert reduction(VideoFrame("a", 0, NOW, "jpeg", 640, 272, b""), config) == 1  # 136 < 240
    assert reduction(VideoFrame("a", 0, NOW, "jpeg", 642, 480, b""), config) == 2
    assert reduction(VideoFrame("a", 0, NOW, "jpeg", 645, 480, b""), config) == 1  # odd width
    assert reduction(vga_frame(0, vga(0)), AnalysisConfig(640, 480)) == 1  # detector wants all


def test_jpeg_size_reads_baseline_and_progressive_headers() -> None:
    from processors.video.frame_analysis import jpeg_size

    image = vga(0)[:, :637]
    plain = jpeg(image)
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    assert jpeg_size(plain) == (637, 480)
    assert jpeg_size(progressive.tobytes()) == (637, 480)
    assert jpeg_size(plain[:20]) is None
    assert jpeg_size(b"\x89PNG\r\n\x1a\n") is None


def test_faces_of_a_half_size_decode_are_in_the_whole_frames_pixels() -> None:
    from processors.video.face_boxes import detect_faces
    from processors.video.frame_analysis import AnalysisConfig, Analyzed, analyze_frames

    frames = [vga_frame(i, vga(i)) for i in range(0, 60, 12)]
    config = AnalysisConfig(256, 192, 0.5, motion_gating=False)
    results = analyze_frames(frames, detector(), {}, config)
    full = [cv2.imdecode(np.frombuffer(f.image, np.uint8), cv2.IMREAD_COLOR) for f in frames]
    expected = detect_faces(detector(), full, 256, 192, 0.5)
    for result, boxes in zip(results, expected, strict=True):
        assert isinstance(result, Analyzed)
        assert len(result.faces) == len(boxes) == 1
        np.testing.assert_allclose(result.faces[:, :4], boxes[:, :4], atol=12)
        assert 0 < result.faces[0, 0] < result.faces[0, 2] <= 640
        assert 0 < result.faces[0, 1] < result.faces[0, 3] <= 480


def test_anonymizing_does_not_change_features_or_faces_of_large_frames() -> None:
    from processors.video.frame_analysis import AnalysisConfig, Analyzed, analyze_frames

    frames = [vga_frame(i, vga(i)) for i in range(3)]
    plain = analyze_frames(frames, detector(), {}, AnalysisConfig(motion_gating=False))
    blurred = analyze_frames(
        frames, detector(), {}, AnalysisConfig(motion_gating=False, anonymize=True)
    )
    for a, b in zip(plain, blurred, strict=True):
        assert isinstance(a, Analyzed)
        assert isinstance(b, Analyzed)
        assert a.anonymized is None
        assert b.anonymized is not None
        assert abs(a.features.brightness - b.features.brightness) < 1.0
        assert abs(a.features.sharpness - b.features.sharpness) < 0.1 * a.features.sharpness
        assert len(a.faces) == len(b.faces) == 1
        np.testing.assert_allclose(a.faces[:, :4], b.faces[:, :4], atol=12)
        out = cv2.imdecode(np.frombuffer(b.anonymized, np.uint8), cv2.IMREAD_COLOR)
        assert out.shape == (480, 640, 3)  # the whole frame, not the half-size decode


def test_large_bad_frames_are_dead_lettered_with_the_reduced_decoder(home: Path) -> None:
    step, out, _ = make_step(home, mode="complete")
    good = vga(0)
    cases = [
        VideoFrame("a", 1, NOW, "jpeg", 640, 480, jpeg(good[:, :638])),  # header says 638 wide
        VideoFrame("a", 2, NOW, "jpeg", 640, 480, jpeg(good[:478])),
        VideoFrame("a", 3, NOW, "jpeg", 640, 480, b"\xff\xd8 not a jpeg"),
        VideoFrame("a", 4, NOW, "jpeg", 640, 480, jpeg(good)[:600]),  # header, then truncated
        vga_frame(5, good),
    ]
    events = [FakeEvent(FakeMessage(TOPIC, 0, f.frame_no, b"a", encode_frame(f))) for f in cases]
    asyncio.run(run_batch(step, events))
    letters = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    reasons = [(d.offset, d.reason) for d in letters]  # type: ignore[union-attr]
    assert reasons[:3] == [(1, "size_mismatch"), (2, "size_mismatch"), (3, "undecodable_image")]
    predictions = [p["frame_no"] for p in sent(out, "predictions")]
    assert 5 in predictions
    assert not {1, 2, 3} & set(predictions)
