"""Settings of the video pipeline (``STREAMWISE_VIDEO__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["VideoSettings"]


class VideoSettings(BaseModel):
    """The video worker: processing mode, detector, window, tampering and alert limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["realtime", "complete"] = "realtime"
    max_lag_s: float = Field(default=2.0, gt=0)
    batch_size: int = Field(default=16, ge=1, le=1024)
    max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    detector_path: Path | None = None
    detector_checksum: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    detector_threads: int = Field(default=1, ge=1, le=64)
    detect_width: int = Field(default=256, ge=32, le=4096, multiple_of=32)
    detect_height: int = Field(default=192, ge=32, le=4096, multiple_of=32)
    face_threshold: float = Field(default=0.5, gt=0, lt=1)
    face_zone: list[float] | None = Field(default=None, min_length=4, max_length=4)
    motion_gating: bool = True
    motion_threshold: float = Field(default=0.002, ge=0, le=1)
    window_frames: int = Field(default=50, ge=5, le=10_000)
    persist_frames: int = Field(default=3, ge=1, le=1000)
    covered_brightness: float = Field(default=35.0, ge=0, le=255)
    covered_contrast: float = Field(default=12.0, ge=0, le=255)
    brightness_jump: float = Field(default=50.0, gt=0, le=255)
    defocus_ratio: float = Field(default=0.25, gt=0, lt=1)
    moved_distance: float = Field(default=0.3, gt=0, le=1)
    anomaly_threshold: float = Field(default=0.9, gt=0, le=1)
    anomaly_window: int = Field(default=50, ge=10, le=10_000)
    alert_cooldown_s: float = Field(default=30.0, ge=0)
    silent_after_s: float = Field(default=10.0, gt=0)
    # A camera's state is checkpointed with its partition at most this often (seconds of
    # wall clock, at the end of a batch that touched it): pipelines/runtime/checkpoints.py.
    checkpoint_s: float = Field(default=5.0, ge=0.1, le=3600.0)
    anonymize: bool = False
    jpeg_quality: int = Field(default=85, ge=10, le=100)

    @model_validator(mode="after")
    def _zone_inside_frame(self) -> VideoSettings:
        if self.face_zone is not None:
            x1, y1, x2, y2 = self.face_zone
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError("face_zone must be x1,y1,x2,y2 fractions with x1<x2, y1<y2")
        return self
