"""Prequential fraud-detection quality: labelled scores in, daily and rolling metrics out.

Every payment is scored before its label exists, so joining a label with the scores the
pipeline served for that payment is a prequential (test-then-train) evaluation of what ran.
:class:`FraudQuality` keeps the labelled scores of the last days of event time (bounded),
and reports, for the ONNX score, the River score, the served score (``champion``) and a
``challenger`` scoring policy in shadow: ROC AUC, average precision, card precision@k and
alert precision (frauds among the scores at or above the alert threshold).

Labels of day D arrive about a label delay after D. A day is *closed* (reported once, then
used for promotion) when a label for a payment ``day_slack_ms`` past the day's end has
arrived; labels for a closed day still count in the rolling window and are counted as late.

>>> quality = FraudQuality(QualityConfig(k=1, day_slack_ms=0))
>>> day = 86_400_000
>>> rows = [Labelled(0, 1, False, 0.1, 0.2, 0.1), Labelled(1, 2, True, 0.9, 0.8, 0.9),
...         Labelled(day, 1, False, 0.1, 0.1, 0.1)]
>>> [(r.day, r.models["onnx"].auc, r.models["onnx"].card_precision) for r in quality.add(rows)
...  if isinstance(r, QualityReport)]
[(0, 1.0, 1.0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from processors.fraud.metrics import (
    DayCustomers,
    average_precision,
    card_precision_days,
    roc_auc,
)

__all__ = [
    "DAY_MS",
    "MODELS",
    "FraudQuality",
    "Labelled",
    "ModelQuality",
    "Policies",
    "Policy",
    "Promotion",
    "QualityConfig",
    "QualityReport",
]

DAY_MS = 86_400_000
MODELS = ("onnx", "river", "champion", "challenger")
_MIN_FRAUDS = 10  # a promotion needs this many frauds in its window: AP on fewer is noise


@dataclass(frozen=True)
class Policy:
    """How a score is made from the two models: ``onnx``, ``river`` or ``blend:<weight>``."""

    mode: str
    weight: float = 0.0

    def __str__(self) -> str:
        return f"blend:{self.weight:g}" if self.mode == "blend" else self.mode

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``Policy.parse(str(p)) == p``; raises ``ValueError`` on anything else."""
        mode, _, weight = text.partition(":")
        if mode == "blend" and weight:
            w = float(weight)
            if 0.0 <= w <= 1.0:
                return cls("blend", w)
        elif mode in ("onnx", "river") and not weight:
            return cls(mode)
        raise ValueError(f"not a scoring policy: {text!r}")

    def score(
        self, onnx: npt.NDArray[np.float64], river: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        if self.mode == "onnx":
            return onnx
        if self.mode == "river":
            return river
        out: npt.NDArray[np.float64] = (1.0 - self.weight) * onnx + self.weight * river
        return out


@dataclass(frozen=True)
class Policies:
    """The champion (serves and alerts) and the challenger (scored in shadow, or none)."""

    champion: Policy
    challenger: Policy | None

    def swapped(self) -> Policies:
        assert self.challenger is not None
        return Policies(self.challenger, self.champion)

    def to_dict(self) -> dict[str, str | None]:
        return {"champion": str(self.champion), "challenger": _text(self.challenger)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policies:
        challenger = data.get("challenger")
        return cls(Policy.parse(data["champion"]), Policy.parse(challenger) if challenger else None)


def _text(policy: Policy | None) -> str | None:
    return None if policy is None else str(policy)


class Labelled(NamedTuple):
    """One payment's label and the scores served for it (``score``: the champion's)."""

    tx_time_ms: int
    customer: int
    is_fraud: bool
    onnx: float
    river: float
    score: float


@dataclass(frozen=True)
class QualityConfig:
    """Window lengths (event days), card precision's k, threshold, promotion rule."""

    window_days: int = 7
    k: int = 100
    threshold: float = 0.5
    day_slack_ms: int = DAY_MS
    promote_margin: float = 0.02
    promote_window_days: int = 7


@dataclass(frozen=True)
class ModelQuality:
    """One model's metrics; NaN where undefined (one class only, no alert)."""

    auc: float
    ap: float
    card_precision: float
    alert_precision: float

    def to_dict(self) -> dict[str, float | None]:
        values = {
            "auc": self.auc,
            "ap": self.ap,
            "card_precision_at_k": self.card_precision,
            "alert_precision": self.alert_precision,
        }
        return {k: None if math.isnan(v) else round(v, 6) for k, v in values.items()}


@dataclass(frozen=True)
class QualityReport:
    """Metrics of one closed day (``scope="day"``) or of the rolling window."""

    scope: str
    day: int  # the (last) event day covered, days since 1970-01-01 UTC
    days: int
    examples: int
    frauds: int
    alerts: int
    late: int
    policies: Policies
    models: dict[str, ModelQuality]


@dataclass(frozen=True)
class Promotion:
    """The challenger beat the champion's AP by the margin over the last closed days."""

    day: int
    before: Policies
    after: Policies
    champion_ap: float
    challenger_ap: float
    margin: float
    window_days: int
    examples: int
    frauds: int


@dataclass
class _Day:
    customer: list[int] = field(default_factory=list)
    y: list[bool] = field(default_factory=list)
    onnx: list[float] = field(default_factory=list)
    river: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    card: dict[str, float] = field(default_factory=dict)  # once closed: card P@k per model
    _arrays: tuple[Any, ...] = ()  # (rows, customer, y, onnx, river, score) as last converted
    _customers: tuple[int, DayCustomers] | None = None  # (rows, grouping) as last grouped

    def arrays(self) -> tuple[Any, ...]:
        """The day's columns as arrays, converted again only after rows were added: a day
        is read at each close and promotion of the next days."""
        if not self._arrays or self._arrays[0] != len(self.y):
            self._arrays = (
                len(self.y),
                np.asarray(self.customer, dtype=np.int64),
                np.asarray(self.y, dtype=np.bool_),
                np.asarray(self.onnx, dtype=np.float64),
                np.asarray(self.river, dtype=np.float64),
                np.asarray(self.score, dtype=np.float64),
            )
        return self._arrays[1:]

    def customers(self) -> DayCustomers:
        """The day's payments grouped by customer (card precision), again only after rows
        were added."""
        if self._customers is None or self._customers[0] != len(self.y):
            customer, y, *_ = self.arrays()
            self._customers = (len(self.y), DayCustomers.of(customer, y))
        return self._customers[1]


class _Columns(NamedTuple):
    day: npt.NDArray[np.int64]
    customer: npt.NDArray[np.int64]
    y: npt.NDArray[np.bool_]
    onnx: npt.NDArray[np.float64]
    river: npt.NDArray[np.float64]
    score: npt.NDArray[np.float64]


class FraudQuality:
    """Rolling prequential metrics and the champion/challenger rule (one writer)."""

    def __init__(self, config: QualityConfig, policies: Policies | None = None) -> None:
        self.config = config
        self.policies = policies or Policies(Policy("blend", 0.3), None)
        self.days: dict[int, _Day] = {}
        self.closed_through: int | None = None  # newest closed day
        self.partial_through: int | None = None  # days up to this one were not all seen
        self.watermark = -(2**62)  # newest payment time labelled so far (event time)
        self.late = 0

    def restore(self, closed_through: int | None, watermark: int | None) -> None:
        """After a restart: closed days stay closed; open days seen before were lost in part."""
        self.closed_through = closed_through
        if watermark is not None:
            self.watermark = watermark
            self.partial_through = watermark // DAY_MS

    def add(self, rows: Iterable[Labelled]) -> list[QualityReport | Promotion]:
        """Take labelled scores; report every day this closes, and any promotion, in order."""
        closed = -(2**62) if self.closed_through is None else self.closed_through
        watermark, late = self.watermark, 0
        day: int | None = None
        d = _Day()
        for r in rows:  # a batch's rows mostly share a day or two: looked up on a change
            t_ms = r.tx_time_ms
            if day is None or t_ms // DAY_MS != day:
                day = t_ms // DAY_MS
                d = self.days.setdefault(day, _Day())
            if day <= closed:
                late += 1
            d.customer.append(r.customer)
            d.y.append(r.is_fraud)
            d.onnx.append(r.onnx)
            d.river.append(r.river)
            d.score.append(r.score)
            if t_ms > watermark:
                watermark = t_ms
        self.watermark, self.late = watermark, self.late + late
        out: list[QualityReport | Promotion] = []
        newest = (self.watermark - self.config.day_slack_ms) // DAY_MS - 1
        for day in sorted(d for d in self.days if d <= newest):
            if self.closed_through is not None and day <= self.closed_through:
                continue
            self.closed_through = day
            if self.partial_through is not None and day <= self.partial_through:
                continue  # seen in part only (a restart): neither reported nor compared
            out.append(self._close(day))
            promotion = self._maybe_promote(day)
            if promotion is not None:
                out.append(promotion)
        keep = max(self.config.window_days, self.config.promote_window_days) + 1
        last = newest if self.closed_through is None else self.closed_through
        for day in [d for d in self.days if d <= last - keep]:
            del self.days[day]
        return out

    def rolling(self) -> QualityReport | None:
        """Metrics over the payments of the last ``window_days`` of event time, if any."""
        first = (self.watermark - self.config.window_days * DAY_MS) // DAY_MS + 1
        days = [d for d in self.days if d >= first]
        if not days:
            return None
        cols = self._columns(days)
        closed = [self.days[d].card for d in days if self.days[d].card]
        card = {m: float(np.mean([c[m] for c in closed if m in c] or math.nan)) for m in MODELS}
        return self._report("rolling", max(days), len(days), cols, card)

    def _close(self, day: int) -> QualityReport:
        full = sorted(d for d in self.days if d <= day and self._full(d))
        groups = [self.days[d].customers() for d in full]  # grouped once, ranked per model
        per_model: dict[str, list[npt.NDArray[np.float64]]] = {}
        for d in full:
            for name, scores in self._scores(self._columns([d])).items():
                per_model.setdefault(name, []).append(scores)
        card: dict[str, float] = {}
        for name, scores_by_day in per_model.items():
            per_day = card_precision_days(groups, scores_by_day, self.config.k)
            card[name] = per_day[-1]  # earlier days' detections left out (handbook)
        self.days[day].card = card
        return self._report("day", day, 1, self._columns([day]), card)

    def _full(self, day: int) -> bool:
        return self.partial_through is None or day > self.partial_through

    def _maybe_promote(self, day: int) -> Promotion | None:
        p, window = self.policies, self.config.promote_window_days
        days = [d for d in range(day - window + 1, day + 1) if d in self.days and self._full(d)]
        if p.challenger is None or len(days) < window:
            return None
        cols = self._columns(days)
        frauds = int(cols.y.sum())
        if frauds < _MIN_FRAUDS or frauds == cols.y.size:
            return None
        champion = average_precision(cols.y, p.champion.score(cols.onnx, cols.river))
        challenger = average_precision(cols.y, p.challenger.score(cols.onnx, cols.river))
        if not challenger >= champion + self.config.promote_margin:
            return None
        self.policies = p.swapped()
        margin = self.config.promote_margin
        size = int(cols.y.size)
        return Promotion(day, p, self.policies, champion, challenger, margin, window, size, frauds)

    def _columns(self, days: Iterable[int]) -> _Columns:
        picked = [(d, self.days[d].arrays()) for d in days]
        sizes = [len(arrays[1]) for _, arrays in picked]
        day = np.repeat(np.array([d for d, _ in picked], dtype=np.int64), sizes)
        dtypes = (np.int64, np.bool_, np.float64, np.float64, np.float64)
        columns = [
            np.concatenate([arrays[i] for _, arrays in picked]) if picked else np.zeros(0, dtype)
            for i, dtype in enumerate(dtypes)
        ]
        return _Columns(day, *columns)

    def _scores(self, cols: _Columns) -> dict[str, npt.NDArray[np.float64]]:
        challenger = self.policies.challenger
        scores = {"onnx": cols.onnx, "river": cols.river, "champion": cols.score}
        if challenger is not None:
            scores["challenger"] = challenger.score(cols.onnx, cols.river)
        return scores

    def _report(
        self, scope: str, day: int, days: int, cols: _Columns, card: dict[str, float]
    ) -> QualityReport:
        models: dict[str, ModelQuality] = {}
        threshold = self.config.threshold
        for name, scores in self._scores(cols).items():
            alerted = scores >= threshold
            precision = float(cols.y[alerted].mean()) if alerted.any() else math.nan
            models[name] = ModelQuality(
                roc_auc(cols.y, scores),
                average_precision(cols.y, scores),
                card.get(name, math.nan),
                precision,
            )
        alerts = int((cols.score >= threshold).sum())
        size, frauds = int(cols.y.size), int(cols.y.sum())
        return QualityReport(
            scope, day, days, size, frauds, alerts, self.late, self.policies, models
        )
