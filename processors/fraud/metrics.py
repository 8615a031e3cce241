"""Fraud detection quality: ROC AUC, average precision and the handbook's card precision@k.

Pure numpy, shared by training (``models.fraud_train``), the offline evaluation
(``streamwise evaluate transactions``) and the live prequential metrics of the pipeline.
``tests/unit/fraud/test_fraud_metrics.py`` checks AUC and AP against scikit-learn and card
precision@k against hand-computed cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CardPrecision",
    "DayCustomers",
    "average_precision",
    "card_precision_at_k",
    "card_precision_days",
    "roc_auc",
    "top_k",
]


def roc_auc(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    truth, s = np.asarray(y).astype(bool), np.asarray(scores, dtype=np.float64)
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # average rank of each tie group
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision: precision summed over recall steps, one step per distinct score
    (scikit-learn's definition); NaN without a positive.

    >>> average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8333333333333333
    """
    truth, s = np.asarray(y).astype(np.float64), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    ranked, hits = s[order], np.cumsum(truth[order])
    if hits.size == 0 or hits[-1] == 0:
        return float("nan")
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # end of each tie group
    tps = hits[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class CardPrecision:
    """Card precision@k: its mean over the days, each day's value, and the days."""

    mean: float
    per_day: tuple[float, ...]
    days: tuple[int, ...]


def card_precision_at_k(
    day: npt.ArrayLike,
    customer: npt.ArrayLike,
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    k: int = 100,
    *,
    drop_detected: bool = True,
) -> CardPrecision:
    """The handbook's ``card_precision_top_k``, day by day in increasing order.

    Each day, every customer not yet detected gets the highest score of their payments that
    day; the ``k`` highest customers are the alerts, and the day's precision is the number of
    them with a fraudulent payment that day divided by ``k`` (not by the number ranked). The
    customers found that way count as known compromised and leave the following days
    (``drop_detected``). Ties in score rank the lower customer id first.

    >>> r = card_precision_at_k([0, 0, 0, 1, 1], [1, 2, 3, 1, 2], [1, 0, 0, 1, 0],
    ...                         [0.9, 0.2, 0.1, 0.8, 0.7], k=1)
    >>> r.per_day   # day 1: customer 1 was detected on day 0, so customer 2 tops it
    (1.0, 0.0)
    """
    days = np.asarray(day, dtype=np.int64)
    who = np.asarray(customer, dtype=np.int64)
    truth = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order_days = np.unique(days)
    groups, day_scores = [], []
    for d in order_days.tolist():
        rows = np.flatnonzero(days == d)
        groups.append(DayCustomers.of(who[rows], truth[rows]))
        day_scores.append(s[rows])
    per_day = card_precision_days(groups, day_scores, k, drop_detected=drop_detected)
    mean = float(np.mean(per_day)) if per_day else float("nan")
    return CardPrecision(mean, tuple(per_day), tuple(order_days.tolist()))


@dataclass(frozen=True)
class DayCustomers:
    """One day's payments grouped by customer: what card precision needs of a day apart
    from the scores, so that a day ranked under several models (or again, at the next
    day's close) is grouped once."""

    order: npt.NDArray[np.intp]  # the day's rows, sorted by customer (stable)
    starts: npt.NDArray[np.intp]  # where each customer's rows begin in ``order``
    ids: npt.NDArray[np.int64]  # the customers, ascending
    fraud: npt.NDArray[np.bool_]  # whether each had a fraudulent payment that day

    @classmethod
    def of(cls, customer: npt.ArrayLike, y: npt.ArrayLike) -> DayCustomers:
        who = np.asarray(customer, dtype=np.int64)
        truth = np.asarray(y).astype(bool)
        order = np.argsort(who, kind="stable")
        sorted_who = who[order]
        starts = (
            np.flatnonzero(np.r_[True, sorted_who[1:] != sorted_who[:-1]])
            if who.size
            else np.zeros(0, dtype=np.intp)
        )
        ids = sorted_who[starts]
        fraud = np.logical_or.reduceat(truth[order], starts) if who.size else np.zeros(0, bool)
        return cls(order, starts, ids, fraud)

    def best(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Each customer's highest score of the day (``scores`` in the day's row order)."""
        if self.ids.size == 0:
            return np.zeros(0, dtype=np.float64)
        return np.maximum.reduceat(np.asarray(scores, dtype=np.float64)[self.order], self.starts)

    def top(self, scores: npt.ArrayLike, k: int) -> npt.NDArray[np.int64]:
        """The day's ``k`` customers with the highest score, highest first."""
        return self.ids[top_k(self.ids, self.best(scores), k)]


def top_k(
    ids: npt.NDArray[np.int64], best: npt.NDArray[np.float64], k: int
) -> npt.NDArray[np.intp]:
    """Positions of the ``k`` highest ``best``, highest first, ties to the lower id."""
    if k < ids.size and not np.isnan(best).any():  # only the k highest need sorting
        kth = np.partition(best, ids.size - k)[ids.size - k]
        near = np.flatnonzero(best >= kth)  # ties with the k-th included
        return near[np.lexsort((ids[near], -best[near]))[:k]]
    return np.lexsort((ids, -best))[:k]


def card_precision_days(
    days: Sequence[DayCustomers],
    scores: Sequence[npt.NDArray[np.float64]],
    k: int = 100,
    *,
    drop_detected: bool = True,
) -> list[float]:
    """Card precision@k of each day, in the given (increasing) order: the work of
    :func:`card_precision_at_k` over days already grouped."""
    detected = np.zeros(0, dtype=np.int64)
    per_day: list[float] = []
    for group, s in zip(days, scores, strict=True):
        ids, best, fraud = group.ids, group.best(s), group.fraud
        if detected.size:
            keep = ~np.isin(ids, detected)
            ids, best, fraud = ids[keep], best[keep], fraud[keep]
        if ids.size == 0:
            per_day.append(0.0)
            continue
        top = top_k(ids, best, k)
        found = ids[top][fraud[top]]
        per_day.append(found.size / k)
        if drop_detected and found.size:
            detected = np.union1d(detected, found)
    return per_day
