"""Properties of the codecs: round trips, and no input ever raises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.common.schemas import Prediction, Rejected, encode, format_time, prediction_dict
from processors.fraud.schemas import (
    Label,
    Transaction,
    decode_label,
    decode_label_row,
    decode_transaction,
    decode_transaction_checked,
    decode_transaction_row,
)

ids = st.integers(min_value=0, max_value=2**53)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
amounts = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(ids, times, ids, ids, amounts)
def test_transaction_round_trip(tx_id: int, t: datetime, c: int, term: int, a: float) -> None:
    tx = Transaction(tx_id, t, c, term, a)
    assert decode_transaction(encode(tx)) == tx
    assert_row_agrees(encode(tx))


@given(ids, ids, ids, st.booleans(), times)
def test_label_round_trip(tx_id: int, c: int, term: int, fraud: bool, t: datetime) -> None:
    label = Label(tx_id, c, term, fraud, t)
    assert decode_label(encode(label)) == label


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    assert isinstance(decode_transaction(payload), Transaction | Rejected)
    assert isinstance(decode_label(payload), Label | Rejected)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(
            ["schema", "tx_id", "tx_time", "customer_id", "terminal_id", "amount", "x"]
        ),
        json_values,
    )
)
def test_arbitrary_json_objects_decode_or_are_rejected(data: dict[str, object]) -> None:
    result = decode_transaction(orjson.dumps(data))
    if isinstance(result, Transaction):
        assert result.amount >= 0
        assert result.tx_time.tzinfo is not None
    else:
        assert result.reason
        assert result.detail


@given(times, st.integers(min_value=-14, max_value=14))
def test_time_zones_normalise_to_utc(t: datetime, hours: int) -> None:
    from datetime import timezone

    shifted = t.astimezone(timezone(timedelta(hours=hours))).isoformat()
    raw = orjson.dumps(
        {"tx_id": 1, "tx_time": shifted, "customer_id": 1, "terminal_id": 1, "amount": 1.0}
    )
    tx = decode_transaction(raw)
    assert isinstance(tx, Transaction)
    assert tx.tx_time == t


any_times = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)


@given(any_times, offsets)
def test_format_time_is_strftime_rfc3339_in_utc(t: datetime, zone: timezone) -> None:
    expected = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert format_time(t) == expected
    assert format_time(t.astimezone(zone)) == expected


scores = st.floats(min_value=0, max_value=1, allow_nan=False)
feature_maps = st.dictionaries(
    st.text(max_size=12), st.floats(allow_nan=False, allow_infinity=False), max_size=20
)


@given(st.text(max_size=20), ids, st.text(max_size=30), scores, scores, feature_maps, times, times)
def test_prediction_dict_encodes_to_what_encode_of_a_prediction_writes(
    pipeline: str,
    event_id: int,
    entity: str,
    score: float,
    threshold: float,
    features: dict[str, float],
    event_time: datetime,
    emit_time: datetime,
) -> None:
    versions = {"onnx": "fraud_lgbm/1", "river": "river-logreg/7"}
    prediction = Prediction(
        pipeline, str(event_id), entity, score, threshold, versions, event_time, emit_time, features
    )
    fast = prediction_dict(
        pipeline,
        str(event_id),
        entity,
        score,
        threshold,
        versions,
        features,
        format_time(event_time),
        format_time(emit_time),
    )
    assert orjson.dumps(fast) == encode(prediction)


_MISSING = object()
_odd_values = st.one_of(
    st.integers(-3, -1),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "2018-04-01T00:07:56.250Z",
            "2018-04-01T02:07:56+02:00",
            "2018-04-01T00:07:56",
            "2018-04-01",
            "not a time",
            "",
            "transaction/2",
            "label/1",
        ]
    ),
    st.lists(st.integers(0, 3), max_size=2),
    st.just(_MISSING),
)
_valid = {
    "schema": "transaction/1",
    "tx_id": 7,
    "tx_time": "2018-04-01T00:07:56Z",
    "customer_id": 1,
    "terminal_id": 2,
    "amount": 12.5,
}


@settings(max_examples=1000)
@given(st.sets(st.sampled_from(list(_valid)), max_size=2), st.data())
def test_the_short_path_of_transaction_decoding_agrees_with_the_checked_one(
    odd: set[str], data: st.DataObject
) -> None:
    """One or two fields changed (or dropped) at a time, the rest valid."""
    raw = _with_odd_fields(_valid, odd, data)
    assert repr(decode_transaction(raw)) == repr(decode_transaction_checked(raw))
    assert_row_agrees(raw)


def _with_odd_fields(valid: dict[str, Any], odd: set[str], data: st.DataObject) -> bytes:
    """``valid`` as JSON with the ``odd`` fields given drawn values (or dropped)."""
    record = {k: data.draw(_odd_values, label=k) if k in odd else v for k, v in valid.items()}
    return orjson.dumps({k: v for k, v in record.items() if v is not _MISSING})


def assert_row_agrees(raw: bytes) -> None:
    """The tuple form says what the checked decoder says, the time in epoch milliseconds."""
    tx, row = decode_transaction_checked(raw), decode_transaction_row(raw)
    if isinstance(tx, Rejected):
        assert repr(row) == repr(tx)
        return
    t_ms = (tx.tx_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert row == (tx.tx_id, t_ms, tx.customer_id, tx.terminal_id, tx.amount)
    assert type(row[1]) is int
    assert type(row[4]) is float


@pytest.mark.parametrize("raw", [b"", b"[1]", b"{", b"null", b'"x"'])
def test_the_short_path_agrees_on_what_is_not_an_object(raw: bytes) -> None:
    assert repr(decode_transaction(raw)) == repr(decode_transaction_checked(raw))
    assert_row_agrees(raw)
    assert_label_row_agrees(raw)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_valid_label = {
    "schema": "transaction-label/1",
    "tx_id": 7,
    "customer_id": 1,
    "terminal_id": 2,
    "is_fraud": True,
    "label_time": "2018-04-08T00:07:56.250Z",
}


@settings(max_examples=1000)
@given(st.sets(st.sampled_from(list(_valid_label)), max_size=2), st.data())
def test_the_short_path_of_label_decoding_agrees_with_the_checked_one(
    odd: set[str], data: st.DataObject
) -> None:
    """One or two fields changed (or dropped) at a time, the rest valid."""
    assert_label_row_agrees(_with_odd_fields(_valid_label, odd, data))


def assert_label_row_agrees(raw: bytes) -> None:
    """The label's numbers say what the checked decoder says, the time in epoch ms."""
    label, row = decode_label(raw), decode_label_row(raw)
    if isinstance(label, Rejected):
        assert repr(row) == repr(label)
    else:
        t_ms = (label.label_time - _EPOCH) // timedelta(milliseconds=1)
        assert row == (label.tx_id, label.terminal_id, int(label.is_fraud), t_ms)
        assert all(type(v) is int for v in row)
