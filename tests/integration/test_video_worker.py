"""The video worker through the real broker: two cameras from real clips, bad frames,
silence; and cameras that go on at another worker when theirs is SIGKILLed."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.bench.scrape import samples
from pipelines.bench.waiting import wait_until
from pipelines.kafka.admin import client_config
from pipelines.settings import Settings
from pipelines.video.produce import Camera, publish_video
from pipelines.video.settings import VideoSettings
from processors.common.schemas import DeadLetter, decode_dead_letter
from processors.video.frames import VideoFrame, decode_frame, encode_frame
from processors.video.sources import open_source
from tests.integration.conftest import Worker, _free_port, publish_raw, read_topic
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


def counter(worker: Worker, name: str, **labels: str) -> float:
    """A counter of the worker's step ``analyze-video`` (0 while it does not answer)."""
    page = worker._get("/metrics")
    wanted = {"step": "analyze-video"} | labels
    found = [
        s.value
        for s in samples(page.decode() if page else "")
        if s.name == name and s.labels == wanted
    ]
    return sum(found)


def held(worker: Worker, topic: str) -> set[int]:
    """The partitions of ``topic`` the worker says it holds."""
    health = worker.health() or {"assigned": []}
    pattern = re.compile(rf"topic='{re.escape(topic)}', partition=(\d+)")
    return {int(m.group(1)) for tp in health["assigned"] if (m := pattern.search(tp))}


def test_cameras_go_on_at_the_other_worker_with_their_learners(
    settings: Settings, start_worker: Callable[[Settings, str], Worker], tmp_path: Path
) -> None:
    """Three live cameras, one per partition; a second worker joins, takes some over from
    the first's checkpoints, and is SIGKILLed mid-stream; the first takes them back from the
    second's checkpoints. The anomaly learners' example counts never start again at zero,
    and no camera is reported silent while it sends."""
    silent_after = 4.0
    video = VideoSettings(
        mode="complete",  # every frame learned: the counts below do not depend on the load
        detector_path=asset("centerface.onnx"),
        silent_after_s=silent_after,
        checkpoint_s=1.0,
    )
    worker_conf = settings.worker.model_copy(update={"session_timeout_s": 6.0})
    settings = settings.model_copy(update={"video": video, "worker": worker_conf})
    other = settings.model_copy(
        update={
            "worker": worker_conf.model_copy(update={"web_port": _free_port()}),
            "home": tmp_path / "home-2",
        }
    )
    names = ("cam-a", "cam-e", "cam-h")  # keyed to partitions 0, 1 and 2 of three
    cameras = [Camera(n, open_source(str(asset("carphone.mp4")))) for n in names]
    first = start_worker(settings, "video")
    first.wait_assigned(settings.topics.video_frames)

    per_camera = 200  # 40 s at 5 frames/s
    result: list[Any] = []
    publisher = threading.Thread(
        target=lambda: result.append(
            publish_video(settings, cameras, fps=5.0, realtime=True, loop=True, limit=per_camera)
        ),
        daemon=True,
    )
    publisher.start()

    def analysed(worker: Worker, frames: int) -> None:
        wait_until(
            lambda: counter(worker, "streamwise_events_total", outcome="ok") >= frames,
            60.0,
            interval_s=0.3,
            what=lambda: f"a worker analysed fewer than {frames} frames:\n{worker.log_tail()}",
            error=AssertionError,
        )

    analysed(first, 45)  # every camera known to, and checkpointed by, the first worker
    second = start_worker(other, "video")
    second.wait_assigned(settings.topics.video_frames)
    analysed(second, 30)  # it holds its cameras for a while, mid-stream
    moved = held(second, settings.topics.video_frames)
    assert moved, second.log_tail()
    assert counter(second, "streamwise_video_cameras_restored_total") >= len(moved)
    second.kill()
    publisher.join(per_camera / 5.0 + 30.0)
    assert result, "the publisher did not finish"
    stopped = time.time()
    assert counter(first, "streamwise_video_cameras_restored_total") >= len(moved)

    def complete(records: list[dict[str, Any]]) -> bool:
        return {r["entity"] for r in records if r["kind"] == "camera_silent"} >= {
            f"camera:{n}" for n in names
        }

    alerts = read_topic(settings, settings.topics.alerts, complete, timeout_s=60.0)
    silent = [a for a in alerts if a["kind"] == "camera_silent"]
    early = [
        (a["entity"], a["emit_time"])
        for a in silent
        if datetime.fromisoformat(a["emit_time"]).timestamp() < stopped + silent_after - 1.0
    ]
    assert early == [], first.log_tail()

    def last_frames(records: list[dict[str, Any]]) -> bool:
        return {p["camera_id"] for p in records if p["frame_no"] == per_camera - 1} >= set(names)

    predictions = read_topic(settings, settings.topics.predictions, last_frames)
    assert last_frames(predictions), first.log_tail()
    for name in names:  # in the order each camera's predictions were written
        examples = [
            p["features"]["anomaly_examples"] for p in predictions if p["camera_id"] == name
        ]
        assert examples[0] == 0.0
        assert 0.0 not in examples[1:], (name, examples)
        assert examples[-1] > per_camera / 2
    assert first.proc.poll() is None
