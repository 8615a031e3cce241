"""Publishing camera frames: sources read with OpenCV, JPEG-encoded, sent as ``video-frame/1``.

Several sources become several cameras, interleaved by due time. In real-time pacing each
camera sends at its ``fps`` (default: the source's own rate, else 10); at maximum speed
frames go as fast as the broker takes them. The capture time is the wall clock at sending.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.kafka.admin import client_config
from pipelines.settings import Settings
from processors.video.frames import VideoFrame, encode_frame
from processors.video.sources import FrameSource

__all__ = ["Camera", "VideoPublishReport", "encode_jpeg", "publish_video"]

DEFAULT_FPS = 10.0


@dataclass(frozen=True)
class Camera:
    camera_id: str
    source: FrameSource


@dataclass(frozen=True)
class VideoPublishReport:
    frames: dict[str, int]
    seconds: float


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the frame")
    return bytes(data.tobytes())


def publish_video(
    settings: Settings,
    cameras: Sequence[Camera],
    *,
    fps: float | None = None,
    width: int | None = None,
    realtime: bool = True,
    loop: bool = False,
    limit: int | None = None,
    quality: int = 90,
    progress: Callable[[str, int], None] | None = None,
) -> VideoPublishReport:
    """Publish every camera's frames (``limit`` per camera at most) to ``video-frames``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **client_config(settings),
        client_id="streamwise-video-producer",
        acks="all",
        linger_ms=5,
        max_request_size=8 * 1024 * 1024,
    )
    topic = settings.topics.video_frames
    counts = {c.camera_id: 0 for c in cameras}
    streams: dict[str, Iterator[npt.NDArray[np.uint8]]] = {
        c.camera_id: c.source.frames(width, loop) for c in cameras
    }
    periods = {c.camera_id: 1.0 / (fps or c.source.native_fps or DEFAULT_FPS) for c in cameras}
    started = time.monotonic()
    due = [(started, i, c.camera_id) for i, c in enumerate(cameras)]
    heapq.heapify(due)
    try:
        while due:
            at, order, camera = heapq.heappop(due)
            if realtime and (ahead := at - time.monotonic()) > 0:
                time.sleep(ahead)
            image = next(streams[camera], None)
            if image is None:
                continue
            h, w = image.shape[:2]
            frame = VideoFrame(
                camera, counts[camera], datetime.now(UTC), "jpeg", w, h, encode_jpeg(image, quality)
            )
            producer.send(topic, key=camera.encode(), value=encode_frame(frame))
            counts[camera] += 1
            if progress is not None:
                progress(camera, counts[camera])
            if limit is None or counts[camera] < limit:
                heapq.heappush(due, (at + periods[camera], order, camera))
        producer.flush()
    finally:
        producer.close()
    return VideoPublishReport(counts, time.monotonic() - started)
