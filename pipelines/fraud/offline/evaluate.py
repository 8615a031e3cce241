"""``streamwise evaluate transactions``: the fraud pipeline's quality on the handbook protocol.

:func:`evaluate` simulates the data (:mod:`processors.fraud.evaluation_data`), replays it
through the processors and models of ``streamwise worker transactions`` (streaming feature
windows, the manifest's ONNX model, the River learner fed labels in event time,
:class:`processors.fraud.quality.Policy`) and measures the test week with the handbook's
definitions: test rows from :func:`models.fraud_train.handbook_split`, ROC AUC, average
precision and card precision@100 from :mod:`processors.fraud.metrics`. The result is a plain
dict (the ``--json`` output); :func:`format_report` prints it beside the handbook's numbers.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from models.fraud_train import handbook_split
from pipelines.fraud.offline.replay import replay_learner
from pipelines.settings import Settings
from processors.fraud.evaluation_data import EvalSetup, replay_table
from processors.fraud.metrics import (
    DayCustomers,
    average_precision,
    card_precision_at_k,
    roc_auc,
)
from processors.fraud.quality import Policy

__all__ = ["GOAL", "HANDBOOK", "SCENARIOS", "EvalScores", "evaluate", "format_report", "score"]

FloatArray = npt.NDArray[np.float64]

#: The handbook's published test-week results (AUC, AP, card precision@100), from issue 4.
HANDBOOK: dict[str, tuple[float, float, float]] = {
    "logistic regression": (0.871, 0.606, 0.291),
    "random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.862, 0.639, 0.273),
    "XGBoost after model selection": (0.869, 0.687, 0.303),
    "random forest after model selection": (0.870, 0.678, 0.299),
}
GOAL = {"roc_auc": 0.875, "average_precision": 0.70, "card_precision_at_100": 0.31}
#: The simulator's ``scenario`` codes (``processors.fraud.simulator.SCENARIO_*``).
SCENARIOS = {1: "amount > 220", 2: "compromised terminal", 3: "compromised customer"}
TOP_K = 100


class EvalScores:
    """The test rows and every model's scores for them (what the metrics and plots read)."""

    def __init__(
        self,
        setup: EvalSetup,
        y: npt.NDArray[np.int8],
        day: npt.NDArray[np.int64],
        customer: npt.NDArray[np.int64],
        scenario: npt.NDArray[np.int8],
        scores: dict[str, FloatArray],
        info: dict[str, Any],
    ) -> None:
        self.setup, self.y, self.day, self.customer = setup, y, day, customer
        self.scenario, self.scores, self.info = scenario, scores, info


def score(settings: Settings, setup: EvalSetup, river_weight: float | None = None) -> EvalScores:
    """Replay ``setup`` through the pipeline's models; the scores of its test rows."""
    from pipelines.fraud.build import load_model  # imports faust: only when evaluating

    clock, seconds = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = round(now - clock, 2), now

    conf = settings.transactions
    weight = conf.river_weight if river_weight is None else river_weight
    features = settings.transactions.features
    data = replay_table(setup, features)
    lap("simulate_and_features")
    _, test = handbook_split(data.table, setup.protocol)
    test = np.sort(test)
    model = load_model(settings)
    x = data.features[test]
    onnx, onnx_version = model.predict_batch_versioned(x)
    lap("onnx")
    y_all = data.table.column("is_fraud").to_numpy().astype(np.int8)
    test_ms = setup.protocol.day_index(data.times_ms[test])
    start_ms = _midnight_ms(setup.protocol.test_start)
    river = replay_learner(
        data.times_ms, data.features, y_all, test, features.label_delay_ms, start_ms
    )
    lap("river")
    scores = {
        "onnx": onnx,
        "river": river.scores,
        "blend": Policy("blend", weight).score(onnx, river.scores),
        "river_frozen": river.frozen,
        "blend_frozen": Policy("blend", weight).score(onnx, river.frozen),
    }
    p = setup.protocol
    info = {
        "protocol": setup.name,
        "simulation": {
            k: str(v) if isinstance(v, date) else v for k, v in asdict(setup.simulation).items()
        },
        "train": {"start": str(p.train_start), "days": p.train_days},
        "delay_days": p.delay_days,
        "test": {"start": str(p.test_start), "days": p.test_days, "rows": int(test.size)},
        "test_fraud_rate": round(float(y_all[test].mean()), 6) if test.size else 0.0,
        "transactions_replayed": int(data.table.num_rows),
        "scoring": conf.scoring,
        "river_weight": weight,
        "alert_threshold": conf.alert_threshold,
        "versions": {"onnx": onnx_version, "river": river.version},
        "river_learned_at_test_start": river.learned_at_freeze,
        "river_learned_at_test_end": river.learned,
        "seconds": seconds,
    }
    table = data.table
    return EvalScores(
        setup,
        y_all[test],
        (test_ms - (p.train_days + p.delay_days)).astype(np.int64),
        table.column("customer_id").to_numpy()[test].astype(np.int64),
        table.column("scenario").to_numpy()[test].astype(np.int8),
        scores,
        info,
    )


def _midnight_ms(day: date) -> int:
    return (day - date(1970, 1, 1)).days * 86_400_000


def _model_metrics(ev: EvalScores, s: FloatArray) -> dict[str, Any]:
    cp = card_precision_at_k(ev.day, ev.customer, ev.y, s, k=TOP_K)
    return {
        "roc_auc": round(roc_auc(ev.y, s), 4),
        "average_precision": round(average_precision(ev.y, s), 4),
        "card_precision_at_100": round(cp.mean, 4),
        "card_precision_per_day": [round(v, 4) for v in cp.per_day],
    }


def _top_k_cards(ev: EvalScores, s: FloatArray) -> npt.NDArray[np.bool_]:
    """Rows whose customer is among the day's ``TOP_K`` highest-scoring customers."""
    chosen = np.zeros(ev.y.size, dtype=bool)
    for d in np.unique(ev.day).tolist():
        rows = np.flatnonzero(ev.day == d)
        top = DayCustomers.of(ev.customer[rows], ev.y[rows]).top(s[rows], TOP_K)
        chosen[rows] = np.isin(ev.customer[rows], top)
    return chosen


def _scenario_recall(ev: EvalScores, threshold: float) -> dict[str, Any]:
    """Per fraud scenario: frauds in the test week, recall at the threshold and in the top-k."""
    out: dict[str, Any] = {}
    tops = {name: _top_k_cards(ev, ev.scores[name]) for name in ("onnx", "river", "blend")}
    for code, label in SCENARIOS.items():
        rows = (ev.scenario == code) & (ev.y == 1)
        n = int(rows.sum())
        entry: dict[str, Any] = {"scenario": code, "frauds": n}
        for name, chosen in tops.items():
            s = ev.scores[name][rows]
            entry[f"{name}_recall_at_threshold"] = (
                round(float((s >= threshold).mean()), 4) if n else None
            )
            entry[f"{name}_recall_top_k_cards"] = (
                round(float(chosen[rows].mean()), 4) if n else None
            )
        out[label] = entry
    return out


def _alerts_per_day(ev: EvalScores, threshold: float) -> list[dict[str, Any]]:
    s = blend_of(ev)
    start = ev.setup.protocol.test_start
    out = []
    for d in range(ev.setup.protocol.test_days):
        rows = ev.day == d
        alerts = rows & (s >= threshold)
        out.append(
            {
                "day": str(start + timedelta(days=d)),
                "transactions": int(rows.sum()),
                "frauds": int(ev.y[rows].sum()),
                "alerts": int(alerts.sum()),
                "true_alerts": int(ev.y[alerts].sum()),
            }
        )
    return out


def blend_of(ev: EvalScores) -> FloatArray:
    """The score the pipeline's alerts read, in its configured scoring mode."""
    mode = str(ev.info["scoring"])
    return ev.scores["blend" if mode == "blend" else mode]


def evaluate(
    settings: Settings, setup: EvalSetup, river_weight: float | None = None
) -> tuple[dict[str, Any], EvalScores]:
    """The report dict (see ``docs/evaluation.md``) and the scores behind it."""
    ev = score(settings, setup, river_weight)
    threshold = float(ev.info["alert_threshold"])
    models = {name: _model_metrics(ev, s) for name, s in ev.scores.items()}
    best = models["blend" if ev.info["scoring"] == "blend" else str(ev.info["scoring"])]
    report = {
        **ev.info,
        "models": models,
        "scenarios": _scenario_recall(ev, threshold),
        "alerts_per_day": _alerts_per_day(ev, threshold),
        "handbook": {
            name: dict(
                zip(("roc_auc", "average_precision", "card_precision_at_100"), v, strict=True)
            )
            for name, v in HANDBOOK.items()
        },
        "goal": GOAL,
        "goal_met": all(best[k] >= v for k, v in GOAL.items()),
    }
    return report, ev


def format_report(report: dict[str, Any]) -> str:
    """The metrics table beside the handbook's, the scenario recalls and the alerts."""
    t = report["test"]
    lines = [
        f"protocol {report['protocol']}: test week {t['start']} +{t['days']}d, "
        f"{t['rows']:,} transactions, fraud {report['test_fraud_rate']:.3%}; "
        f"{report['transactions_replayed']:,} replayed",
        f"models: {report['versions']['onnx']}, {report['versions']['river']} "
        f"({report['river_learned_at_test_start']:,} labels learned at the test week's start); "
        f"blend weight {report['river_weight']:g}, alert threshold {report['alert_threshold']:g}",
        "",
        f"  {'model':<38} {'AUC ROC':>8} {'AP':>8} {'Card P@100':>11}",
    ]
    names = {
        "onnx": "ONNX LightGBM",
        "river": "River (learning in the test week)",
        "blend": "blend",
        "river_frozen": "River (frozen at the test week's start)",
        "blend_frozen": "blend (River frozen)",
    }

    def cells(m: dict[str, float]) -> str:
        return (
            f"{m['roc_auc']:>8.3f} {m['average_precision']:>8.3f} "
            f"{m['card_precision_at_100']:>11.3f}"
        )

    for key, label in names.items():
        lines.append(f"  {label:<38} {cells(report['models'][key])}")
    lines.append("  handbook (published):")
    for label, m in report["handbook"].items():
        lines.append(f"    {label:<36} {cells(m)}")
    met = "met" if report["goal_met"] else "not met"
    lines.append(f"  {'goal':<38} {cells(report['goal'])}   {met} by {report['scoring']}")
    lines += [
        "",
        f"  {'recall per scenario':<24} {'frauds':>7} "
        f"{'onnx@thr':>9} {'river@thr':>9} {'blend@thr':>9} {'blend top-100 cards':>20}",
    ]
    for label, s in report["scenarios"].items():

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.1%}"

        lines.append(
            f"  {label:<24} {s['frauds']:>7} {pct(s['onnx_recall_at_threshold']):>9} "
            f"{pct(s['river_recall_at_threshold']):>9} {pct(s['blend_recall_at_threshold']):>9} "
            f"{pct(s['blend_recall_top_k_cards']):>20}"
        )
    lines += ["", "  day          transactions  frauds  alerts  true alerts"]
    for d in report["alerts_per_day"]:
        lines.append(
            f"  {d['day']}  {d['transactions']:>12,} {d['frauds']:>7} {d['alerts']:>7} "
            f"{d['true_alerts']:>12}"
        )
    return "\n".join(lines)
