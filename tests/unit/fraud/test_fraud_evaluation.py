"""``streamwise evaluate transactions`` on the short seeded protocol, through the real code path.

The short simulation (1,000 customers, 42 days) is simulated, its features replayed by the
streaming windows, scored by the shipped ONNX model and by the River learner fed labels in
event time; the metrics must be well above what a random ranking of the same rows gets. The
learner replay must never use a label before its time. The report writes real PNGs and an
HTML page that shows them, and the CLI's ``--json`` has the documented shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from models.fraud_learner import OnlineFraudLearner
from pipelines.cli.main import main
from pipelines.fraud.offline.evaluate import EvalScores, evaluate
from pipelines.fraud.offline.replay import replay_learner
from pipelines.fraud.offline.report import PLOTS, write_report
from pipelines.settings import Settings
from processors.fraud.evaluation_data import eval_setup
from processors.fraud.metrics import average_precision, card_precision_at_k, roc_auc

MODELS = ("onnx", "river", "blend")
HOUR = 3_600_000


@pytest.fixture(scope="module")
def short() -> tuple[dict[str, Any], EvalScores]:
    return evaluate(Settings(), eval_setup("short", seed=0))


def chance(ev: EvalScores) -> dict[str, float]:
    """The metrics of random rankings of the same test rows (mean of five)."""
    rng = np.random.default_rng(0)
    runs = [rng.random(ev.y.size) for _ in range(5)]
    return {
        "roc_auc": float(np.mean([roc_auc(ev.y, s) for s in runs])),
        "average_precision": float(np.mean([average_precision(ev.y, s) for s in runs])),
        "card_precision_at_100": float(
            np.mean([card_precision_at_k(ev.day, ev.customer, ev.y, s).mean for s in runs])
        ),
    }


def test_every_model_ranks_frauds_far_above_chance(
    short: tuple[dict[str, Any], EvalScores],
) -> None:
    report, ev = short
    base = chance(ev)
    assert 0.45 < base["roc_auc"] < 0.55
    assert report["test"]["rows"] == ev.y.size > 1000
    for name in MODELS:
        m = report["models"][name]
        assert m["roc_auc"] > 0.7, name
        assert m["average_precision"] > 4 * base["average_precision"], name
        assert m["card_precision_at_100"] > 1.5 * base["card_precision_at_100"], name
        assert len(m["card_precision_per_day"]) == 7


def test_the_learner_learned_the_labels_due_by_the_test_week(
    short: tuple[dict[str, Any], EvalScores],
) -> None:
    report, ev = short
    # Labels up to the test week's start arrive a week after their payments: three weeks of
    # the 42 days are due by then, about a week more by the end.
    learned_start = report["river_learned_at_test_start"]
    learned_end = report["river_learned_at_test_end"]
    replayed = report["transactions_replayed"]
    assert 0.55 * replayed < learned_start < learned_end < 0.9 * replayed
    assert report["versions"]["river"] == f"river-logreg/{learned_end}"
    assert report["versions"]["onnx"].startswith("fraud-lgbm/")
    assert not np.array_equal(ev.scores["river"], ev.scores["river_frozen"])


def test_recall_per_scenario_counts_the_test_frauds(
    short: tuple[dict[str, Any], EvalScores],
) -> None:
    report, ev = short
    scenarios = report["scenarios"]
    assert sum(s["frauds"] for s in scenarios.values()) == int(ev.y.sum())
    for s in scenarios.values():
        if s["frauds"]:
            for name in MODELS:
                assert 0.0 <= s[f"{name}_recall_at_threshold"] <= 1.0
                assert 0.0 <= s[f"{name}_recall_top_k_cards"] <= 1.0
    days = report["alerts_per_day"]
    assert sum(d["transactions"] for d in days) == ev.y.size
    assert all(0 <= d["true_alerts"] <= min(d["alerts"], d["frauds"]) for d in days)


def test_replay_uses_a_label_only_from_its_label_time() -> None:
    # Two payments at hour 0 (one fraud), a label delay of 10 h; rows scored at hours 5 and 11.
    times = np.array([0, 0, 5 * HOUR, 11 * HOUR], dtype=np.int64)
    x = np.array([[900.0, 1.0], [10.0, 0.0], [900.0, 1.0], [900.0, 1.0]])
    y = np.array([1, 0, 1, 1], dtype=np.int8)
    learner = OnlineFraudLearner(feature_names=("amount", "night"))
    out = replay_learner(
        times, x, y, np.array([2, 3]), 10 * HOUR, freeze_ms=11 * HOUR, learner=learner
    )
    assert out.scores[0] == 0.5  # hour 5: no label has arrived, the model is untouched
    assert out.scores[1] > 0.5  # hour 11: the two hour-0 labels are learned
    assert out.learned_at_freeze == out.learned == 2  # hours 5 and 11 are labelled after 11


def test_report_writes_readable_pngs_and_a_page_showing_them(
    short: tuple[dict[str, Any], EvalScores], tmp_path: Path
) -> None:
    report, ev = short
    page = write_report(report, ev, tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    for name in PLOTS:
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(png)
        height, width = pixels.shape[:2]
        assert height >= 300
        assert width >= 500
        assert pixels.std() > 0.05  # something is drawn, not a blank canvas
        assert f'<img src="{name}"' in text
    assert f"{report['models']['blend']['roc_auc']:.3f}" in text


def test_cli_prints_the_report_as_json() -> None:
    result = CliRunner().invoke(
        main, ["evaluate", "transactions", "--protocol", "short", "--seed", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["protocol"] == "short"
    assert set(report["models"]) == {*MODELS, "river_frozen", "blend_frozen"}
    for m in report["models"].values():
        assert set(m) == {
            "roc_auc",
            "average_precision",
            "card_precision_at_100",
            "card_precision_per_day",
        }
    assert set(report["handbook"]) >= {"logistic regression", "random forest"}
    assert report["goal"] == {
        "roc_auc": 0.875,
        "average_precision": 0.70,
        "card_precision_at_100": 0.31,
    }
    assert isinstance(report["goal_met"], bool)


def test_a_protocol_the_simulation_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="needs data from 2018-07-25"):
        eval_setup("handbook", days=60)
    result = CliRunner().invoke(main, ["evaluate", "transactions", "--days", "60"])
    assert result.exit_code != 0
    assert "needs data from" in result.output
