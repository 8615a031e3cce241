"""Drift detection on the learner's prequential error and on the served scores (River).

Two River detectors watch the labelled stream at the single learner: ADWIN on the online
learner's absolute error ``|y - p|``, ``p`` predicted just before it learns that example
(prequential: test, then train), and Page-Hinkley on the champion's served score. A detection
returns a :class:`Drift` with the evidence a person can check: what moved, from what to
what, over how many payments, and when in event time.

>>> import random
>>> watch = DriftWatch(DriftConfig(error_delta=0.002, score_threshold=5.0))
>>> rng = random.Random(0)
>>> found = [watch.error(rng.random() * (0.2 if i < 2000 else 0.9), i) for i in range(4000)]
>>> first = next(d for d in found if d is not None)
>>> first.detector, first.method, first.after > first.before, 2000 <= first.event_time_ms
('learner_error', 'ADWIN', True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from river import drift

__all__ = ["Drift", "DriftConfig", "DriftWatch"]


@dataclass(frozen=True)
class DriftConfig:
    """ADWIN's confidence ``delta`` (smaller: fewer, surer detections) and Page-Hinkley's
    ``threshold`` on the cumulative deviation of scores (larger: fewer)."""

    error_delta: float = 0.002
    score_threshold: float = 50.0
    score_min_instances: int = 1000


@dataclass(frozen=True)
class Drift:
    """Evidence of one detection: the mean ``before`` over ``seen`` values and ``after``."""

    detector: str  # "learner_error" or "score"
    method: str  # "ADWIN" or "PageHinkley"
    statistic: str  # what was watched
    before: float  # its mean over the older part
    after: float  # its mean over the recent part
    seen: int  # values in the older part
    window: int  # values in the recent part
    threshold: float  # the detector's sensitivity setting
    event_time_ms: int  # event time of the value that tipped it

    def reasons(self) -> list[str]:
        return [
            f"{self.method} detected a change in {self.statistic}: mean {self.before:.4f} over "
            f"{self.seen} labelled payments, then {self.after:.4f} over the last {self.window}",
            f"detector {self.detector}, sensitivity {self.threshold:g}",
        ]


class DriftWatch:
    """The two detectors, one writer (the learner stage); picklable for its checkpoint."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        make: Any = drift.ADWIN  # River is untyped
        self.adwin: Any = make(delta=config.error_delta)
        self.hinkley: Any = drift.PageHinkley(
            min_instances=config.score_min_instances, threshold=config.score_threshold
        )
        self.score_n = 0  # scores since the last Page-Hinkley detection, and their mean
        self.score_mean = 0.0
        self.score_recent = 0.0  # exponential mean over about the last min_instances scores

    def error(self, value: float, event_time_ms: int) -> Drift | None:
        """Feed one prequential absolute error; a :class:`Drift` if ADWIN cut its window."""
        a = self.adwin
        total, width = a.estimation * a.width + value, a.width + 1
        a.update(value)
        if not a.drift_detected:
            return None
        recent, kept = a.estimation, int(a.width)
        dropped = int(width) - kept
        before = (total - recent * kept) / dropped if dropped else recent
        delta = self.config.error_delta
        return Drift(
            "learner_error", "ADWIN", "|y - p|", before, recent, dropped, kept, delta, event_time_ms
        )

    def score(self, value: float, event_time_ms: int) -> Drift | None:
        """Feed one served score; a :class:`Drift` when Page-Hinkley's test passes."""
        self.score_n += 1
        self.score_mean += (value - self.score_mean) / self.score_n
        rate = 1.0 / min(self.score_n, self.config.score_min_instances)
        self.score_recent += rate * (value - self.score_recent)
        self.hinkley.update(value)
        if not self.hinkley.drift_detected:
            return None
        found = Drift(
            "score",
            "PageHinkley",
            "champion score",
            self.score_mean,
            self.score_recent,
            self.score_n,
            self.config.score_min_instances,
            self.config.score_threshold,
            event_time_ms,
        )
        self.score_n, self.score_mean = 0, 0.0  # River resets the detector on its next update
        return found
