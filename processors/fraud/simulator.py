"""Synthetic payment-card transaction generator (Fraud Detection Handbook model).

Implements the transaction simulator described in the Reproducible Machine Learning for
Credit Card Fraud Detection handbook (Le Borgne et al., ULB) as vectorised numpy code, so the
pipeline can be fed and tested without a broker.  The module is pure: it imports only numpy,
pyarrow and the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

__all__ = [
    "SCENARIO_AMOUNT",
    "SCENARIO_CUSTOMER",
    "SCENARIO_NONE",
    "SCENARIO_TERMINAL",
    "SCHEMA",
    "SECONDS_PER_DAY",
    "CustomerProfiles",
    "FraudSchedule",
    "SimulationConfig",
    "SimulationInputs",
    "TerminalProfiles",
    "TerminalReach",
    "customer_profiles",
    "expected_kept_fraction",
    "fraud_schedule",
    "read_table",
    "simulate",
    "simulation_inputs",
    "terminal_profiles",
    "terminals_within_radius",
    "write_table",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY = 86_400
_TIME_MEAN_S = SECONDS_PER_DAY / 2
_TIME_STD_S = 20_000.0
_COMPROMISED_AMOUNT_FACTOR = 5.0
_GRID_SIZE = 100.0
_DISTANCE_CHUNK_CELLS = 4_000_000

SCENARIO_NONE = 0
SCENARIO_AMOUNT = 1
SCENARIO_TERMINAL = 2
SCENARIO_CUSTOMER = 3

_FIELDS: list[pa.Field[Any]] = [
    pa.field("tx_id", pa.int64(), nullable=False),
    pa.field("tx_time", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("customer_id", pa.int64(), nullable=False),
    pa.field("terminal_id", pa.int64(), nullable=False),
    pa.field("amount", pa.float64(), nullable=False),
    pa.field("is_fraud", pa.int8(), nullable=False),
    pa.field("scenario", pa.int8(), nullable=False),
    pa.field("tx_time_seconds", pa.int64(), nullable=False),
    pa.field("tx_time_days", pa.int64(), nullable=False),
]
SCHEMA = pa.schema(_FIELDS)


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of one simulation run; defaults reproduce the handbook data set."""

    customers: int = 5000
    terminals: int = 10000
    days: int = 183
    start_date: date = date(2018, 4, 1)
    seed: int = 0
    radius: float = 5.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    fraud_amount_threshold: float = 220.0

    def __post_init__(self) -> None:
        """Reject configurations the generator cannot honour."""
        if self.customers < 1 or self.terminals < 1 or self.days < 1:
            raise ValueError("customers, terminals and days must be positive")
        if self.radius <= 0:
            raise ValueError("radius must be positive")
        if not 0 <= self.compromised_terminals_per_day <= self.terminals:
            raise ValueError("compromised_terminals_per_day must be in [0, terminals]")
        if not 0 <= self.compromised_customers_per_day <= self.customers:
            raise ValueError("compromised_customers_per_day must be in [0, customers]")
        if self.terminal_compromise_days < 1 or self.customer_compromise_days < 1:
            raise ValueError("compromise durations must be at least one day")


@dataclass(frozen=True)
class CustomerProfiles:
    """Per-customer location, spending and activity parameters (index = customer id)."""

    x: FloatArray
    y: FloatArray
    mean_amount: FloatArray
    std_amount: FloatArray
    mean_tx_per_day: FloatArray


@dataclass(frozen=True)
class TerminalProfiles:
    """Per-terminal location (index = terminal id)."""

    x: FloatArray
    y: FloatArray


@dataclass(frozen=True)
class TerminalReach:
    """Terminals within reach of each customer, in CSR layout.

    Customer ``c`` may use ``indices[indptr[c]:indptr[c + 1]]`` (sorted terminal ids).
    """

    indptr: IntArray
    indices: IntArray

    def counts(self) -> IntArray:
        """Number of reachable terminals per customer."""
        return np.diff(self.indptr)

    def of(self, customer: int) -> IntArray:
        """Reachable terminal ids of one customer."""
        return self.indices[self.indptr[customer] : self.indptr[customer + 1]]


@dataclass(frozen=True)
class FraudSchedule:
    """Which terminals and customers get compromised on each day (row = day index)."""

    terminals: IntArray
    customers: IntArray


@dataclass(frozen=True)
class SimulationInputs:
    """Everything random that is drawn before transactions, exposed for inspection."""

    customers: CustomerProfiles
    terminals: TerminalProfiles
    reach: TerminalReach
    schedule: FraudSchedule


@dataclass(frozen=True)
class _Streams:
    """Independent random streams, one per concern, so parts do not perturb each other."""

    customers: np.random.Generator
    terminals: np.random.Generator
    transactions: np.random.Generator
    schedule: np.random.Generator
    customer_fraud: np.random.Generator


@dataclass
class _Transactions:
    """Column arrays of the transactions while they are being built and labelled."""

    seconds: IntArray
    customer: IntArray
    terminal: IntArray
    amount: FloatArray
    is_fraud: npt.NDArray[np.int8]
    scenario: npt.NDArray[np.int8]


def _streams(seed: int) -> _Streams:
    """Derive the per-concern generators from ``numpy.random.default_rng(seed)``."""
    children = np.random.default_rng(seed).spawn(5)
    return _Streams(*children)


def customer_profiles(config: SimulationConfig, rng: np.random.Generator) -> CustomerProfiles:
    """Draw customer locations, amount mean/std and mean transactions per day."""
    n = config.customers
    x = rng.uniform(0.0, _GRID_SIZE, n)
    y = rng.uniform(0.0, _GRID_SIZE, n)
    mean_amount = rng.uniform(5.0, 100.0, n)
    mean_tx_per_day = rng.uniform(0.0, 4.0, n)
    return CustomerProfiles(x, y, mean_amount, mean_amount / 2.0, mean_tx_per_day)


def terminal_profiles(config: SimulationConfig, rng: np.random.Generator) -> TerminalProfiles:
    """Draw terminal locations uniformly on the grid."""
    n = config.terminals
    return TerminalProfiles(rng.uniform(0.0, _GRID_SIZE, n), rng.uniform(0.0, _GRID_SIZE, n))


def terminals_within_radius(
    customers: CustomerProfiles, terminals: TerminalProfiles, radius: float
) -> TerminalReach:
    """Find terminals at Euclidean distance < radius, in customer chunks to bound memory."""
    n_customers = customers.x.shape[0]
    chunk = max(1, _DISTANCE_CHUNK_CELLS // max(1, terminals.x.shape[0]))
    counts: list[IntArray] = []
    indices: list[IntArray] = []
    for start in range(0, n_customers, chunk):
        stop = min(start + chunk, n_customers)
        dx = customers.x[start:stop, None] - terminals.x[None, :]
        dy = customers.y[start:stop, None] - terminals.y[None, :]
        inside = np.sqrt(dx * dx + dy * dy) < radius
        counts.append(inside.sum(axis=1).astype(np.int64))
        indices.append(np.nonzero(inside)[1].astype(np.int64))
    indptr = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    return TerminalReach(indptr, np.concatenate(indices))


def _sample_per_day(rng: np.random.Generator, days: int, population: int, k: int) -> IntArray:
    """Draw ``k`` distinct ids out of ``population`` for every day."""
    rows = [rng.choice(population, size=k, replace=False) for _ in range(days)]
    return np.asarray(rows, dtype=np.int64).reshape(days, k)


def fraud_schedule(config: SimulationConfig, rng: np.random.Generator) -> FraudSchedule:
    """Pick the compromised terminals and customers of every day."""
    terminals = _sample_per_day(
        rng, config.days, config.terminals, config.compromised_terminals_per_day
    )
    customers = _sample_per_day(
        rng, config.days, config.customers, config.compromised_customers_per_day
    )
    return FraudSchedule(terminals, customers)


def simulation_inputs(config: SimulationConfig) -> SimulationInputs:
    """Draw the profiles and fraud schedule exactly as :func:`simulate` does."""
    return _inputs(config, _streams(config.seed))


def _inputs(config: SimulationConfig, streams: _Streams) -> SimulationInputs:
    """Draw profiles, reachability and schedule from the given streams."""
    customers = customer_profiles(config, streams.customers)
    terminals = terminal_profiles(config, streams.terminals)
    reach = terminals_within_radius(customers, terminals, config.radius)
    schedule = fraud_schedule(config, streams.schedule)
    return SimulationInputs(customers, terminals, reach, schedule)


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
    streams = _streams(config.seed)
    inputs = _inputs(config, streams)
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


def _format(path: Path) -> str:
    """Storage format chosen by file suffix."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"unsupported table file suffix {path.suffix!r}; use .parquet or .csv")


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write ``table`` as Parquet or CSV depending on the suffix of ``path``."""
    target = Path(path)
    if _format(target) == "parquet":
        pq.write_table(table, target)
    else:
        pa_csv.write_csv(table, target)


def read_table(path: str | Path) -> pa.Table:
    """Read a table written by :func:`write_table`, restoring the :data:`SCHEMA` types."""
    source = Path(path)
    if _format(source) == "parquet":
        return pq.read_table(source)
    options = pa_csv.ConvertOptions(column_types={field.name: field.type for field in SCHEMA})
    return pa_csv.read_csv(source, convert_options=options).select(SCHEMA.names).cast(SCHEMA)
