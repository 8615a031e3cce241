"""The learner stage's live evaluation: metrics out, drift and promotion alerts, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipelines.fraud.build import internal_topics, load_model
from pipelines.fraud.learning import LearnerReplica, LearnFraud, decode_checkpoint
from pipelines.fraud.scoring import ScoreTransactions
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.fraud.quality import DAY_MS
from tests.pipelines.fraud.test_fraud_stages import T0, internal, row

DAY0 = int(T0.timestamp() * 1000) // DAY_MS * DAY_MS


def settings(home: Path, **quality: Any) -> Settings:
    conf = {"quality_day_slack_s": 0, "quality_interval_s": 0} | quality
    return Settings(home=home, transactions=conf)


def examples(days: int, per_day: int, seed: int, river_skill: float) -> list[list[Any]]:
    """Labelled examples as the scorer sends them, with the scores they were served."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(days * per_day):
        t = DAY0 + (i // per_day) * DAY_MS + (i % per_day) * (DAY_MS // per_day)
        y = bool(rng.random() < 0.1)
        onnx = float(1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2)))))
        river = float(1 / (1 + np.exp(-(2.0 * river_skill * y - 1 + rng.normal(0, 1.2)))))
        score = 0.7 * onnx + 0.3 * river
        served = [t, int(rng.integers(0, 50)), onnx, river, score]
        out.append([i, int(y), rng.random(15).tolist(), served])
    return out


def learn(step: LearnFraud, batches: list[list[list[Any]]], first_offset: int = 0) -> None:
    events = [
        internal("training", "examples", b, offset=first_offset + i) for i, b in enumerate(batches)
    ]
    asyncio.run(run_batch(step, events))


def learner(home: Path, out: RecordingOutputs, **quality: Any) -> tuple[LearnFraud, StepMetrics]:
    metrics = StepMetrics()
    checkpoints = out.on("snapshots")

    async def latest() -> bytes | None:
        return checkpoints[-1].value if checkpoints else None

    step = LearnFraud(settings(home, **quality), out, metrics, "snapshots", latest)
    return step, metrics


def test_labelled_scores_become_daily_and_rolling_metrics_on_the_topic_and_in_prometheus(
    home: Path,
) -> None:
    out = RecordingOutputs()
    step, metrics = learner(home, out, challenger="none")
    data = examples(days=3, per_day=200, seed=1, river_skill=1.0)
    learn(step, [data[:300], data[300:]])
    records = [orjson.loads(s.value) for s in out.on("model-metrics")]
    assert {r["schema"] for r in records} == {"model-metrics/1"}
    daily = [r for r in records if r["scope"] == "day"]
    assert [r["day"] for r in daily] == ["2018-04-02", "2018-04-03"]  # 04-04 awaits labels
    assert daily[0]["examples"] == 200
    assert set(daily[0]["models"]) == {"onnx", "river", "champion"}  # no challenger
    assert 0.5 < daily[0]["models"]["onnx"]["auc"] <= 1.0
    assert daily[0]["policies"] == {"champion": "blend:0.3", "challenger": None}
    rolling = [r for r in records if r["scope"] == "rolling"]
    assert rolling[-1]["examples"] == 600
    assert out.on("model-metrics")[0].key == b"transactions:day"
    text = metrics.render().decode()
    auc = daily[-1]["models"]["onnx"]["auc"]
    assert f'streamwise_model_quality{{metric="auc",model="onnx",scope="day"}} {auc}' in text


def test_a_better_challenger_is_promoted_once_and_scorers_serve_it_after_a_restart(
    home: Path,
) -> None:
    out = RecordingOutputs()
    step, _ = learner(home, out, promote_window_days=2)
    data = examples(days=4, per_day=150, seed=2, river_skill=3.0)  # River ranks far better
    learn(step, [data[:300], data[300:]])
    alerts = [orjson.loads(s.value) for s in out.on("alerts")]
    (promoted,) = [a for a in alerts if a["kind"] == "model_promoted"]
    assert promoted["evidence"]["from"] == "blend:0.3"
    assert promoted["evidence"]["to"] == "blend:0.6"
    ev = promoted["evidence"]
    assert ev["challenger_ap"] >= ev["champion_ap"] + ev["margin"]
    assert promoted["alert_id"] == "transactions:model_promoted:day:2018-04-03"
    checkpoint = out.on("snapshots")[-1].value
    _, _, meta = decode_checkpoint(checkpoint)
    assert meta["policies"] == {"champion": "blend:0.6", "challenger": "blend:0.3"}

    # A restarted learner keeps the promotion (and does not promote back and forth).
    again, _ = learner(home, out, promote_window_days=2)
    more = examples(days=6, per_day=150, seed=3, river_skill=3.0)[600:]
    learn(again, [more], first_offset=2)
    _, _, meta = decode_checkpoint(out.on("snapshots")[-1].value)
    assert meta["policies"]["champion"] == "blend:0.6"
    kinds = [orjson.loads(s.value)["kind"] for s in out.on("alerts")]
    assert kinds.count("model_promoted") == 1
    new_days = [
        orjson.loads(s.value)["day"]
        for s in out.on("model-metrics")
        if orjson.loads(s.value)["scope"] == "day"
    ]
    assert new_days[-1] == "2018-04-06"

    # Scorers follow the checkpoint: the promoted policy serves, the old one is the shadow.
    replica = LearnerReplica()
    replica.update(out.on("snapshots")[-1].value)
    conf = settings(home, promote_window_days=2)
    names = internal_topics(conf)
    scored = RecordingOutputs()
    scorer = ScoreTransactions(
        conf, load_model(conf), replica, {}, {}, scored, StepMetrics(), names
    )
    asyncio.run(run_batch(scorer, [internal(names["tx"], "rows", [row(1, DAY0, 20.0)])]))
    (prediction,) = [orjson.loads(s.value) for s in scored.on("predictions")]
    versions, features = prediction["model_versions"], prediction["features"]
    assert (versions["champion"], versions["challenger"]) == ("blend:0.6", "blend:0.3")
    expected = 0.4 * features["score_onnx"] + 0.6 * features["score_river"]
    assert abs(prediction["score"] - expected) < 2e-6


def test_a_jump_in_the_learner_error_raises_a_drift_alert_with_its_evidence(home: Path) -> None:
    out = RecordingOutputs()
    step, metrics = learner(home, out, challenger="none")
    rng = np.random.default_rng(4)
    data = []
    for i in range(1200):  # the learner learns "never fraud", then everything is fraud
        served = [DAY0 + i * 60_000, 1, 0.1, 0.1, 0.1]
        data.append([i, int(i >= 900), rng.random(15).tolist(), served])
    learn(step, [data])
    alerts = [orjson.loads(s.value) for s in out.on("alerts")]
    jump = DAY0 + 900 * 60_000
    drifts = [
        a
        for a in alerts
        if a["kind"] == "drift"
        and a["entity"] == "model:river"
        and a["evidence"]["event_time_ms"] >= jump
    ]
    assert drifts, [a["kind"] for a in alerts]
    evidence = drifts[0]["evidence"]
    assert (evidence["detector"], evidence["method"]) == ("learner_error", "ADWIN")
    assert evidence["after"] > evidence["before"]
    assert evidence["event_time_ms"] < jump + 200 * 60_000
    assert drifts[0]["reasons"][0].startswith("ADWIN detected a change in |y - p|")
    assert 'streamwise_alerts_total{kind="drift",step="learn-fraud"}' in metrics.render().decode()


def test_changed_settings_or_damaged_state_reset_the_promotion(home: Path) -> None:
    from pipelines.fraud.quality import QualityMonitor

    promoted = QualityMonitor(settings(home), StepMetrics(), "learn-fraud")
    promoted.quality.policies = promoted.base.swapped()
    meta = promoted.to_meta()
    same = QualityMonitor(settings(home), StepMetrics(), "learn-fraud")
    same.restore(meta)
    assert str(same.policies.champion) == "blend:0.6"
    changed = QualityMonitor(settings(home, challenger="river"), StepMetrics(), "learn-fraud")
    changed.restore(meta)
    assert (str(changed.policies.champion), str(changed.policies.challenger)) == (
        "blend:0.3",
        "river",
    )
    damaged = QualityMonitor(settings(home), StepMetrics(), "learn-fraud")
    damaged.restore(meta | {"policies": {"champion": "forest"}})
    assert str(damaged.policies.champion) == "blend:0.3"
