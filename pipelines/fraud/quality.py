"""Live model quality at the learner: prequential metrics, drift alerts, champion/challenger.

The single ``learn-fraud`` stage is the one place that sees every label, each joined (by the
scorer, from ``pending-features``) with the scores that were served for its payment before
the label existed. :class:`QualityMonitor` runs inside that stage, in the learner's worker
thread:

* before the learner learns an example it predicts it, and ADWIN watches that prequential
  error; Page-Hinkley watches the served scores (:mod:`processors.fraud.drift`);
* after the batch, :class:`processors.fraud.quality.FraudQuality` closes the event days whose
  labels are in and reports their metrics, then decides a promotion of the challenger;
* every ``QUALITY_INTERVAL_S`` it reports the rolling window.

Reports go to ``model-metrics`` and to Prometheus (``streamwise_model_quality``); drifts and
promotions to ``alerts``. The scoring policies and the closed days travel in the learner
checkpoint (:meth:`QualityMonitor.to_meta`), so a promotion survives a restart and every
scorer (following the checkpoints) serves with the new champion; the drift detectors start
afresh after a restart (their River state has no data-only form, and checkpoints are never
unpickled).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.runtime.metrics import StepMetrics
from pipelines.settings import Settings, TransactionSettings
from processors.common.schemas import Alert, encode
from processors.fraud.drift import Drift, DriftConfig, DriftWatch
from processors.fraud.quality import (
    DAY_MS,
    FraudQuality,
    Labelled,
    Policies,
    Policy,
    Promotion,
    QualityConfig,
    QualityReport,
)
from processors.fraud.schemas import ModelMetrics

__all__ = ["DRIFT_KIND", "PROMOTED_KIND", "QualityMonitor", "settings_policies"]

DRIFT_KIND = "drift"
PROMOTED_KIND = "model_promoted"
_PIPELINE = "transactions"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Record = tuple[str, bytes, bytes]  # topic, key, value

log = logging.getLogger(__name__)


def settings_policies(conf: TransactionSettings) -> Policies:
    """The champion (``SCORING``, ``RIVER_WEIGHT``) and challenger the settings name."""
    champion = Policy(conf.scoring, conf.river_weight if conf.scoring == "blend" else 0.0)
    c = conf.challenger
    challenger = None if c == "none" else Policy(c, conf.challenger_weight if c == "blend" else 0)
    return Policies(champion, challenger)


def _day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


class QualityMonitor:
    """One writer's live evaluation; methods run in the learner's worker thread."""

    def __init__(self, settings: Settings, metrics: StepMetrics, step: str) -> None:
        conf = settings.transactions
        self.settings = settings
        self.metrics = metrics
        self.step = step
        self.base = settings_policies(conf)
        self.config = QualityConfig(
            window_days=conf.quality_window_days,
            k=conf.quality_k,
            threshold=conf.alert_threshold,
            day_slack_ms=round(conf.quality_day_slack_s * 1000),
            promote_margin=conf.promote_margin,
            promote_window_days=conf.promote_window_days,
        )
        self.drift_config = DriftConfig(conf.drift_error_delta, conf.drift_score_threshold)
        self.quality = FraudQuality(self.config, self.base)
        self.drift = DriftWatch(self.drift_config)
        self.found: list[Drift] = []
        self.next_rolling = 0.0

    @property
    def policies(self) -> Policies:
        return self.quality.policies

    def prequential(self, examples: list[list[Any]], scores: list[float]) -> None:
        """Feed ADWIN the prequential error of each example: its label against the score the
        learner gave it just before learning it (``OnlineFraudLearner.learn_prequential``)."""
        for example, p in zip(examples, scores, strict=True):
            _tx_id, is_fraud, _features, *scored = example
            when = int(scored[0][0]) if scored and scored[0] else max(self.quality.watermark, 0)
            found = self.drift.error(abs(float(is_fraud) - p), when)
            if found is not None:
                self.found.append(found)

    def after_batch(self, examples: list[list[Any]], version: str, now: float) -> list[Record]:
        """Metrics, promotions and drifts of a learned batch, as records to send."""
        rows: list[Labelled] = []
        for example in examples:
            if len(example) < 4 or not example[3]:
                continue  # scored before this release, or its scores were lost
            t_ms, customer, onnx, river, score = example[3]
            rows.append(Labelled(int(t_ms), int(customer), bool(example[1]), onnx, river, score))
            found = self.drift.score(float(score), int(t_ms))
            if found is not None:
                self.found.append(found)
        out: list[Record] = []
        for item in self.quality.add(rows):
            if isinstance(item, QualityReport):
                out.append(self._metrics(item, version))
            else:
                out.append(self._promoted(item, version))
        drifts, self.found = self.found, []
        out.extend(self._drift(d, version) for d in drifts)
        if now >= self.next_rolling:
            self.next_rolling = now + self.settings.transactions.quality_interval_s
            rolling = self.quality.rolling()
            if rolling is not None:
                out.append(self._metrics(rolling, version))
        return out

    def _versions(self, version: str) -> dict[str, str]:
        return {"river": version} | {
            k: v for k, v in self.policies.to_dict().items() if v is not None
        }

    def _metrics(self, report: QualityReport, version: str) -> Record:
        models = {name: q.to_dict() for name, q in report.models.items()}
        for name, values in models.items():
            for metric, value in values.items():
                gauge = self.metrics.model_quality.labels(name, metric, report.scope)
                gauge.set(math.nan if value is None else value)
        record = ModelMetrics(
            pipeline=_PIPELINE,
            scope=report.scope,
            day=_day(report.day),
            days=report.days,
            examples=report.examples,
            frauds=report.frauds,
            alerts=report.alerts,
            late_labels=report.late,
            k=self.config.k,
            threshold=self.config.threshold,
            policies=report.policies.to_dict(),
            models=models,
            model_versions={"river": version},
            emit_time=datetime.now(UTC),
        )
        topic = self.settings.topics.model_metrics
        return topic, f"{_PIPELINE}:{report.scope}".encode(), encode(record)

    def _alert(
        self,
        kind: str,
        event_id: str,
        entity: str,
        score: float,
        threshold: float,
        version: str,
        reasons: list[str],
        when_ms: int,
        evidence: dict[str, Any],
    ) -> Record:
        self.metrics.alerts.labels(self.step, kind).inc()
        alert = Alert(
            pipeline=_PIPELINE,
            kind=kind,
            event_id=event_id,
            entity=entity,
            score=round(score, 6),
            threshold=round(threshold, 6),
            model_versions=self._versions(version),
            reasons=reasons,
            event_time=_EPOCH + timedelta(milliseconds=when_ms),
            emit_time=datetime.now(UTC),
            evidence=evidence,
        )
        return self.settings.topics.alerts, entity.encode(), encode(alert)

    def _drift(self, found: Drift, version: str) -> Record:
        log.warning("drift: %s", "; ".join(found.reasons()))
        entity = "model:river" if found.detector == "learner_error" else "model:champion"
        event_id = f"{found.detector}:{found.event_time_ms}"
        evidence = asdict(found)
        return self._alert(
            DRIFT_KIND,
            event_id,
            entity,
            found.after,
            found.threshold,
            version,
            found.reasons(),
            found.event_time_ms,
            evidence,
        )

    def _promoted(self, p: Promotion, version: str) -> Record:
        old, new = p.before, p.after
        reasons = [
            f"challenger {new.champion} AP {p.challenger_ap:.4f} beat champion {old.champion} "
            f"AP {p.champion_ap:.4f} by at least {p.margin:g} over the {p.window_days} event "
            f"days to {_day(p.day)} ({p.examples} labelled payments, {p.frauds} frauds)",
            f"{new.champion} now serves and alerts; {new.challenger} scores in shadow",
        ]
        log.warning("promotion: %s", reasons[0])
        evidence = {
            "from": str(old.champion),
            "to": str(new.champion),
            "champion_ap": round(p.champion_ap, 6),
            "challenger_ap": round(p.challenger_ap, 6),
            "margin": p.margin,
            "window_days": p.window_days,
            "last_day": _day(p.day),
            "examples": p.examples,
            "frauds": p.frauds,
        }
        when = (p.day + 1) * DAY_MS - 1
        return self._alert(
            PROMOTED_KIND,
            f"day:{_day(p.day)}",
            "model:champion",
            p.challenger_ap,
            p.champion_ap + p.margin,
            version,
            reasons,
            when,
            evidence,
        )

    def to_meta(self) -> dict[str, Any]:
        """What the learner checkpoint carries: policies and closed days (data only)."""
        q = self.quality
        seen = q.watermark if q.watermark > -(2**61) else None
        return {
            "policies": self.policies.to_dict(),
            "base": self.base.to_dict(),
            "closed_through": q.closed_through,
            "watermark": seen,
        }

    def restore(self, meta: dict[str, Any] | None) -> None:
        """Start from a checkpoint's :meth:`to_meta` (a fresh monitor if ``None``)."""
        self.quality = FraudQuality(self.config, self.base)
        self.drift = DriftWatch(self.drift_config)
        self.found = []
        if not meta:
            return
        try:
            self._restore(meta)
        except Exception as exc:  # a damaged meta must not stop learning: start afresh
            log.warning("live evaluation state not restored (%r); starting afresh", exc)
            self.quality = FraudQuality(self.config, self.base)
            self.drift = DriftWatch(self.drift_config)

    def _restore(self, meta: dict[str, Any]) -> None:
        if Policies.from_dict(meta["base"]) == self.base:
            self.quality.policies = Policies.from_dict(meta["policies"])
        else:  # the operator changed SCORING or CHALLENGER: the settings win
            log.warning("scoring settings changed since the checkpoint; promotions reset")
        self.quality.restore(meta.get("closed_through"), meta.get("watermark"))
        # The drift detectors start afresh: their state (River's ADWIN buckets) was a pickle,
        # and nothing read from a topic is unpickled. An older checkpoint's "drift" is ignored.
