"""Quality metrics against scikit-learn (AUC, AP) and hand-computed card precision@k."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from processors.fraud.metrics import average_precision, card_precision_at_k, roc_auc


@pytest.mark.parametrize("seed", range(6))
def test_auc_and_ap_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 2000))
    y = (rng.random(n) < 0.05 + 0.1 * (seed % 3)).astype(int)
    y[0], y[1] = 0, 1
    # Rounded scores make ties, which both definitions must treat the same way.
    scores = np.round(rng.random(n) * 0.5 + 0.4 * y * rng.random(n), seed % 3 + 1)
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert average_precision(y, scores) == pytest.approx(
        average_precision_score(y, scores), abs=1e-12
    )


def test_auc_and_ap_are_nan_without_both_classes() -> None:
    assert np.isnan(roc_auc([0, 0], [0.1, 0.2]))
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_card_precision_takes_each_customers_highest_score_and_divides_by_k() -> None:
    # Day 0: customer 7 has two payments (0.1 and 0.95); the fraud is on the low one.
    day = [0, 0, 0, 0, 0]
    customer = [7, 7, 8, 9, 10]
    y = [1, 0, 0, 1, 0]
    scores = [0.1, 0.95, 0.9, 0.2, 0.3]
    r = card_precision_at_k(day, customer, y, scores, k=2)
    # Top 2 customers: 7 (0.95, compromised), 8 (0.9, not) -> 1/2.
    assert r.per_day == (0.5,)
    # k larger than the customers of the day still divides by k: 2 frauds of 4 customers.
    assert card_precision_at_k(day, customer, y, scores, k=10).per_day == (0.2,)


def test_detected_customers_leave_later_days_only_when_asked() -> None:
    day = [0, 0, 1, 1, 2, 2]
    customer = [1, 2, 1, 2, 1, 2]
    y = [1, 0, 1, 0, 1, 1]
    scores = [0.9, 0.1, 0.9, 0.1, 0.9, 0.5]
    kept = card_precision_at_k(day, customer, y, scores, k=1)
    # Day 0 finds customer 1; days 1 and 2 rank customer 2 alone (fraud only on day 2).
    assert kept.per_day == (1.0, 0.0, 1.0)
    assert kept.days == (0, 1, 2)
    assert kept.mean == pytest.approx(2 / 3)
    again = card_precision_at_k(day, customer, y, scores, k=1, drop_detected=False)
    assert again.per_day == (1.0, 1.0, 1.0)


def test_card_precision_breaks_ties_by_customer_id() -> None:
    r = card_precision_at_k([0, 0], [5, 3], [1, 0], [0.5, 0.5], k=1)
    assert r.per_day == (0.0,)  # customer 3 ranks first on a tie
