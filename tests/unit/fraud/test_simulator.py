"""Unit tests for the broker-free transaction simulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from processors.fraud.simulator import (
    SCENARIO_AMOUNT,
    SCENARIO_CUSTOMER,
    SCENARIO_NONE,
    SCENARIO_TERMINAL,
    SCHEMA,
    SECONDS_PER_DAY,
    SimulationConfig,
    SimulationInputs,
    expected_kept_fraction,
    profiles,
    read_table,
    simulate,
    simulation_inputs,
    terminals_within_radius,
    write_table,
)

SMALL = SimulationConfig(customers=300, terminals=600, days=40, seed=7)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """The simulated table for the small configuration."""
    return simulate(SMALL)


@pytest.fixture(scope="module")
def inputs() -> SimulationInputs:
    """Profiles and fraud schedule behind the small table."""
    return simulation_inputs(SMALL)


def col(table: pa.Table, name: str) -> npt.NDArray[np.generic]:
    """A column as a numpy array."""
    values: npt.NDArray[np.generic] = table.column(name).to_numpy()
    return values


def ints(table: pa.Table, name: str) -> npt.NDArray[np.int64]:
    """An integer column as int64."""
    return col(table, name).astype(np.int64)


def floats(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    """A float column as float64."""
    return col(table, name).astype(np.float64)


def test_schema_and_determinism(table: pa.Table) -> None:
    """Same config gives an identical table; a different seed gives a different one."""
    assert table.schema.equals(SCHEMA)
    assert table.num_rows > 10_000
    assert simulate(SMALL).equals(table)
    other = simulate(SimulationConfig(customers=300, terminals=600, days=40, seed=8))
    assert not other.equals(table)
    shortest = min(other.num_rows, table.num_rows)
    assert not np.array_equal(
        floats(other, "amount")[:shortest], floats(table, "amount")[:shortest]
    )


def test_ids_and_time_columns_consistent(table: pa.Table) -> None:
    """tx_id enumerates rows in time order and all time columns agree."""
    seconds = ints(table, "tx_time_seconds")
    np.testing.assert_array_equal(ints(table, "tx_id"), np.arange(table.num_rows))
    assert np.all(np.diff(seconds) >= 0)
    np.testing.assert_array_equal(ints(table, "tx_time_days"), seconds // SECONDS_PER_DAY)
    start_ms = int(datetime(2018, 4, 1, tzinfo=UTC).timestamp()) * 1000
    tx_ms = table.column("tx_time").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(tx_ms, start_ms + seconds * 1000)
    days = ints(table, "tx_time_days")
    assert days.min() == 0
    assert days.max() == SMALL.days - 1


def test_times_strictly_inside_the_day(table: pa.Table) -> None:
    """Time of day is an integer with 0 < t < 86400 and spread around noon."""
    time_of_day = ints(table, "tx_time_seconds") % SECONDS_PER_DAY
    assert time_of_day.min() > 0
    assert abs(float(np.mean(time_of_day)) - SECONDS_PER_DAY / 2) < 1_000
    assert 17_000 < float(np.std(time_of_day)) < 20_000


def test_amounts_non_negative_and_in_cents(table: pa.Table) -> None:
    """Amounts are >= 0 with at most two decimals."""
    amount = floats(table, "amount")
    assert amount.min() >= 0
    cents = amount * 100
    assert np.max(np.abs(cents - np.round(cents))) < 1e-6


def test_reach_matches_brute_force(
    inputs: SimulationInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked reach equals an unchunked distance test, whatever the chunk size."""
    customers, terminals = inputs.customers, inputs.terminals
    distance = np.hypot(customers.x[:, None] - terminals.x, customers.y[:, None] - terminals.y)
    inside = distance < SMALL.radius
    monkeypatch.setattr(profiles, "_DISTANCE_CHUNK_CELLS", 1_000)
    reach = terminals_within_radius(customers, terminals, SMALL.radius)
    np.testing.assert_array_equal(reach.counts(), inside.sum(axis=1))
    for customer in (0, 17, 299):
        np.testing.assert_array_equal(reach.of(customer), np.flatnonzero(inside[customer]))


def test_customers_use_only_terminals_within_radius(
    table: pa.Table, inputs: SimulationInputs
) -> None:
    """Every transaction's terminal is closer than the radius; unreachable customers are idle."""
    customers, terminals = inputs.customers, inputs.terminals
    customer, terminal = ints(table, "customer_id"), ints(table, "terminal_id")
    distance = np.hypot(
        customers.x[customer] - terminals.x[terminal], customers.y[customer] - terminals.y[terminal]
    )
    assert distance.max() < SMALL.radius
    all_distances = np.hypot(customers.x[:, None] - terminals.x, customers.y[:, None] - terminals.y)
    isolated = np.flatnonzero((all_distances < SMALL.radius).sum(axis=1) == 0)
    assert isolated.size > 0, "small config should leave a few customers without terminals"
    assert not np.isin(customer, isolated).any()


def test_terminal_choice_uniform_within_reach(table: pa.Table, inputs: SimulationInputs) -> None:
    """The terminal's rank among a customer's reachable terminals is uniform."""
    customers, terminals = inputs.customers, inputs.terminals
    inside = (
        np.hypot(customers.x[:, None] - terminals.x, customers.y[:, None] - terminals.y)
        < SMALL.radius
    )
    customer, terminal = ints(table, "customer_id"), ints(table, "terminal_id")
    below: npt.NDArray[np.int64] = np.cumsum(inside, axis=1) - inside
    rank = below[customer, terminal].astype(np.float64)
    reachable = inside.sum(axis=1)[customer].astype(np.float64)
    many = reachable >= 2
    spread = np.sqrt((reachable[many] ** 2 - 1) / 12)
    z = (rank[many] - (reachable[many] - 1) / 2) / spread
    assert abs(float(z.mean())) < 0.05
    assert abs(float(np.mean(z**2)) - 1) < 0.05


def test_daily_counts_follow_poisson(table: pa.Table, inputs: SimulationInputs) -> None:
    """Per customer-day counts match Poisson(mean * kept fraction) in total and dispersion."""
    active = inputs.reach.counts() > 0
    rate = inputs.customers.mean_tx_per_day * expected_kept_fraction()
    cell = ints(table, "tx_time_days") * SMALL.customers + ints(table, "customer_id")
    counts = np.bincount(cell, minlength=SMALL.days * SMALL.customers)
    counts = counts.reshape(SMALL.days, SMALL.customers)[:, active]
    expected = rate[active]
    total_expected = float(expected.sum()) * SMALL.days
    assert abs(counts.sum() - total_expected) < 4 * np.sqrt(total_expected)
    dispersion = float(((counts - expected) ** 2).sum()) / total_expected
    assert 0.9 < dispersion < 1.1
    per_customer = counts.mean(axis=0)
    assert np.corrcoef(per_customer, expected)[0, 1] > 0.95


def test_amount_fraud_and_labels(table: pa.Table) -> None:
    """Every amount above the threshold is fraud, and labels agree with scenarios."""
    amount = floats(table, "amount")
    is_fraud, scenario = ints(table, "is_fraud"), ints(table, "scenario")
    assert np.all(is_fraud[amount > SMALL.fraud_amount_threshold] == 1)
    np.testing.assert_array_equal(is_fraud == 1, scenario != SCENARIO_NONE)
    assert set(np.unique(scenario)) == {
        SCENARIO_NONE,
        SCENARIO_AMOUNT,
        SCENARIO_TERMINAL,
        SCENARIO_CUSTOMER,
    }
    scenario_one = scenario == SCENARIO_AMOUNT
    assert np.all(amount[scenario_one] > SMALL.fraud_amount_threshold)


def compromised_within(
    schedule: npt.NDArray[np.int64],
    days: npt.NDArray[np.int64],
    ids: npt.NDArray[np.int64],
    span: int,
) -> npt.NDArray[np.bool_]:
    """Whether each (day, id) pair had the id compromised in the last ``span`` days."""
    hit = np.zeros(days.shape[0], dtype=bool)
    for start, compromised in enumerate(schedule):
        in_window = (days >= start) & (days < start + span)
        hit |= in_window & np.isin(ids, compromised)
    return hit


def test_terminal_fraud_window(table: pa.Table, inputs: SimulationInputs) -> None:
    """Scenario 2 hits exactly the terminals compromised in the last 28 days."""
    days, terminal = ints(table, "tx_time_days"), ints(table, "terminal_id")
    scenario = ints(table, "scenario")
    hit = compromised_within(
        inputs.schedule.terminals, days, terminal, SMALL.terminal_compromise_days
    )
    assert hit.sum() > 100
    assert np.all(hit[scenario == SCENARIO_TERMINAL])
    assert np.all(np.isin(scenario[hit], [SCENARIO_TERMINAL, SCENARIO_CUSTOMER]))


def isolated_days(schedule: npt.NDArray[np.int64], span: int) -> list[int]:
    """Days whose compromised customers are compromised on no other day within ``span``."""
    isolated = []
    for day, customers in enumerate(schedule):
        lo, hi = max(0, day - span + 1), min(len(schedule), day + span)
        others = np.delete(np.arange(lo, hi), day - lo)
        if not np.isin(customers, schedule[others]).any():
            isolated.append(day)
    return isolated


def test_customer_fraud_takes_a_third_of_window(table: pa.Table, inputs: SimulationInputs) -> None:
    """Scenario 3 labels n // 3 of the pooled window rows on days with no overlapping compromise."""
    days, customer = ints(table, "tx_time_days"), ints(table, "customer_id")
    scenario = ints(table, "scenario")
    span = SMALL.customer_compromise_days
    hit = compromised_within(inputs.schedule.customers, days, customer, span)
    assert np.all(hit[scenario == SCENARIO_CUSTOMER])
    checked = 0
    for day in isolated_days(inputs.schedule.customers, span):
        window = (days >= day) & (days < day + span)
        pooled = window & np.isin(customer, inputs.schedule.customers[day])
        assert (scenario[pooled] == SCENARIO_CUSTOMER).sum() == pooled.sum() // 3
        checked += 1
    assert checked >= 5


def test_customer_fraud_amounts_are_five_fold(table: pa.Table, inputs: SimulationInputs) -> None:
    """Scenario 3 amounts are multiples of 5 cents around five times the customer's mean."""
    scenario = ints(table, "scenario")
    rows = scenario == SCENARIO_CUSTOMER
    amount = floats(table, "amount")[rows]
    cents = np.round(amount * 100).astype(np.int64)
    assert np.all(cents % 5 == 0)
    mean = inputs.customers.mean_amount[ints(table, "customer_id")[rows]]
    assert 0.8 < float(np.median(amount / (5 * mean))) < 1.2
    genuine = floats(table, "amount")[scenario == SCENARIO_NONE]
    assert np.median(amount) > 3 * np.median(genuine)


def test_fraud_rate_plausible_for_mid_size_run() -> None:
    """Handbook-sized populations over 40 days give a fraud rate between 0.3 % and 2 %."""
    mid = simulate(SimulationConfig(days=40, seed=3))
    rate = float(np.mean(ints(mid, "is_fraud")))
    assert 0.003 < rate < 0.02
    per_day = mid.num_rows / 40
    assert 9_000 < per_day < 10_500


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(table: pa.Table, tmp_path: Path, suffix: str) -> None:
    """Parquet and CSV files read back to an equal table."""
    path = tmp_path / f"transactions{suffix}"
    write_table(table, path)
    back = read_table(path)
    assert back.schema.equals(SCHEMA, check_metadata=False)
    assert back.equals(table)


def test_unknown_suffix_rejected(table: pa.Table, tmp_path: Path) -> None:
    """Only .parquet and .csv are accepted."""
    with pytest.raises(ValueError, match="suffix"):
        write_table(table, tmp_path / "transactions.json")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: replace(SMALL, customers=0), "must be positive"),
        (lambda: replace(SMALL, radius=0.0), "radius"),
        (lambda: replace(SMALL, compromised_terminals_per_day=601), "compromised_terminals"),
        (lambda: replace(SMALL, customer_compromise_days=0), "durations"),
    ],
)
def test_invalid_config_rejected(make: Callable[[], SimulationConfig], message: str) -> None:
    """Impossible configurations fail fast."""
    with pytest.raises(ValueError, match=message):
        make()
