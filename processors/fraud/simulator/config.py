"""The parameters of one simulation run, and the codes and units of what it writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

__all__ = [
    "SCENARIO_AMOUNT",
    "SCENARIO_CUSTOMER",
    "SCENARIO_NONE",
    "SCENARIO_TERMINAL",
    "SECONDS_PER_DAY",
    "SimulationConfig",
]

SECONDS_PER_DAY = 86_400

SCENARIO_NONE = 0
SCENARIO_AMOUNT = 1
SCENARIO_TERMINAL = 2
SCENARIO_CUSTOMER = 3


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
