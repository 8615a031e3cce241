"""Live quality processors: rolling and daily metrics, day closing, drift, promotion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processors.fraud.drift import DriftConfig, DriftWatch
from processors.fraud.metrics import average_precision, card_precision_at_k, roc_auc
from processors.fraud.pending import PendingFeatures
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

CHAMPION = Policies(Policy("blend", 0.3), Policy("blend", 0.9))
HOUR = 3_600_000


def stream(days: int, per_day: int, seed: int, river_skill: float = 1.0) -> list[Labelled]:
    """Payments in event-time order: ONNX a fair ranker, River ``river_skill`` times sharper."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        times = np.sort(rng.integers(0, DAY_MS, per_day)) + day * DAY_MS
        y = rng.random(per_day) < 0.1
        onnx = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2, per_day))))
        river = 1 / (1 + np.exp(-(2.0 * river_skill * y - 1 + rng.normal(0, 1.2, per_day))))
        customers = rng.integers(0, per_day // 3, per_day)
        for i in range(per_day):
            score = 0.7 * onnx[i] + 0.3 * river[i]
            rows.append(
                Labelled(int(times[i]), int(customers[i]), bool(y[i]), onnx[i], river[i], score)
            )
    return rows


def reports(out: list[QualityReport | Promotion]) -> list[QualityReport]:
    return [r for r in out if isinstance(r, QualityReport)]


def test_a_day_is_reported_once_when_a_label_past_its_end_and_the_slack_arrives() -> None:
    quality = FraudQuality(QualityConfig(day_slack_ms=2 * HOUR), CHAMPION)
    rows = stream(3, 200, seed=1)
    cut = DAY_MS + 2 * HOUR  # day 0's end plus the slack
    assert reports(quality.add([r for r in rows if r.tx_time_ms < cut])) == []
    out = reports(quality.add([r for r in rows if cut <= r.tx_time_ms < 2 * DAY_MS + HOUR]))
    assert [r.day for r in out] == [0]
    assert out[0].examples == sum(r.tx_time_ms < DAY_MS for r in rows)
    late = Labelled(5, 1, True, 0.9, 0.9, 0.9)  # a label for closed day 0
    assert reports(quality.add([late])) == []
    assert [r.day for r in reports(quality.add(rows[-1:]))] == [1]
    rolling = quality.rolling()
    assert rolling is not None
    assert rolling.late == 1


def test_daily_and_rolling_metrics_equal_a_direct_computation() -> None:
    config = QualityConfig(window_days=3, k=20, day_slack_ms=0)
    quality = FraudQuality(config, CHAMPION)
    rows = stream(6, 300, seed=2)
    out = reports(quality.add(rows))
    assert [r.day for r in out] == [0, 1, 2, 3, 4]  # day 5 is still open
    day4 = [r for r in rows if r.tx_time_ms // DAY_MS == 4]
    y = np.array([r.is_fraud for r in day4])
    onnx, river = np.array([r.onnx for r in day4]), np.array([r.river for r in day4])
    got = out[-1].models
    assert got["onnx"].auc == roc_auc(y, onnx)
    assert got["river"].ap == average_precision(y, river)
    challenger = 0.1 * onnx + 0.9 * river
    assert got["challenger"].ap == pytest.approx(average_precision(y, challenger), abs=1e-12)
    assert got["onnx"].alert_precision == y[onnx >= 0.5].mean()
    # Card precision of day 4: customers found on the earlier kept days are left out.
    kept = [r for r in rows if r.tx_time_ms // DAY_MS <= 4]
    direct = card_precision_at_k(
        [r.tx_time_ms // DAY_MS for r in kept],
        [r.customer for r in kept],
        [r.is_fraud for r in kept],
        [r.onnx for r in kept],
        k=20,
    )
    assert got["onnx"].card_precision == direct.per_day[-1]
    # Rolling: the payments of the last 3 event days (3, 4 and the open day 5).
    rolling = quality.rolling()
    assert rolling is not None
    assert rolling.days == 3
    recent = [r for r in rows if r.tx_time_ms // DAY_MS >= 3]
    ry = np.array([r.is_fraud for r in recent])
    assert rolling.examples == len(recent)
    assert rolling.models["champion"].auc == roc_auc(ry, [r.score for r in recent])
    assert rolling.models["champion"].card_precision == pytest.approx(
        np.mean([r.models["champion"].card_precision for r in out[3:]])
    )


def test_undefined_metrics_are_nan_and_encode_as_null() -> None:
    quality = FraudQuality(QualityConfig(day_slack_ms=0), CHAMPION)
    rows = [Labelled(i, i, False, 0.1, 0.1, 0.1) for i in range(5)]
    (report,) = reports(quality.add([*rows, Labelled(DAY_MS, 1, False, 0.1, 0.1, 0.1)]))
    assert math.isnan(report.models["onnx"].auc)
    assert report.models["onnx"].to_dict() == {
        "auc": None,
        "ap": None,
        "card_precision_at_k": 0.0,
        "alert_precision": None,
    }


def promote(margin: float, window: int, skill: float) -> list[Promotion]:
    config = QualityConfig(day_slack_ms=0, promote_margin=margin, promote_window_days=window)
    quality = FraudQuality(config, CHAMPION)
    out = quality.add(stream(10, 300, seed=3, river_skill=skill))
    return [p for p in out if isinstance(p, Promotion)]


def test_a_challenger_better_by_the_margin_over_the_window_is_promoted_once() -> None:
    (promotion,) = promote(margin=0.02, window=4, skill=2.5)
    assert promotion.day == 3  # the first day with 4 closed days behind it
    assert promotion.after == CHAMPION.swapped()
    assert promotion.challenger_ap >= promotion.champion_ap + 0.02
    assert (promotion.window_days, promotion.examples) == (4, 4 * 300)
    assert promote(margin=0.5, window=4, skill=2.5) == []  # not by that much
    assert promote(margin=0.02, window=4, skill=0.5) == []  # a worse challenger stays
    assert promote(margin=0.02, window=12, skill=2.5) == []  # window not filled yet


def test_after_a_restart_days_seen_in_part_are_neither_reported_nor_compared() -> None:
    rows = stream(8, 200, seed=4, river_skill=2.5)
    config = QualityConfig(day_slack_ms=0, promote_window_days=2)
    quality = FraudQuality(config, Policies(CHAMPION.champion, None))
    first = [r for r in rows if r.tx_time_ms < 2 * DAY_MS + DAY_MS // 2]
    quality.add(first)
    closed, watermark = quality.closed_through, quality.watermark
    assert closed == 1
    restarted = FraudQuality(config, CHAMPION)
    restarted.restore(closed, watermark)
    rest = rows[len(first) :]
    out = restarted.add(rest)
    assert [r.day for r in reports(out)] == [3, 4, 5, 6]  # day 2 was half lost
    assert [p.day for p in out if isinstance(p, Promotion)] == [4]  # days 3 and 4


def test_policies_print_and_parse_back() -> None:
    for text in ("onnx", "river", "blend:0.3", "blend:1"):
        assert str(Policy.parse(text)) == text
    for bad in ("blend", "blend:2", "onnx:0.3", "forest"):
        with pytest.raises(ValueError, match="not a scoring policy"):
            Policy.parse(bad)
    assert Policies.from_dict(CHAMPION.to_dict()) == CHAMPION


def errors(seed: int, shift_at: int | None, n: int = 6000) -> list[float]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.05
    p = np.clip(rng.normal(0.05, 0.03, n), 0, 1)
    if shift_at is not None:  # the learner goes wrong: frauds scored low, others higher
        p[shift_at:] = np.clip(rng.normal(0.3, 0.1, n - shift_at), 0, 1)
    return np.abs(y - p).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adwin_fires_on_a_shift_in_the_learner_error_and_not_on_a_stationary_stream(
    seed: int,
) -> None:
    stationary = DriftWatch(DriftConfig())
    assert [d for i, e in enumerate(errors(seed, None)) if (d := stationary.error(e, i))] == []
    shifted = DriftWatch(DriftConfig())
    found = [d for i, e in enumerate(errors(seed, 3000)) if (d := shifted.error(e, i))]
    assert found, "no drift found"
    first = found[0]
    assert 3000 <= first.event_time_ms < 3500
    assert first.after > first.before + 0.03
    assert first.seen + first.window >= 3000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_page_hinkley_fires_on_a_shift_in_scores_and_not_on_a_stationary_stream(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.normal(0.05, 0.05, 8000), 0, 1)
    still = DriftWatch(DriftConfig())
    assert [d for i, s in enumerate(scores.tolist()) if (d := still.score(s, i))] == []
    scores[4000:] += 0.1  # everything scores higher: new population or a broken feature
    moved = DriftWatch(DriftConfig())
    found = [d for i, s in enumerate(scores.tolist()) if (d := moved.score(s, i))]
    assert found
    assert 4000 <= found[0].event_time_ms < 5000
    assert found[0].detector == "score"
    assert found[0].after > found[0].before


def test_pending_features_of_the_first_format_read_with_unknown_notes() -> None:
    import struct

    v1 = struct.pack("<BII", 1, 1, 2) + np.array([7, 1000], "<i8").tobytes()
    v1 += np.array([1.0, 2.0], "<f8").tobytes()
    entry = PendingFeatures.from_bytes(v1).take(7)
    assert entry is not None
    assert entry[:2] == (1000, [1.0, 2.0])
    assert all(math.isnan(v) for v in entry[2])


def test_only_model_alerts_carry_evidence_and_metrics_encode_with_their_schema() -> None:
    from datetime import UTC, datetime

    import orjson

    from processors.common.schemas import Alert, encode
    from processors.fraud.schemas import ModelMetrics

    when = datetime(2018, 4, 2, tzinfo=UTC)
    alert = Alert(
        "transactions", "fraud_suspected", "1", "customer:1", 0.9, 0.5, {}, [], when, when
    )
    assert "evidence" not in orjson.loads(encode(alert))
    drift = Alert(
        "transactions", "drift", "x", "model:river", 0.3, 0.002, {}, [], when, when, {"a": 1}
    )
    assert orjson.loads(encode(drift))["evidence"] == {"a": 1}
    metrics = ModelMetrics(
        "transactions", "day", "2018-04-02", 1, 10, 1, 2, 0, 100, 0.5, {}, {}, {}, when
    )
    assert orjson.loads(encode(metrics))["schema"] == "model-metrics/1"
