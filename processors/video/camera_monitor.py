"""Per-camera judgement of analyzed frames: tampering, faces, unusual activity, alerts.

A :class:`CameraMonitor` owns one camera's window and anomaly learner. :meth:`update` takes
one analyzed frame (features and faces) in capture order and returns a :class:`Verdict`:
the anomaly score, the faces that count (inside the zone, if one is set) and the alerts due.
Faces and unusual activity alert at most once per ``cooldown_s`` of capture time; a
tampering condition alerts once per episode (see :mod:`processors.video.camera_window`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from processors.video.camera_window import CameraWindow, Observation, TamperLimits
from processors.video.face_boxes import Boxes
from processors.video.frame_features import FrameFeatures

__all__ = ["AlertDue", "AnomalyModel", "CameraMonitor", "MonitorLimits", "Verdict", "in_zone"]


class AnomalyModel(Protocol):
    """An online learner of one camera's normal activity (``models.camera_anomaly``)."""

    seen: int  # examples learned

    def vector(
        self, motion: float, faces: int, brightness: float, sharpness: float
    ) -> dict[str, float]: ...

    def score(self, x: dict[str, float]) -> float: ...

    def learn(self, x: dict[str, float]) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class MonitorLimits:
    tamper: TamperLimits = field(default_factory=TamperLimits)
    window_frames: int = 50
    face_threshold: float = 0.5
    face_zone: tuple[float, float, float, float] | None = None  # fractions of width/height
    anomaly_threshold: float = 0.9
    anomaly_warmup: int = 100  # frames learned before unusual activity can alert
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class AlertDue:
    kind: str
    score: float
    threshold: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    anomaly_score: float
    faces: Boxes  # the faces that count (inside the zone when one is set)
    observation: Observation
    alerts: tuple[AlertDue, ...] = ()
    examples: int = 0  # what the anomaly learner had learned when it scored this frame


def in_zone(faces: Boxes, zone: tuple[float, float, float, float] | None, w: int, h: int) -> Boxes:
    """The faces whose box centre lies inside ``zone`` (fractions of the frame); all if None."""
    if zone is None or len(faces) == 0:
        return faces
    cx = (faces[:, 0] + faces[:, 2]) / 2 / w
    cy = (faces[:, 1] + faces[:, 3]) / 2 / h
    x1, y1, x2, y2 = zone
    return faces[(cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)]


@dataclass
class CameraMonitor:
    """One camera's window, anomaly learner and alert memory; one writer: the video step."""

    limits: MonitorLimits
    anomaly: AnomalyModel
    window: CameraWindow = field(init=False)
    learned: int = 0
    anomaly_streak: int = 0
    last_alert: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.window = CameraWindow(self.limits.window_frames, self.limits.tamper)

    def _cooled(self, kind: str, at: datetime) -> bool:
        last = self.last_alert.get(kind)
        if last is not None and (at - last).total_seconds() < self.limits.cooldown_s:
            return False
        self.last_alert[kind] = at
        return True

    def update(
        self, f: FrameFeatures, faces: Boxes, width: int, height: int, at: datetime
    ) -> Verdict:
        lim = self.limits
        counted = in_zone(faces, lim.face_zone, width, height)
        observation = self.window.observe(f)
        x = self.anomaly.vector(f.motion, len(counted), f.brightness, f.sharpness)
        warm = self.learned >= lim.anomaly_warmup
        examples = self.anomaly.seen
        score = round(self.anomaly.score(x), 6) if warm else 0.0
        if observation.tamper is None:  # tampered frames would teach the learner they are normal
            self.anomaly.learn(x)
            self.learned += 1
        alerts: list[AlertDue] = []
        if observation.alert is not None:
            kind = f"tampering_{observation.alert}"
            alerts.append(AlertDue(kind, 1.0, 1.0, observation.reasons))
        self.anomaly_streak = self.anomaly_streak + 1 if score >= lim.anomaly_threshold else 0
        if self.anomaly_streak >= lim.tamper.persist_frames and self._cooled(
            "unusual_activity", at
        ):
            reasons = (
                f"anomaly score {score:.3f} >= {lim.anomaly_threshold} for "
                f"{self.anomaly_streak} frames",
                f"motion {f.motion:.4f}, faces {len(counted)}, brightness {f.brightness:.1f}, "
                f"sharpness {f.sharpness:.1f}",
            )
            alerts.append(AlertDue("unusual_activity", score, lim.anomaly_threshold, reasons))
        if len(counted) and self._cooled("faces_present", at):
            best = float(counted[:, 4].max())
            where = "in the zone" if lim.face_zone is not None else "in view"
            found = (f"{len(counted)} face(s) {where}, best score {best:.2f}",)
            alerts.append(AlertDue("faces_present", round(best, 4), lim.face_threshold, found))
        return Verdict(score, counted, observation, tuple(alerts), examples)
