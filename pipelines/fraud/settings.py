"""Settings of the fraud pipeline behind ``streamwise worker transactions``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from processors.fraud.windows import FeatureConfig

__all__ = ["TransactionSettings"]


class TransactionSettings(BaseModel):
    """Windows, models, score blending, alerting and pseudonymisation of the fraud pipeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    label_delay_days: float = Field(default=7.0, gt=0, le=365)
    grace_s: float = Field(default=3600.0, ge=0)
    model: Path | None = None
    model_manifest: Path | None = None
    model_check_s: float = Field(default=5.0, gt=0)
    scoring: Literal["onnx", "river", "blend"] = "blend"
    river_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    pseudonymise_key: SecretStr | None = None
    learner_batch_s: float = Field(default=1.0, gt=0)
    # Where the learner runs: in whichever transactions worker owns the training partition
    # ("inline"), or only in a `streamwise worker fraud-learner` process ("separate").
    learner: Literal["inline", "separate"] = "inline"
    # How long a fraud stage waits to fill a batch. Short: a stage takes what has arrived,
    # and under load batches grow by themselves while the previous one is computed.
    batch_within_s: float = Field(default=0.005, gt=0)
    # Champion / challenger (the champion is SCORING with RIVER_WEIGHT until a promotion).
    challenger: Literal["none", "onnx", "river", "blend"] = "blend"
    challenger_weight: float = Field(default=0.6, ge=0.0, le=1.0)
    promote_margin: float = Field(default=0.02, ge=0.0, le=1.0)
    promote_window_days: int = Field(default=7, ge=1, le=90)
    # Live quality (prequential metrics at the learner) and drift detection.
    quality_window_days: int = Field(default=7, ge=1, le=90)
    quality_k: int = Field(default=100, ge=1)
    quality_interval_s: float = Field(default=10.0, ge=0)
    quality_day_slack_s: float = Field(default=86_400.0, ge=0)
    drift_error_delta: float = Field(default=0.002, gt=0, lt=1)
    drift_score_threshold: float = Field(default=50.0, gt=0)

    @property
    def label_delay_ms(self) -> int:
        return round(self.label_delay_days * 86_400_000)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000)

    @property
    def features(self) -> FeatureConfig:
        """The feature windows' configuration (label delay and lateness grace)."""
        return FeatureConfig(label_delay_ms=self.label_delay_ms, grace_ms=self.grace_ms)
