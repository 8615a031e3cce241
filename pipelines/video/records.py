"""The video step's output records: a ``prediction/1`` per frame and its ``alert/1`` kinds.

Pure functions of what the step judged, so the step only decides what to send, and the
record layout (docs/schemas.md, "Video predictions") is in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import orjson

from processors.common.schemas import Alert, Prediction, encode
from processors.video.camera_monitor import AlertDue, Verdict
from processors.video.frame_analysis import Analyzed
from processors.video.frames import VideoFrame

__all__ = ["PIPELINE", "alert_record", "prediction_record", "silent_record"]

PIPELINE = "video"


def prediction_record(
    result: Analyzed,
    verdict: Verdict,
    skipped: int,
    threshold: float,
    versions: Mapping[str, str],
    now: datetime,
) -> bytes:
    """One frame's prediction: its features, faces, tampering and anomaly score."""
    frame, f = result.frame, result.features
    record = Prediction(
        pipeline=PIPELINE,
        event_id=f"{frame.camera_id}:{frame.frame_no}",
        entity=f"camera:{frame.camera_id}",
        score=verdict.anomaly_score,
        threshold=threshold,
        model_versions=dict(versions),
        event_time=frame.capture_time,
        emit_time=now,
        features={
            "motion": f.motion,
            "brightness": f.brightness,
            "contrast": f.contrast,
            "sharpness": f.sharpness,
            "histogram_distance": verdict.observation.histogram_distance,
            "faces": float(len(verdict.faces)),
            "skipped_before": float(skipped),
            "anomaly_examples": float(verdict.examples),
        },
    ).to_dict()
    record |= {
        "camera_id": frame.camera_id,
        "frame_no": frame.frame_no,
        "detected": result.detected,
        "faces_frame_no": result.faces_frame,
        "faces": [
            {"box": [round(v, 1) for v in box[:4]], "score": round(box[4], 4)}
            for box in verdict.faces.tolist()
        ],
        "tamper": verdict.observation.tamper,
    }
    return orjson.dumps(record)


def alert_record(
    frame: VideoFrame, due: AlertDue, versions: Mapping[str, str], now: datetime
) -> bytes:
    """An alert a frame raised (faces, tampering, unusual activity)."""
    alert = Alert(
        pipeline=PIPELINE,
        kind=due.kind,
        event_id=f"{frame.camera_id}:{frame.frame_no}",
        entity=f"camera:{frame.camera_id}",
        score=due.score,
        threshold=due.threshold,
        model_versions=dict(versions),
        reasons=list(due.reasons),
        event_time=frame.capture_time,
        emit_time=now,
    )
    return encode(alert)


def silent_record(
    camera: str,
    since_wall: float,
    last_capture: datetime,
    quiet: float,
    limit: float,
    versions: Mapping[str, str],
    now: datetime,
) -> bytes:
    """``camera_silent``: no frame from ``camera`` for ``quiet`` seconds of wall clock."""
    alert = Alert(
        pipeline=PIPELINE,
        kind="camera_silent",
        event_id=f"{camera}:silent:{int(since_wall)}",
        entity=f"camera:{camera}",
        score=round(quiet, 3),
        threshold=limit,
        model_versions=dict(versions),
        reasons=[f"no frame for {quiet:.1f} s (limit {limit} s)"],
        event_time=last_capture,
        emit_time=now,
    )
    return encode(alert)
