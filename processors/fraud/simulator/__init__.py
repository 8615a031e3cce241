"""Synthetic payment-card transaction generator (Fraud Detection Handbook model).

Implements the transaction simulator described in the Reproducible Machine Learning for
Credit Card Fraud Detection handbook (Le Borgne et al., ULB) as vectorised numpy code, so the
pipeline can be fed and tested without a broker.  The module is pure: it imports only numpy,
pyarrow and the standard library.

The package: :mod:`~processors.fraud.simulator.config` (the run's parameters, the scenario
codes), :mod:`~processors.fraud.simulator.profiles` (customers, terminals, reach and the
fraud schedule, drawn before any transaction), :mod:`~processors.fraud.simulator.generate`
(transactions and the three fraud scenarios) and :mod:`~processors.fraud.simulator.tables`
(the Arrow schema, Parquet and CSV files).
"""

from __future__ import annotations

from processors.fraud.simulator.config import (
    SCENARIO_AMOUNT,
    SCENARIO_CUSTOMER,
    SCENARIO_NONE,
    SCENARIO_TERMINAL,
    SECONDS_PER_DAY,
    SimulationConfig,
)
from processors.fraud.simulator.generate import expected_kept_fraction, simulate
from processors.fraud.simulator.profiles import (
    CustomerProfiles,
    FraudSchedule,
    SimulationInputs,
    TerminalProfiles,
    TerminalReach,
    customer_profiles,
    fraud_schedule,
    simulation_inputs,
    terminal_profiles,
    terminals_within_radius,
)
from processors.fraud.simulator.tables import SCHEMA, read_table, write_table

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
