"""Unit tests for the handbook features: window edges, labels, lateness, duplicates, state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from processors.fraud.features import (
    DEFAULT_CONFIG,
    FEATURE_NAMES,
    CustomerWindow,
    FeatureConfig,
    Late,
    TerminalWindow,
    feature_names,
    feature_row,
    replay_features,
    transaction_flags,
)
from processors.fraud.simulator import SimulationConfig, simulate
from processors.fraud.terminal import TerminalState
from processors.fraud.windows import DAY_MS
from tests.unit.fraud.fraud_reference import reference_features

CONFIG = FeatureConfig()
HOUR = 3_600_000
DELAY = CONFIG.label_delay_ms
GRACE = CONFIG.grace_ms
WINDOWS = list(enumerate(CONFIG.windows_days))  # (position in the feature list, days)


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO time written with a ``Z``."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


T0 = ms("2018-04-10T12:00:00Z")


def test_feature_names_are_the_handbook_columns_in_order() -> None:
    windows = [
        f"{entity}_ID_{kind}_{days}DAY_WINDOW"
        for entity, kinds in (
            ("CUSTOMER", ("NB_TX", "AVG_AMOUNT")),
            ("TERMINAL", ("NB_TX", "RISK")),
        )
        for days in (1, 7, 30)
        for kind in kinds
    ]
    expected = ("TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT", *windows)
    assert expected == FEATURE_NAMES
    assert len(FEATURE_NAMES) == 15
    assert feature_names(FeatureConfig(windows_days=(2,)))[3:] == (
        "CUSTOMER_ID_NB_TX_2DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_2DAY_WINDOW",
        "TERMINAL_ID_NB_TX_2DAY_WINDOW",
        "TERMINAL_ID_RISK_2DAY_WINDOW",
    )


@pytest.mark.parametrize(
    ("when", "flags"),
    [
        ("2018-04-06T23:59:59.999Z", (0.0, 0.0)),  # Friday, late evening
        ("2018-04-07T00:00:00Z", (1.0, 1.0)),  # Saturday midnight
        ("2018-04-08T23:59:59.999Z", (1.0, 0.0)),  # Sunday
        ("2018-04-09T00:00:00Z", (0.0, 1.0)),  # Monday midnight
        ("2018-04-09T06:59:59.999Z", (0.0, 1.0)),  # hour 6 is night
        ("2018-04-09T07:00:00Z", (0.0, 0.0)),  # hour 7 is not
        ("1969-12-28T03:00:00Z", (1.0, 1.0)),  # a Sunday before the epoch
    ],
)
def test_transaction_flags(when: str, flags: tuple[float, float]) -> None:
    assert transaction_flags(ms(when)) == flags


def test_transaction_flags_agree_with_datetime() -> None:
    for t in range(ms("2018-03-30T00:00:00Z"), ms("2018-04-20T00:00:00Z"), 37 * 60_000 + 1):
        moment = datetime.fromtimestamp(t / 1000, UTC)
        assert transaction_flags(t) == (float(moment.weekday() >= 5), float(moment.hour <= 6))


def test_feature_row_concatenates_in_name_order() -> None:
    row = feature_row(5.0, T0, [1.0, 5.0] * 3, [0.0] * 6)
    assert len(row) == len(FEATURE_NAMES)
    assert row[:3] == [5.0, *transaction_flags(T0)]


# --- customer windows ---------------------------------------------------------------------


def test_first_payment_is_its_own_history() -> None:
    assert CustomerWindow().add(T0, 42.5, CONFIG) == [1.0, 42.5] * 3


@pytest.mark.parametrize(("position", "days"), WINDOWS)
@pytest.mark.parametrize(("offset", "inside"), [(0, False), (1, True), (-1, False)])
def test_customer_window_edge(position: int, days: int, offset: int, inside: bool) -> None:
    """A payment exactly ``w`` days older is out of the window (t - w, t]; 1 ms newer is in."""
    customer = CustomerWindow()
    customer.add(T0 - days * DAY_MS + offset, 10.0, CONFIG)
    features = customer.add(T0, 30.0, CONFIG)
    assert isinstance(features, list)
    expected = [2.0, 20.0] if inside else [1.0, 30.0]
    assert features[2 * position : 2 * position + 2] == expected
    if position + 1 < len(WINDOWS):  # the longer windows always hold it
        assert features[2 * position + 2 : 2 * position + 4] == [2.0, 20.0]


def test_customer_payments_at_the_same_time_count_in_arrival_order() -> None:
    customer = CustomerWindow()
    assert customer.add(T0, 10.0, CONFIG) == [1.0, 10.0] * 3
    assert customer.add(T0, 20.0, CONFIG) == [2.0, 15.0] * 3


def test_customer_mean_is_the_correctly_rounded_sum() -> None:
    customer = CustomerWindow()
    for i, amount in enumerate([0.1, 0.2, 0.3, 1e16, -1e16]):
        features = customer.add(T0 + i, amount, CONFIG)
    assert features == [5.0, 0.6 / 5] * 3  # adding left to right would give 0.0


def test_customer_duplicates_are_counted_twice() -> None:
    """The customer state has no tx ids: deduplication is the caller's (documented)."""
    customer = CustomerWindow()
    customer.add(T0, 10.0, CONFIG)
    assert customer.add(T0, 10.0, CONFIG) == [2.0, 10.0] * 3


def test_customer_out_of_order_within_grace_lands_in_place() -> None:
    customer = CustomerWindow()
    customer.add(T0, 10.0, CONFIG)
    customer.add(T0 + 2 * HOUR, 30.0, CONFIG)
    # One hour behind the newest, inside the 1 h grace: sees only what is at or before it.
    assert customer.add(T0 + HOUR, 20.0, CONFIG) == [2.0, 15.0] * 3
    assert customer.add(T0 + 2 * HOUR + 1, 40.0, CONFIG) == [4.0, 25.0] * 3
    # At the same time as a held payment: goes after it, as if it had arrived in order.
    assert customer.add(T0 + 2 * HOUR, 50.0, CONFIG) == [4.0, 27.5] * 3


def test_customer_late_event_is_returned_and_not_recorded() -> None:
    customer = CustomerWindow()
    customer.add(T0, 10.0, CONFIG)
    assert isinstance(customer.add(T0 - GRACE, 20.0, CONFIG), list)  # exactly at the grace
    before = customer.to_bytes()
    late = customer.add(T0 - GRACE - 1, 30.0, CONFIG)
    assert isinstance(late, Late)
    assert (late.by_ms, late.newest_ms) == (1, T0)
    assert customer.to_bytes() == before
    assert "2018-04-10T10:59:59.999Z" in late.detail
    assert "1ms beyond the 1h grace" in late.detail


def test_late_detail_reads_as_a_duration() -> None:
    customer = CustomerWindow()
    customer.add(T0, 10.0, CONFIG)
    late = customer.add(T0 - 2 * HOUR - 13 * 60_000, 10.0, CONFIG)
    assert isinstance(late, Late)
    assert late.by_ms == HOUR + 13 * 60_000
    assert late.detail == (
        "event 2018-04-10T09:47:00Z is 2h13m behind the newest 2018-04-10T12:00:00Z of its "
        "key, 1h13m beyond the 1h grace"
    )


def test_customer_keeps_what_an_event_one_grace_behind_can_see() -> None:
    customer = CustomerWindow()
    customer.add(T0, 1.0, CONFIG)
    customer.add(T0 + 1, 2.0, CONFIG)
    customer.add(T0 + 30 * DAY_MS + GRACE, 4.0, CONFIG)  # the payment at T0 is out of reach
    assert len(customer) == 2
    assert customer.add(T0 + 30 * DAY_MS, 8.0, CONFIG) == [1.0, 8.0, 1.0, 8.0, 2.0, 5.0]


def test_customer_state_is_bounded_by_the_horizon() -> None:
    customer = CustomerWindow()
    for hour in range(100 * 24):
        features = customer.add(T0 + hour * HOUR, 1.0, CONFIG)
    assert features == [24.0, 1.0, 7 * 24.0, 1.0, 30 * 24.0, 1.0]
    assert len(customer) == 30 * 24 + 1  # (newest - 30 d - 1 h grace, newest], hourly


# --- terminal windows ---------------------------------------------------------------------


def test_terminal_without_history_has_zero_risk() -> None:
    assert TerminalWindow().add_transaction(1, T0, CONFIG) == [0.0] * 6


@pytest.mark.parametrize(("offset", "inside"), [(0, True), (1, False), (-1, True)])
def test_terminal_label_delay_edge(offset: int, inside: bool) -> None:
    """Windows end at ``t - delay`` inclusive: a transaction exactly one delay old counts."""
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY + offset, CONFIG)
    assert terminal.add_label(1, None, T0 - HOUR, True, CONFIG) == "applied"
    features = terminal.add_transaction(2, T0, CONFIG)
    assert features == ([1.0, 1.0] * 3 if inside else [0.0] * 6)


@pytest.mark.parametrize(("position", "days"), WINDOWS)
@pytest.mark.parametrize(("offset", "inside"), [(0, False), (1, True), (-1, False)])
def test_terminal_window_edge(position: int, days: int, offset: int, inside: bool) -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY - days * DAY_MS + offset, CONFIG)
    terminal.add_label(1, None, T0 - DAY_MS, True, CONFIG)
    features = terminal.add_transaction(2, T0, CONFIG)
    assert isinstance(features, list)
    assert features[2 * position : 2 * position + 2] == ([1.0, 1.0] if inside else [0.0, 0.0])


@pytest.mark.parametrize(
    ("label_offset", "risk"),
    [(None, 0.0), (1, 0.0), (0, 0.5), (-DAY_MS, 0.5)],
)
def test_terminal_counts_only_labels_received_by_event_time(
    label_offset: int | None, risk: float
) -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    terminal.add_transaction(2, T0 - DELAY - HOUR, CONFIG)
    assert terminal.add_label(2, None, T0 - 2 * DAY_MS, False, CONFIG) == "applied"
    if label_offset is not None:
        assert terminal.add_label(1, None, T0 + label_offset, True, CONFIG) == "applied"
    assert terminal.add_transaction(3, T0, CONFIG) == [2.0, risk] * 3


def test_terminal_out_of_order_sees_its_own_past() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    terminal.add_transaction(2, T0 - DELAY - 10 * 60_000, CONFIG)
    terminal.add_label(1, None, T0 - 20 * 60_000, True, CONFIG)
    assert terminal.add_transaction(3, T0, CONFIG) == [2.0, 0.5] * 3
    # 30 min behind: tx 2 is after its delay edge, and tx 1's label came after it.
    assert terminal.add_transaction(4, T0 - 30 * 60_000, CONFIG) == [1.0, 0.0] * 3
    assert len(terminal) == 4


def test_terminal_late_transaction() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0, CONFIG)
    assert isinstance(terminal.add_transaction(2, T0 - GRACE, CONFIG), list)
    late = terminal.add_transaction(3, T0 - GRACE - 1, CONFIG)
    assert isinstance(late, Late)
    assert (late.by_ms, late.newest_ms) == (1, T0)
    assert 3 not in terminal
    assert len(terminal) == 2


def test_terminal_duplicate_transaction_is_counted_once() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    assert terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG) == [0.0] * 6
    assert len(terminal) == 1
    assert 1 in terminal
    assert terminal.add_transaction(2, T0, CONFIG) == [1.0, 0.0] * 3


def test_label_statuses() -> None:
    terminal = TerminalWindow()
    assert terminal.add_label(9, None, T0, True, CONFIG) == "early"  # nothing held yet
    assert terminal.add_label(9, None, T0, False, CONFIG) == "duplicate"  # the first is kept
    terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    assert terminal.add_label(1, T0 - DELAY - HOUR, T0 - HOUR, True, CONFIG) == "applied"
    assert terminal.add_label(1, None, T0 - HOUR, False, CONFIG) == "duplicate"
    assert terminal.add_transaction(2, T0, CONFIG) == [1.0, 1.0] * 3  # the first label won
    horizon = CONFIG.terminal_horizon_ms
    assert terminal.add_label(5, T0 - horizon, T0, True, CONFIG) == "expired"
    assert terminal.early_labels == 1  # payment 9's, still waiting


def test_a_label_that_came_before_its_payment_counts_from_its_label_time() -> None:
    early, in_order = TerminalWindow(), TerminalWindow()
    assert early.add_label(1, None, T0 - HOUR // 2, True, CONFIG) == "early"
    assert early.early_label(1) is True
    assert early.add_transaction(1, T0 - DELAY - HOUR, CONFIG) == [0.0] * 6
    assert early.early_label(1) is None  # recorded with its payment
    in_order.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    in_order.add_label(1, None, T0 - HOUR // 2, True, CONFIG)
    assert early == in_order
    assert early.add_transaction(2, T0, CONFIG) == [1.0, 1.0] * 3
    assert early.add_transaction(3, T0 - HOUR, CONFIG) == [1.0, 0.0] * 3  # not known yet then


def test_an_early_label_is_kept_in_the_bytes_and_leaves_with_the_horizon() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0, CONFIG)
    assert terminal.add_label(2, None, T0 + HOUR, False, CONFIG) == "early"
    raw = terminal.to_bytes()
    again = TerminalWindow.from_bytes(raw)
    assert again == terminal
    assert again.early_label(2) is False
    assert TerminalWindow.from_bytes(TerminalWindow().to_bytes()) == TerminalWindow()
    with pytest.raises(ValueError, match="window state"):
        TerminalWindow.from_bytes(raw[:-1])
    again.add_transaction(3, T0 + HOUR + CONFIG.terminal_horizon_ms, CONFIG)
    assert again.early_labels == 0  # its payment would be beyond the horizon now


def test_label_found_by_id_when_the_time_hint_is_wrong() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    assert terminal.add_label(1, T0 - 5, T0 - HOUR, True, CONFIG) == "applied"


def test_labels_beyond_the_horizon_are_expired() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0, CONFIG)
    horizon = DELAY + 30 * DAY_MS + GRACE
    terminal.add_transaction(2, T0 + horizon, CONFIG)  # tx 1 is exactly one horizon old
    assert 1 not in terminal
    assert terminal.add_label(1, T0, T0 + DELAY, True, CONFIG) == "expired"
    assert terminal.add_label(1, None, T0 + DELAY, True, CONFIG) == "expired"
    assert terminal.add_label(3, None, T0 + DELAY + 1, True, CONFIG) == "early"
    assert terminal.add_label(2, None, T0 + horizon + DELAY, True, CONFIG) == "applied"


def test_terminal_keeps_what_an_event_one_grace_behind_can_see() -> None:
    terminal = TerminalWindow()
    horizon = DELAY + 30 * DAY_MS + GRACE
    terminal.add_transaction(1, T0, CONFIG)
    terminal.add_transaction(2, T0 + 1, CONFIG)
    terminal.add_transaction(3, T0 + horizon, CONFIG)
    assert (1 in terminal, 2 in terminal) == (False, True)
    assert terminal.add_transaction(4, T0 + horizon - GRACE, CONFIG) == [0.0] * 4 + [1.0, 0.0]


def test_terminal_state_is_bounded_by_the_horizon() -> None:
    terminal = TerminalWindow()
    for hour in range(100 * 24):
        features = terminal.add_transaction(hour, T0 + hour * HOUR, CONFIG)
    assert features == [24.0, 0.0, 7 * 24.0, 0.0, 30 * 24.0, 0.0]
    assert len(terminal) == 37 * 24 + 1


# --- state serialization ------------------------------------------------------------------


def test_customer_state_round_trip() -> None:
    customer = CustomerWindow()
    for i, amount in enumerate([12.5, 0.1, 99.99]):
        customer.add(T0 + i * HOUR, amount, CONFIG)
    raw = customer.to_bytes()
    assert len(raw) == 5 + 3 * 16
    restored = CustomerWindow.from_bytes(raw)
    assert restored == customer
    assert restored.add(T0 + DAY_MS, 1.0, CONFIG) == customer.add(T0 + DAY_MS, 1.0, CONFIG)
    assert CustomerWindow.from_bytes(None) == CustomerWindow()
    assert len(CustomerWindow().to_bytes()) == 5


def test_terminal_state_round_trip_keeps_labels() -> None:
    terminal = TerminalWindow()
    terminal.add_transaction(1, T0 - DELAY - HOUR, CONFIG)
    terminal.add_transaction(2, T0 - DELAY, CONFIG)
    terminal.add_transaction(3, T0 - DELAY + HOUR, CONFIG)
    terminal.add_label(1, None, T0 - HOUR, True, CONFIG)
    terminal.add_label(2, None, T0, False, CONFIG)
    raw = terminal.to_bytes()
    assert len(raw) == 5 + 3 * 24
    restored = TerminalWindow.from_bytes(raw)
    assert restored == terminal
    assert restored.add_label(2, None, T0, True, CONFIG) == "duplicate"
    assert restored.add_transaction(4, T0, CONFIG) == [2.0, 0.5] * 3
    assert TerminalWindow.from_bytes(None) == TerminalWindow()


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x02\x00\x00\x00\x00", b"\x01\x01\x00\x00\x00"])
def test_corrupt_state_is_rejected(raw: bytes) -> None:
    with pytest.raises(ValueError, match="window state"):
        CustomerWindow.from_bytes(raw)
    with pytest.raises(ValueError, match="window state"):
        TerminalWindow.from_bytes(raw)


@pytest.mark.parametrize(
    "changes",
    [
        {"windows_days": ()},
        {"windows_days": (0, 7)},
        {"windows_days": (7, 1)},
        {"windows_days": (7, 7)},
        {"label_delay_ms": 0},
        {"grace_ms": -1},
    ],
)
def test_config_rejects_what_the_windows_cannot_honour(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        FeatureConfig(**changes)


# --- replay over a table ------------------------------------------------------------------

Row = tuple[int, int, int, int, float, int]  # tx_id, time ms, customer, terminal, amount, fraud


def table_of(rows: list[Row]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {
            "tx_id": pa.array(columns[0], pa.int64()),
            "tx_time": pa.array(columns[1], pa.timestamp("ms", tz="UTC")),
            "customer_id": pa.array(columns[2], pa.int64()),
            "terminal_id": pa.array(columns[3], pa.int64()),
            "amount": pa.array(columns[4], pa.float64()),
            "is_fraud": pa.array(columns[5], pa.int8()),
        }
    )


@pytest.mark.parametrize(("offset", "risk"), [(0, 1.0), (-1, 0.0)])
def test_replay_counts_a_labelled_fraud_one_delay_later(offset: int, risk: float) -> None:
    """Tx 1 and its label (time + delay) count for tx 2 exactly one delay later, not 1 ms less."""
    rows: list[Row] = [(1, T0, 1, 5, 10.0, 1), (2, T0 + DELAY + offset, 2, 5, 20.0, 0)]
    features = replay_features(table_of(rows))
    nb = 1.0 if offset == 0 else 0.0
    assert features[1, 9:].tolist() == [nb, risk] * 3
    assert features[1, :3].tolist() == [20.0, *transaction_flags(T0 + DELAY + offset)]


def test_replay_follows_stream_order_not_row_order() -> None:
    rows: list[Row] = [(3, T0, 1, 5, 30.0, 0), (1, T0, 1, 5, 10.0, 0), (2, T0 - 1, 1, 5, 20.0, 0)]
    features = replay_features(table_of(rows))
    assert features[:, 3].tolist() == [3.0, 2.0, 1.0]  # stream: tx 2, then 1, then 3


@pytest.fixture(scope="module")
def simulated() -> pa.Table:
    return simulate(SimulationConfig(customers=300, terminals=600, days=35, seed=7))


@pytest.fixture(scope="module")
def replayed(simulated: pa.Table) -> npt.NDArray[np.float64]:
    return replay_features(simulated)


def test_replay_equals_the_batch_reference_on_every_row(
    simulated: pa.Table, replayed: npt.NDArray[np.float64]
) -> None:
    reference = reference_features(simulated)
    assert replayed.shape == (simulated.num_rows, len(FEATURE_NAMES))
    mismatched = np.argwhere(replayed != reference)
    assert mismatched.size == 0, f"first mismatches (row, column): {mismatched[:5].tolist()}"
    # The comparison covers every situation: several payments a day, frauds in every window.
    assert (replayed[:, 3] >= 3).any()
    for column in (10, 12, 14):
        assert 0 < (replayed[:, column] > 0).mean() < 1


def test_replay_is_aligned_with_the_rows_of_a_shuffled_table(
    simulated: pa.Table, replayed: npt.NDArray[np.float64]
) -> None:
    shuffle = np.random.default_rng(1).permutation(simulated.num_rows)
    features = replay_features(simulated.take(shuffle))
    assert np.array_equal(features, replayed[shuffle])


def test_replay_without_labels_has_zero_risk(
    simulated: pa.Table, replayed: npt.NDArray[np.float64]
) -> None:
    features = replay_features(simulated.drop_columns(["is_fraud"]), DEFAULT_CONFIG)
    risks = [FEATURE_NAMES.index(f"TERMINAL_ID_RISK_{days}DAY_WINDOW") for days in (1, 7, 30)]
    others = [column for column in range(len(FEATURE_NAMES)) if column not in risks]
    assert np.array_equal(features[:, others], replayed[:, others])
    assert not features[:, risks].any()
    assert replayed[:, risks].any()


def test_replay_follows_the_config_windows(simulated: pa.Table) -> None:
    config = FeatureConfig(windows_days=(2, 14), label_delay_ms=3 * DAY_MS)
    features = replay_features(simulated, config)
    reference = reference_features(simulated, windows_days=(2, 14), delay_days=3)
    assert features.shape[1] == len(feature_names(config)) == 11
    assert np.array_equal(features, reference)


def test_a_terminal_state_stores_its_window_and_hands_out_entry_changes() -> None:
    config = FeatureConfig()
    state = TerminalState()
    state.window.add_transaction(4, 1_000, config)
    state.window.add_transaction(5, 2_000, config)
    state.pending.add(4, 1_000, [0.5, 1.5])
    state.pending.add(5, 2_000, [2.5, 3.5])
    state.pending.note(4, [7.0, 0.1, 0.2, 0.15])
    changed, removed = state.pending.changes()
    assert sorted(tx for tx, _ in changed) == [4, 5]
    assert removed == []
    assert state.pending.changes() == ([], [])  # handed out once
    state.pending.take(5)
    state.pending.expire(2_000 + 10, 5)  # entry 4 is older than 5 ms before the newest
    changed_now, removed_now = state.pending.changes()
    assert (changed_now, sorted(removed_now)) == ([], [4, 5])

    again = TerminalState.from_bytes(state.to_bytes())  # the window's own bytes
    assert again.to_bytes() == state.window.to_bytes()
    assert (again.pending_loaded, again.transactions(), len(again.pending)) == (False, [4, 5], 0)
    for _, entry in changed:  # what the store kept, a row a transaction
        again.pending.restore(entry)
    assert again.pending.get(4) == (1_000, [0.5, 1.5], [7.0, 0.1, 0.2, 0.15])
    assert again.pending.changes() == ([], [])  # restored, not changed
    assert TerminalState.from_bytes(None).pending_loaded  # a new terminal has nothing stored
