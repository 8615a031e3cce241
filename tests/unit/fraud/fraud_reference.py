"""Batch reference for the handbook features: whole-table numpy/pyarrow, no streaming code.

Follows the Fraud Detection Handbook's pandas recipe literally, per entity over its rows in
stream order (by ``tx_time``, then ``tx_id``):

- customer: ``rolling('Nd')`` count and sum of the amount, window ``(t - w, t]`` whose right
  edge is the row itself (rows at the same time count only if they come earlier);
- terminal: ``NB_TX_WINDOW = count(rolling(delay + w)) - count(rolling(delay))`` and the same
  difference of fraud sums; ``RISK = NB_FRAUD / NB_TX`` with 0/0 -> 0. The handbook sums every
  ``TX_FRAUD`` in the window; with labels arriving ``delay`` after the transaction they have
  all been received by ``t``, which is what the streaming side counts.

Sums use :func:`math.fsum` (correctly rounded), so means compare with ``==``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400_000


def _stream_order(table: pa.Table) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    millis = table.column("tx_time").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    times = millis.to_numpy().astype(np.int64)
    order = np.lexsort((table.column("tx_id").to_numpy(), times))
    return order, times


def _groups(keys: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
    """Positions (into ``keys``) of each key's rows, keeping their order."""
    by_key = np.argsort(keys, kind="stable")
    cuts = np.flatnonzero(np.diff(keys[by_key])) + 1
    return np.split(by_key, cuts)


def _rolling_count(times: npt.NDArray[np.int64], span: int) -> npt.NDArray[np.int64]:
    """pandas ``rolling(span).count()`` with the positional right edge; also the window starts."""
    return np.searchsorted(times, times - span, side="right").astype(np.int64)


def reference_features(
    table: pa.Table, windows_days: tuple[int, ...] = (1, 7, 30), delay_days: int = 7
) -> npt.NDArray[np.float64]:
    """``[rows, 3 + 4 * len(windows_days)]`` features in the table's row order."""
    order, all_times = _stream_order(table)
    times = all_times[order]
    amounts = table.column("amount").to_numpy()[order].astype(np.float64)
    frauds = table.column("is_fraud").to_numpy()[order].astype(np.int64)
    k = len(windows_days)
    out = np.zeros((len(order), 3 + 4 * k))
    out[:, 0] = amounts
    ts = table.column("tx_time")
    out[:, 1] = (pc.day_of_week(ts).to_numpy() >= 5)[order]  # Monday = 0
    out[:, 2] = (pc.hour(ts).to_numpy() <= 6)[order]
    for rows in _groups(table.column("customer_id").to_numpy()[order].astype(np.int64)):
        t, a = times[rows], amounts[rows].tolist()
        for w, days in enumerate(windows_days):
            starts = _rolling_count(t, days * DAY)
            out[rows, 3 + 2 * w] = np.arange(1, len(rows) + 1) - starts
            out[rows, 4 + 2 * w] = [
                math.fsum(a[s : p + 1]) / (p + 1 - s) for p, s in enumerate(starts.tolist())
            ]
    for rows in _groups(table.column("terminal_id").to_numpy()[order].astype(np.int64)):
        t = times[rows]
        prefix = np.concatenate([[0], np.cumsum(frauds[rows])])
        delay_start = _rolling_count(t, delay_days * DAY)
        for w, days in enumerate(windows_days):
            start = _rolling_count(t, (delay_days + days) * DAY)
            nb_tx = delay_start - start  # (p + 1 - start) - (p + 1 - delay_start)
            nb_fraud = prefix[delay_start] - prefix[start]
            risk = np.divide(nb_fraud, nb_tx, out=np.zeros(len(rows)), where=nb_tx > 0)
            out[rows, 3 + 2 * k + 2 * w] = nb_tx
            out[rows, 4 + 2 * k + 2 * w] = risk
    result = np.empty_like(out)
    result[order] = out
    return result
