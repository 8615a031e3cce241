"""``streamwise bench video``: frames/s, latency and RSS of one video worker, vs standalone.

Frames are the real ``carphone`` clip scaled to 640x480 and JPEG-encoded once, spread over
``cameras`` cameras. Every measurement in one run, on the same frames:

1. *Standalone*: in this process, pinned to one core, no Kafka and no Faust: decode + face
   detection (batches of ``video.batch_size``; decoded as the worker does, at half size
   when that suffices), then the worker's whole analysis (decode, features, detection) the
   same way. The first is the baseline of the issue.
2. *Worker, detection on every frame*: the real ``streamwise worker video`` subprocess,
   pinned to one core, in complete mode with motion gating off, works through the
   pre-loaded frames; its rate comes from the Kafka timestamps of its first and last
   prediction. Peak RSS is sampled meanwhile.
3. *Latency*: with that worker running, frames are published at half its rate; latency is
   the prediction's timestamp minus the frame's send timestamp (p50/p99).
4. *Worker, motion-gated*: a second worker with gating on, on its own copy of the frames.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from pipelines.bench.harness import (
    MIB,
    BenchError,
    create_run_topics,
    ensure_broker,
    isolated_settings,
    kafka_version,
    ratio,
    run_scope,
    say,
    throughput,
    timeout_for,
)
from pipelines.bench.host import machine_info, on_cpu, usable_cpus
from pipelines.bench.reader import PredictionReader
from pipelines.bench.report import table_lines
from pipelines.bench.worker_process import WorkerProcess
from pipelines.kafka.bulk_io import send_records
from pipelines.settings import Settings
from pipelines.video.build import load_detector
from processors.common.schemas import Rejected
from processors.video.face_boxes import detect_faces
from processors.video.frame_analysis import (
    AnalysisConfig,
    CameraMemory,
    analyze_frames,
    decode_image,
    reduction,
)
from processors.video.frames import VideoFrame, encode_frame

__all__ = ["format_report", "run_bench_video"]

_SIZE = (640, 480)
_LATENCY_S = 10.0
_FLOOR_FPS = 2.0  # waits give up after frames / this many seconds (at least 120 s)

Message = tuple[bytes, bytes]


def _clip_frames(settings: Settings) -> list[np.ndarray]:
    path = settings.assets_dir / "carphone.mp4"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `streamwise assets fetch` first")
    capture = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(cv2.resize(frame, _SIZE, interpolation=cv2.INTER_LINEAR))
        ok, frame = capture.read()
    capture.release()
    return frames


def _encoded(images: Sequence[np.ndarray], count: int, cameras: int) -> list[VideoFrame]:
    jpegs = [bytes(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]) for im in images]
    now = datetime.now(UTC)
    return [
        VideoFrame(f"cam{i % cameras}", i // cameras, now, "jpeg", *_SIZE, jpegs[i % len(jpegs)])
        for i in range(count)
    ]


def _standalone(settings: Settings, frames: Sequence[VideoFrame]) -> dict[str, float]:
    """Frames/s of decode + detection, and of the worker's whole analysis, in process."""
    v = settings.video
    model = load_detector(settings)
    size = v.batch_size
    batches = [frames[i : i + size] for i in range(0, len(frames), size)]

    config = AnalysisConfig(v.detect_width, v.detect_height, v.face_threshold, False)

    def decode(frame: VideoFrame) -> np.ndarray[Any, np.dtype[np.uint8]]:
        # as the worker decodes: at reduced size when features and detector allow it
        image = decode_image(frame, reduction(frame, config))
        if isinstance(image, Rejected):
            raise BenchError(f"bench frame does not decode: {image.detail}")
        return image

    detect_faces(model, [decode(frames[0])], v.detect_width, v.detect_height, v.face_threshold)
    started = time.perf_counter()
    for batch in batches:
        images = [decode(f) for f in batch]
        detect_faces(model, images, v.detect_width, v.detect_height, v.face_threshold)
    decode_detect = len(frames) / (time.perf_counter() - started)
    memory: dict[str, CameraMemory] = {}
    started = time.perf_counter()
    for batch in batches:
        analyze_frames(batch, model, memory, config)
    analysis = len(frames) / (time.perf_counter() - started)
    return {"decode_detect_fps": decode_detect, "analysis_fps": analysis}


def _publish(
    settings: Settings, messages: Sequence[tuple[str, bytes]], fps: float | None
) -> dict[str, int]:
    """Send ``(event_id, value)`` pairs, keyed by camera (paced at ``fps`` if given); return
    send ms by id."""
    topic = settings.topics.video_frames
    records = [(topic, event_id.split(":")[0].encode(), value) for event_id, value in messages]
    sent = send_records(settings, records, fps, f"{settings.app_prefix}-frames")
    return {event_id: ms for (event_id, _), ms in zip(messages, sent.stamps_ms, strict=True)}


def _messages(frames: Sequence[VideoFrame], fresh: bool = False) -> list[tuple[str, bytes]]:
    out = []
    for f in frames:
        frame = replace(f, capture_time=datetime.now(UTC)) if fresh else f
        out.append((f"{f.camera_id}:{f.frame_no}", encode_frame(frame)))
    return out


def _measure(
    settings: Settings, frames: Sequence[VideoFrame], core: int, latency: bool
) -> dict[str, Any]:
    messages = _messages(frames)
    _publish(settings, messages, None)
    worker = WorkerProcess(settings, "video", core)
    reader = PredictionReader(settings, settings.topics.predictions)
    try:
        timeout = timeout_for(len(frames), _FLOOR_FPS)
        firsts = reader.wait_for(len(frames), worker, timeout)
        fps, _ = throughput([firsts[event_id] for event_id, _ in messages])
        result: dict[str, Any] = {"fps": fps}
        if latency:
            rate = fps / 2
            count = min(len(frames), max(10, int(rate * _LATENCY_S)))  # reuses the load's frames
            later = [replace(f, frame_no=f.frame_no + 1_000_000) for f in frames[:count]]
            say(f"latency: {count} frames at {rate:.1f}/s")
            sent = _publish(settings, _messages(later, fresh=True), rate)
            firsts = reader.wait_for(len(frames) + count, worker, timeout)
            lat = np.array([firsts[k] - ms for k, ms in sent.items()], dtype=np.float64)
            p50, p99 = np.percentile(lat, [50, 99]).tolist()
            result["latency"] = {"rate": rate, "frames": count, "p50_ms": p50, "p99_ms": p99}
    finally:
        reader.close()
        worker.stop()
    result["peak_rss_mib"] = worker.peak_rss / MIB
    return result


def run_bench_video(settings: Settings, frames: int = 600, cameras: int = 2) -> dict[str, Any]:
    """Run the steps of the module docstring once; return the results."""
    ensure_broker(settings)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    base = (settings.home / "bench" / run_id).resolve()
    video = settings.video.model_copy(
        update={
            "mode": "complete",
            "detector_path": settings.video.detector_path
            or (settings.assets_dir / "centerface.onnx").resolve(),
            "detector_threads": 1,
        }
    )
    every = isolated_settings(settings, run_id, base / "every").model_copy(
        update={"video": video.model_copy(update={"motion_gating": False})}
    )
    gated = isolated_settings(settings, f"{run_id}-gated", base / "gated").model_copy(
        update={"video": video.model_copy(update={"motion_gating": True})}
    )
    core = max(usable_cpus())
    data = _encoded(_clip_frames(settings), frames, cameras)
    say(f"run {run_id}: {frames} frames of 640x480 from {cameras} cameras, one core (#{core})")
    with run_scope(settings, run_id, base):
        with on_cpu(core):
            standalone = _standalone(every, data)
        say(f"standalone decode + detection: {standalone['decode_detect_fps']:.1f} frames/s")
        create_run_topics(every)
        create_run_topics(gated)
        measured = _measure(every, data, core, latency=True)
        say(f"worker, detection on every frame: {measured['fps']:.1f} frames/s")
        measured_gated = _measure(gated, data, core, latency=False)
        say(f"worker, motion-gated: {measured_gated['fps']:.1f} frames/s")
    base_fps = standalone["decode_detect_fps"]
    v = every.video
    return {
        "pipeline": "video",
        "frames": frames,
        "cameras": cameras,
        "input": f"{_SIZE[0]}x{_SIZE[1]} JPEG q90 (carphone clip, upscaled)",
        "detect_size": f"{v.detect_width}x{v.detect_height}",
        "batch_size": v.batch_size,
        "kafka_version": kafka_version(settings),
        "standalone": standalone,
        "worker": measured,
        "worker_gated": measured_gated,
        "ratios": {
            "worker_vs_standalone": ratio(measured["fps"], base_fps),
            "gated_vs_standalone": ratio(measured_gated["fps"], base_fps),
        },
        "machine": machine_info(),
    }


def format_report(report: dict[str, Any]) -> str:
    """A readable table of ``run_bench_video``'s result."""
    s, w, g, r = report["standalone"], report["worker"], report["worker_gated"], report["ratios"]
    lat = w["latency"]
    kafka = report["kafka_version"] or "(external cluster)"
    rows = [
        ("standalone decode + detection (no Kafka/Faust)", s["decode_detect_fps"], "1.00"),
        (
            "standalone decode + features + detection",
            s["analysis_fps"],
            f"{ratio(s['analysis_fps'], s['decode_detect_fps']):.2f}",
        ),
        ("worker, detection on every frame", w["fps"], f"{r['worker_vs_standalone']:.2f}"),
        ("worker, motion-gated detection", g["fps"], f"{r['gated_vs_standalone']:.2f}"),
    ]
    lines = [
        f"streamwise bench: video, {report['frames']} frames of {report['input']}, "
        f"{report['cameras']} cameras, detection at {report['detect_size']}, "
        f"batch {report['batch_size']}, Kafka {kafka}",
        f"machine: {report['machine']['cpus']} CPUs, Python {report['machine']['python']}; "
        "bench and workers pinned to one core",
        "",
        *table_lines(
            ("one core", "frames/s", "vs standalone"),
            [(label, f"{fps:.1f}", shown) for label, fps, shown in rows],
            ("left", "right", "right"),
            (0, 9),
        ),
        "",
        f"  latency publish -> prediction: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
        f"({lat['frames']} frames at {lat['rate']:.1f}/s, half the worker's rate)",
        f"  peak RSS: {w['peak_rss_mib']:.0f} MiB (every frame), "
        f"{g['peak_rss_mib']:.0f} MiB (gated)",
        "",
        "Numbers from one run on this machine; compare them, don't quote them.",
    ]
    return "\n".join(lines)
