"""Transactions from the drawn profiles, then the three fraud scenarios, as one Arrow table
sorted by time (:func:`simulate`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from processors.fraud.simulator.config import (
    SCENARIO_AMOUNT,
    SCENARIO_CUSTOMER,
    SCENARIO_TERMINAL,
    SECONDS_PER_DAY,
    SimulationConfig,
)
from processors.fraud.simulator.profiles import (
    CustomerProfiles,
    FloatArray,
    FraudSchedule,
    IntArray,
    SimulationInputs,
    TerminalReach,
    draw_inputs,
    random_streams,
)
from processors.fraud.simulator.tables import SCHEMA

__all__ = ["expected_kept_fraction", "simulate"]

_TIME_MEAN_S = SECONDS_PER_DAY / 2
_TIME_STD_S = 20_000.0
_COMPROMISED_AMOUNT_FACTOR = 5.0


@dataclass
class _Transactions:
    """Column arrays of the transactions while they are being built and labelled."""

    seconds: IntArray
    customer: IntArray
    terminal: IntArray
    amount: FloatArray
    is_fraud: npt.NDArray[np.int8]
    scenario: npt.NDArray[np.int8]


def _daily_counts(
    config: SimulationConfig, inputs: SimulationInputs, rng: np.random.Generator
) -> IntArray:
    """Poisson transaction counts per (day, customer); zero for customers with no terminal."""
    lam = inputs.customers.mean_tx_per_day
    counts = rng.poisson(lam[None, :], size=(config.days, lam.shape[0])).astype(np.int64)
    counts[:, inputs.reach.counts() == 0] = 0
    return counts


def _draw_amounts(
    customers: CustomerProfiles, customer: IntArray, rng: np.random.Generator
) -> FloatArray:
    """Normal amounts around the customer's mean; negatives redrawn once from U(0, 2*mean)."""
    mean = customers.mean_amount[customer]
    amount = rng.normal(mean, customers.std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2.0 * mean[negative])
    return np.round(amount, 2)


def _draw_terminals(reach: TerminalReach, customer: IntArray, rng: np.random.Generator) -> IntArray:
    """Choose a terminal uniformly among each customer's reachable terminals."""
    offset: IntArray = rng.integers(0, reach.counts()[customer], dtype=np.int64)
    chosen: IntArray = reach.indices[reach.indptr[customer] + offset]
    return chosen


def _generate(
    config: SimulationConfig, inputs: SimulationInputs, rng: np.random.Generator
) -> _Transactions:
    """Generate genuine transactions sorted by time, dropping times outside the day."""
    counts = _daily_counts(config, inputs, rng)
    cell = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    day, customer = np.divmod(cell, config.customers)
    del cell
    size = (int(customer.shape[0]),)
    time_of_day = rng.normal(_TIME_MEAN_S, _TIME_STD_S, size).astype(np.int64)
    amount = _draw_amounts(inputs.customers, customer, rng)
    terminal = _draw_terminals(inputs.reach, customer, rng)
    keep = (time_of_day > 0) & (time_of_day < SECONDS_PER_DAY)
    seconds = day[keep] * SECONDS_PER_DAY + time_of_day[keep]
    order = np.argsort(seconds, kind="stable")
    n = order.shape[0]
    return _Transactions(
        seconds=seconds[order],
        customer=customer[keep][order],
        terminal=terminal[keep][order],
        amount=amount[keep][order],
        is_fraud=np.zeros(n, dtype=np.int8),
        scenario=np.zeros(n, dtype=np.int8),
    )


def _mark(tx: _Transactions, rows: npt.NDArray[np.bool_] | IntArray, scenario: int) -> None:
    """Flag the given rows as fraud produced by ``scenario`` (later scenarios overwrite)."""
    tx.is_fraud[rows] = 1
    tx.scenario[rows] = scenario


def _apply_amount_fraud(tx: _Transactions, threshold: float) -> None:
    """Scenario 1: every amount above the threshold is fraud."""
    _mark(tx, tx.amount > threshold, SCENARIO_AMOUNT)


def _active_window(compromised: IntArray, days: int, population: int, duration: int) -> IntArray:
    """Per (day, id) count of compromises made within the last ``duration`` days."""
    started = np.zeros((days, population), dtype=np.int32)
    for day, ids in enumerate(compromised):
        started[day, ids] += 1
    running = np.cumsum(started, axis=0, dtype=np.int32)
    active = running.copy()
    active[duration:] -= running[:-duration]
    return active.astype(np.int64)


def _apply_terminal_fraud(
    tx: _Transactions, config: SimulationConfig, schedule: FraudSchedule
) -> None:
    """Scenario 2: transactions on a terminal compromised in days d..d+duration-1 are fraud."""
    active = _active_window(
        schedule.terminals, config.days, config.terminals, config.terminal_compromise_days
    )
    day = tx.seconds // SECONDS_PER_DAY
    _mark(tx, active[day, tx.terminal] > 0, SCENARIO_TERMINAL)


def _customer_rows(tx: _Transactions, customers: int) -> tuple[IntArray, IntArray]:
    """Row numbers grouped by customer (time order kept) and each customer's group start."""
    by_customer = np.argsort(tx.customer, kind="stable").astype(np.int64)
    starts = np.searchsorted(tx.customer[by_customer], np.arange(customers + 1)).astype(np.int64)
    return by_customer, starts


def _apply_customer_fraud(
    tx: _Transactions,
    config: SimulationConfig,
    schedule: FraudSchedule,
    rng: np.random.Generator,
) -> None:
    """Scenario 3: a third of compromised customers' next-days rows get amount x5 and fraud."""
    by_customer, starts = _customer_rows(tx, config.customers)
    day_of_row = tx.seconds // SECONDS_PER_DAY
    for day, customers in enumerate(schedule.customers):
        windows = []
        for customer in customers:
            rows = by_customer[starts[customer] : starts[customer + 1]]
            lo, hi = np.searchsorted(day_of_row[rows], [day, day + config.customer_compromise_days])
            windows.append(rows[lo:hi])
        pooled = np.concatenate(windows) if windows else np.zeros(0, dtype=np.int64)
        chosen = rng.choice(pooled, size=pooled.shape[0] // 3, replace=False)
        tx.amount[chosen] = np.round(tx.amount[chosen] * _COMPROMISED_AMOUNT_FACTOR, 2)
        _mark(tx, chosen, SCENARIO_CUSTOMER)


def _epoch_ms(start: date) -> int:
    """Milliseconds since the Unix epoch of ``start`` at midnight UTC."""
    return int(datetime.combine(start, time(), tzinfo=UTC).timestamp()) * 1000


def _to_table(tx: _Transactions, start: date) -> pa.Table:
    """Assemble the output Arrow table in :data:`SCHEMA` layout."""
    n = tx.seconds.shape[0]
    columns: list[pa.Array[Any]] = [
        pa.array(np.arange(n, dtype=np.int64)),
        pa.array(tx.seconds * 1000 + _epoch_ms(start), type=pa.timestamp("ms", tz="UTC")),
        pa.array(tx.customer),
        pa.array(tx.terminal),
        pa.array(tx.amount),
        pa.array(tx.is_fraud),
        pa.array(tx.scenario),
        pa.array(tx.seconds),
        pa.array(tx.seconds // SECONDS_PER_DAY),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def simulate(config: SimulationConfig) -> pa.Table:
    """Generate the labelled transaction table, sorted by time; deterministic per seed."""
    streams = random_streams(config.seed)
    inputs = draw_inputs(config, streams)
    tx = _generate(config, inputs, streams.transactions)
    _apply_amount_fraud(tx, config.fraud_amount_threshold)
    _apply_terminal_fraud(tx, config, inputs.schedule)
    _apply_customer_fraud(tx, config, inputs.schedule, streams.customer_fraud)
    return _to_table(tx, config.start_date)


def expected_kept_fraction() -> float:
    """Probability that a drawn time of day survives the 0 < t < 86400 filter."""

    def cdf(value: float) -> float:
        return 0.5 * (1.0 + math.erf((value - _TIME_MEAN_S) / (_TIME_STD_S * math.sqrt(2.0))))

    # int() truncates toward zero, so t is kept iff 1 <= draw < 86400.
    return cdf(float(SECONDS_PER_DAY)) - cdf(1.0)
