"""Card precision@k against a brute-force reading of the handbook's definition."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.fraud.metrics import DayCustomers, card_precision_at_k, card_precision_days

# Few scores and customers, so that ties in score and repeat customers are common.
payments = st.lists(
    st.tuples(
        st.integers(0, 4),  # day
        st.integers(0, 12),  # customer
        st.booleans(),  # fraud
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]),  # score
    ),
    min_size=1,
    max_size=120,
)


def brute_force(rows: list[tuple[int, int, bool, float]], k: int, drop: bool) -> list[float]:
    detected: set[int] = set()
    per_day = []
    for day in sorted({r[0] for r in rows}):
        best: dict[int, float] = {}
        fraud: dict[int, bool] = {}
        for d, customer, is_fraud, score in rows:
            if d == day and customer not in detected:
                best[customer] = max(best.get(customer, -math.inf), score)
                fraud[customer] = fraud.get(customer, False) or is_fraud
        ranked = sorted(best, key=lambda c: (-best[c], c))[:k]
        found = [c for c in ranked if fraud[c]]
        per_day.append(len(found) / k)
        if drop:
            detected.update(found)
    return per_day


@settings(max_examples=300, deadline=None)
@given(payments, st.integers(1, 8), st.booleans())
def test_card_precision_equals_brute_force(
    rows: list[tuple[int, int, bool, float]], k: int, drop: bool
) -> None:
    day, customer, y, scores = (list(c) for c in zip(*rows, strict=True))
    expected = brute_force(rows, k, drop)
    result = card_precision_at_k(day, customer, y, scores, k, drop_detected=drop)
    assert list(result.per_day) == expected
    assert result.days == tuple(sorted(set(day)))
    # The same days grouped beforehand (as the live evaluation keeps them) agree too.
    days = sorted(set(day))
    groups = [
        DayCustomers.of(*zip(*[(r[1], r[2]) for r in rows if r[0] == d], strict=True)) for d in days
    ]
    by_day = [[r[3] for r in rows if r[0] == d] for d in days]
    assert card_precision_days(groups, by_day, k, drop_detected=drop) == expected


@settings(max_examples=200, deadline=None)
@given(payments, st.integers(1, 8))
def test_a_days_top_customers_are_the_highest_scoring_ties_to_the_lower_id(
    rows: list[tuple[int, int, bool, float]], k: int
) -> None:
    for day in sorted({r[0] for r in rows}):
        of_day = [r for r in rows if r[0] == day]
        best: dict[int, float] = {}
        for _, customer, _, score in of_day:
            best[customer] = max(best.get(customer, -math.inf), score)
        expected = sorted(best, key=lambda c: (-best[c], c))[:k]
        group = DayCustomers.of([r[1] for r in of_day], [r[2] for r in of_day])
        assert group.top([r[3] for r in of_day], k).tolist() == expected
