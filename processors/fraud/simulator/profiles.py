"""What a simulation draws before any transaction: customers (where they are, how much and
how often they spend), terminals, which terminals each customer can reach, and which
terminals and customers get compromised on which day."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processors.fraud.simulator.config import SimulationConfig

__all__ = [
    "CustomerProfiles",
    "FloatArray",
    "FraudSchedule",
    "IntArray",
    "SimulationInputs",
    "Streams",
    "TerminalProfiles",
    "TerminalReach",
    "customer_profiles",
    "draw_inputs",
    "fraud_schedule",
    "random_streams",
    "simulation_inputs",
    "terminal_profiles",
    "terminals_within_radius",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_GRID_SIZE = 100.0
_DISTANCE_CHUNK_CELLS = 4_000_000


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
class Streams:
    """Independent random streams, one per concern, so parts do not perturb each other."""

    customers: np.random.Generator
    terminals: np.random.Generator
    transactions: np.random.Generator
    schedule: np.random.Generator
    customer_fraud: np.random.Generator


def random_streams(seed: int) -> Streams:
    """Derive the per-concern generators from ``numpy.random.default_rng(seed)``."""
    children = np.random.default_rng(seed).spawn(5)
    return Streams(*children)


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
    return draw_inputs(config, random_streams(config.seed))


def draw_inputs(config: SimulationConfig, streams: Streams) -> SimulationInputs:
    """Draw profiles, reachability and schedule from the given streams."""
    customers = customer_profiles(config, streams.customers)
    terminals = terminal_profiles(config, streams.terminals)
    reach = terminals_within_radius(customers, terminals, config.radius)
    schedule = fraud_schedule(config, streams.schedule)
    return SimulationInputs(customers, terminals, reach, schedule)
