"""Settings of the audio pipeline (``STREAMWISE_AUDIO__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AudioSettings"]


class AudioSettings(BaseModel):
    """The audio worker: windows, reassembly, VAD, alert limits, anomaly and classifier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(default=0.96, ge=0.1, le=10.0)
    hop_s: float = Field(default=0.48, ge=0.01, le=10.0)
    max_chunk_s: float = Field(default=1.0, gt=0, le=10.0)
    reorder_chunks: int = Field(default=8, ge=0, le=1000)
    vad_path: Path | None = None
    vad_batched: bool = True
    speech_threshold: float = Field(default=0.5, gt=0, lt=1)
    speech_min_s: float = Field(default=0.25, ge=0)
    speech_silence_s: float = Field(default=0.3, gt=0)
    level_alert_dbfs: float = Field(default=-6.0, le=0)
    clip_level: float = Field(default=0.999, gt=0, le=1)
    clip_alert_ratio: float = Field(default=0.01, gt=0, le=1)
    silence_dbfs: float = Field(default=-70.0, le=0)
    dead_after_s: float = Field(default=10.0, gt=0)
    anomaly_threshold: float = Field(default=0.9, gt=0, le=1)
    anomaly_window: int = Field(default=50, ge=5, le=10_000)
    classifier_path: Path | None = None
    classifier_classes: Path | None = None
    classifier_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    classifier_top: int = Field(default=3, ge=1, le=100)
    # A stream's state is checkpointed with its partition at most this often (seconds of
    # wall clock, at the end of a batch that touched it): pipelines/runtime/checkpoints.py.
    checkpoint_s: float = Field(default=5.0, ge=0.1, le=3600.0)

    @model_validator(mode="after")
    def _consistent(self) -> AudioSettings:
        if self.hop_s > self.window_s:
            raise ValueError("hop_s must not exceed window_s")
        if (self.classifier_path is None) != (self.classifier_classes is None):
            raise ValueError("classifier_path and classifier_classes go together")
        return self
