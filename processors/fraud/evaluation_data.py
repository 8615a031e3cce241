"""The data of ``streamwise evaluate transactions``: which simulation, which weeks, which rows.

A :class:`EvalSetup` names a simulation and a handbook-style protocol (training week, label
delay, test week). ``handbook`` is the Fraud Detection Handbook's: its data set (5,000
customers, 10,000 terminals, 183 days from 2018-04-01), trained on the 7 days from
2018-07-25, tested on the 7 days from 2018-08-08. ``validation`` is the same one week earlier
(test week 2018-08-01), for choosing settings without looking at the test week. ``short`` is
a small seeded simulation whose test week is its last, for tests and quick looks.

:func:`replay_table` simulates, keeps the rows up to the end of the test week, and computes
their features with :func:`processors.fraud.features.replay_features`: the streaming windows
the workers run, in the producer's order.

>>> setup = eval_setup("short")
>>> str(setup.protocol.train_start), str(setup.protocol.test_start), setup.simulation.days
('2018-04-22', '2018-05-06', 42)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from models.fraud_train import Protocol
from processors.fraud.features import FeatureConfig, replay_features
from processors.fraud.simulator import SimulationConfig, simulate

__all__ = ["PROTOCOLS", "EvalSetup", "ReplayTable", "eval_setup", "replay_table"]

PROTOCOLS = ("handbook", "validation", "short")
_SHORT = SimulationConfig(customers=1000, terminals=2000, days=42)


@dataclass(frozen=True)
class EvalSetup:
    """A named simulation and the protocol whose test week is evaluated."""

    name: str
    simulation: SimulationConfig
    protocol: Protocol

    @property
    def test_end(self) -> date:
        return self.protocol.test_start + timedelta(days=self.protocol.test_days)


def eval_setup(
    name: str,
    seed: int | None = None,
    customers: int | None = None,
    terminals: int | None = None,
    days: int | None = None,
) -> EvalSetup:
    """The setup ``name`` (one of :data:`PROTOCOLS`), with simulation overrides.

    ``handbook`` and ``validation`` keep the handbook's dates, so ``days`` must still reach
    their test week; ``short`` puts its test week at the end of the simulation.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; one of {', '.join(PROTOCOLS)}")
    base = _SHORT if name == "short" else SimulationConfig()
    simulation = replace(
        base,
        seed=base.seed if seed is None else seed,
        customers=customers or base.customers,
        terminals=terminals or base.terminals,
        days=days or base.days,
    )
    if name == "handbook":
        protocol = Protocol()
    elif name == "validation":
        protocol = Protocol(train_start=Protocol().train_start - timedelta(days=7))
    else:
        span = Protocol().train_days + Protocol().delay_days + Protocol().test_days
        start = simulation.start_date + timedelta(days=simulation.days - span)
        protocol = Protocol(train_start=start)
    setup = EvalSetup(name, simulation, protocol)
    last = simulation.start_date + timedelta(days=simulation.days)
    if setup.test_end > last or protocol.train_start < simulation.start_date:
        raise ValueError(
            f"protocol {name!r} needs data from {protocol.train_start} to {setup.test_end}; "
            f"the simulation covers {simulation.start_date} to {last}"
        )
    return setup


@dataclass(frozen=True)
class ReplayTable:
    """The simulated rows up to the end of the test week and their streaming features."""

    table: pa.Table
    features: npt.NDArray[np.float64]
    times_ms: npt.NDArray[np.int64]


def replay_table(setup: EvalSetup, features: FeatureConfig) -> ReplayTable:
    """Simulate ``setup``, drop the rows after its test week, replay the features."""
    if features.label_delay_ms != setup.protocol.delay_days * 86_400_000:
        raise ValueError("the protocol's delay gap must equal the features' label delay")
    table = simulate(setup.simulation)
    end = datetime.combine(setup.test_end, datetime.min.time(), UTC)
    times = table.column("tx_time")
    table = table.filter(pc.less(times, pa.scalar(end, times.type)))
    x = replay_features(table, features)
    tx_ms = table.column("tx_time").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    return ReplayTable(table, x, tx_ms.to_numpy().astype(np.int64))
