"""The video worker through the real broker: two cameras from real clips, bad frames, silence."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings
from pipelines.video.produce import Camera, publish_video
from pipelines.video.settings import VideoSettings
from processors.common.schemas import DeadLetter, decode_dead_letter
from processors.video.frames import VideoFrame, decode_frame, encode_frame
from processors.video.sources import open_source
from tests.integration.conftest import publish_raw, read_topic
from tests.video_media import asset

FRAMES = 20


def read_raw(settings: Settings, topic: str, count: int, timeout_s: float = 60.0) -> list[bytes]:
    """The values of ``topic`` from the beginning, undecoded, until ``count`` arrived."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client_config(settings), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                values.extend(r.value for r in batch)
        return values
    finally:
        consumer.close()


def test_two_cameras_predictions_dead_letters_anonymized_and_silence(
    settings: Settings, start_worker: Callable[..., Any]
) -> None:
    video = VideoSettings(
        mode="complete",
        detector_path=asset("centerface.onnx"),
        anonymize=True,
        silent_after_s=3.0,
        batch_size=8,
    )
    settings = settings.model_copy(update={"video": video})
    worker = start_worker(settings, "video")
    worker.wait_assigned(settings.topics.video_frames)
    cameras = [
        Camera("car", open_source(str(asset("carphone.mp4")))),
        Camera("street", open_source(str(asset("bikes.mp4")))),
    ]
    report = publish_video(settings, cameras, width=320, realtime=False, limit=FRAMES)
    assert report.frames == {"car": FRAMES, "street": FRAMES}
    tiny = b"\xff\xd8 not a jpeg"
    now = datetime.now(UTC)
    publish_raw(
        settings,
        settings.topics.video_frames,
        [
            (b"car", b"garbage"),
            (b"car", encode_frame(VideoFrame("car", 99, now, "jpeg", 320, 262, tiny))),
        ],
    )
    total = 2 * FRAMES
    predictions = read_topic(settings, settings.topics.predictions, lambda r: len(r) >= total)
    assert len(predictions) == total, worker.log_tail()
    by_camera: dict[str, list[int]] = {"car": [], "street": []}
    for p in predictions:
        by_camera[p["camera_id"]].append(p["frame_no"])
    assert sorted(by_camera["car"]) == list(range(FRAMES))
    assert sorted(by_camera["street"]) == list(range(FRAMES))
    car_faces = [len(p["faces"]) for p in predictions if p["camera_id"] == "car"]
    assert sum(n == 1 for n in car_faces) >= 0.9 * FRAMES

    letters = [decode_dead_letter(v) for v in read_raw(settings, settings.topics.dead_letters, 2)]
    by_reason = {d.reason: d for d in letters if isinstance(d, DeadLetter)}
    assert sorted(by_reason) == ["bad_envelope", "undecodable_image"]
    assert by_reason["bad_envelope"].value == b"garbage"
    assert by_reason["undecodable_image"].step == "analyze-video"

    frames = [decode_frame(v) for v in read_raw(settings, settings.topics.video_anonymized, total)]
    assert len(frames) == total
    assert {(f.camera_id, f.width) for f in frames if isinstance(f, VideoFrame)} == {
        ("car", 320),
        ("street", 320),
    }

    alerts = read_topic(
        settings,
        settings.topics.alerts,
        lambda r: sum(a["kind"] == "camera_silent" for a in r) >= 2,
        timeout_s=60,
    )
    kinds = {(a["entity"], a["kind"]) for a in alerts}
    assert ("camera:car", "faces_present") in kinds
    assert ("camera:car", "camera_silent") in kinds
    assert ("camera:street", "camera_silent") in kinds
