"""The Fraud Detection Handbook's 15 transaction features, and a replay of a table through them.

A transaction's features are its amount, two calendar flags (UTC) and the windowed features of
:mod:`processors.fraud.windows`: per customer the number and mean amount of payments over the
last 1, 7 and 30 days, per terminal the number of transactions and the share of known frauds
over the same windows shifted back by the label delay. :func:`replay_features` feeds a whole
table through the same streaming windows in the producer's order, so a model trained on its
output sees exactly the features the workers compute live.

>>> transaction_flags(0)  # 1970-01-01T00:00Z, a Thursday night
(0.0, 1.0)
>>> FEATURE_NAMES[3:5]
('CUSTOMER_ID_NB_TX_1DAY_WINDOW', 'CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW')
"""

from __future__ import annotations

from array import array

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from processors.fraud.windows import (
    DAY_MS,
    CustomerWindow,
    FeatureConfig,
    LabelStatus,
    Late,
    TerminalWindow,
)

__all__ = [
    "DEFAULT_CONFIG",
    "FEATURE_NAMES",
    "CustomerWindow",
    "FeatureConfig",
    "LabelStatus",
    "Late",
    "TerminalWindow",
    "feature_names",
    "feature_row",
    "replay_features",
    "transaction_flags",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_NIGHT_END_MS = 7 * 3_600_000  # hours 0 to 6 are night
_THURSDAY = 3  # weekday (Monday = 0) of 1970-01-01


def feature_names(config: FeatureConfig) -> tuple[str, ...]:
    """Column names of the feature rows for ``config``'s windows, in row order."""
    names = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    for days in config.windows_days:
        names += (f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{days}DAY_WINDOW")
    for days in config.windows_days:
        names += (f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW", f"TERMINAL_ID_RISK_{days}DAY_WINDOW")
    return tuple(names)


DEFAULT_CONFIG = FeatureConfig()
FEATURE_NAMES: tuple[str, ...] = feature_names(DEFAULT_CONFIG)


def transaction_flags(tx_time_ms: int) -> tuple[float, float]:
    """``(weekend, night)`` as 0.0/1.0: Saturday or Sunday, and hour <= 6, both in UTC."""
    day, in_day = divmod(tx_time_ms, DAY_MS)
    return float((day + _THURSDAY) % 7 >= 5), float(in_day < _NIGHT_END_MS)


def _flags(tx_ms: IntArray) -> tuple[FloatArray, FloatArray]:
    """:func:`transaction_flags` over an array."""
    day, in_day = np.divmod(tx_ms, DAY_MS)
    weekend = ((day + _THURSDAY) % 7 >= 5).astype(np.float64)
    return weekend, (in_day < _NIGHT_END_MS).astype(np.float64)


def feature_row(
    amount: float, tx_time_ms: int, customer: list[float], terminal: list[float]
) -> list[float]:
    """One transaction's features in :data:`FEATURE_NAMES` order."""
    return [amount, *transaction_flags(tx_time_ms), *customer, *terminal]


def _stream_columns(table: pa.Table) -> tuple[IntArray, IntArray, bool]:
    """Row order of the producer's stream (by time, then tx id), times in ms, has labels."""
    tx_ms = table.column("tx_time").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    times: IntArray = tx_ms.to_numpy().astype(np.int64)
    ids: IntArray = table.column("tx_id").to_numpy().astype(np.int64)
    order: IntArray = np.lexsort((ids, times)).astype(np.int64)
    return order, times, "is_fraud" in table.column_names


def replay_features(table: pa.Table, config: FeatureConfig = DEFAULT_CONFIG) -> FloatArray:
    """``[rows, features]`` for every row of ``table``, in the table's row order.

    Transactions go through :class:`CustomerWindow` and :class:`TerminalWindow` sorted by
    ``(tx_time, tx_id)``; the label of transaction ``j`` (``tx_time + label delay``, from
    ``is_fraud`` when the table has it) is applied before transaction ``i`` when its label
    time is ``<= tx_time[i]``, as ``pipelines.fraud.produce.encoded_rows`` publishes them.
    """
    order, all_ms, has_labels = _stream_columns(table)
    n = len(order)
    width = 4 * len(config.windows_days)  # customer and terminal: [nb, mean or risk] each

    def column(name: str) -> list[int]:
        values: list[int] = table.column(name).to_numpy()[order].tolist()
        return values

    ids, customer_ids, terminal_ids = column("tx_id"), column("customer_id"), column("terminal_id")
    frauds = column("is_fraud") if has_labels else [0] * n
    amounts: list[float] = table.column("amount").to_numpy()[order].astype(np.float64).tolist()
    times: list[int] = all_ms[order].tolist()
    delay = config.label_delay_ms
    customers: dict[int, CustomerWindow] = {}
    terminals: dict[int, TerminalWindow] = {}
    windowed = array("d")
    labelled = 0
    for i in range(n):
        now = times[i]
        while has_labels and labelled < i and times[labelled] + delay <= now:
            j = labelled
            terminal_of_j = terminals[terminal_ids[j]]
            terminal_of_j.add_label(ids[j], times[j], times[j] + delay, bool(frauds[j]), config)
            labelled += 1
        customer = customers.get(customer_ids[i])
        if customer is None:
            customer = customers[customer_ids[i]] = CustomerWindow()
        terminal = terminals.get(terminal_ids[i])
        if terminal is None:
            terminal = terminals[terminal_ids[i]] = TerminalWindow()
        by_customer = customer.add(now, amounts[i], config)
        by_terminal = terminal.add_transaction(ids[i], now, config)
        if isinstance(by_customer, Late) or isinstance(by_terminal, Late):
            raise AssertionError("a time-sorted replay cannot be late")  # pragma: no cover
        windowed.extend(by_customer)
        windowed.extend(by_terminal)
    out = np.empty((n, 3 + width), dtype=np.float64)
    out[order, 0] = np.asarray(amounts, dtype=np.float64)
    weekend, night = _flags(all_ms)
    out[:, 1], out[:, 2] = weekend, night
    out[order, 3:] = np.frombuffer(windowed, dtype=np.float64).reshape(n, width)
    return out
