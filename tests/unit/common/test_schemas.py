"""Codecs: valid records decode; each kind of bad input is rejected with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processors.common.schemas import (
    Alert,
    DeadLetter,
    Prediction,
    Rejected,
    decode_dead_letter,
    encode,
    format_time,
    parse_time,
)
from processors.fraud.schemas import (
    Label,
    Transaction,
    decode_label,
    decode_transaction,
    decode_transaction_row,
)

GOOD = {
    "schema": "transaction/1",
    "tx_id": 12,
    "tx_time": "2018-04-01T10:00:00.000Z",
    "customer_id": 3,
    "terminal_id": 99,
    "amount": 57.16,
}


def raw(**changes: object) -> bytes:
    data = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def test_a_valid_transaction_decodes() -> None:
    tx = decode_transaction(raw())
    assert tx == Transaction(12, datetime(2018, 4, 1, 10, tzinfo=UTC), 3, 99, 57.16)


@pytest.mark.parametrize(
    ("when", "ms"),
    [
        ("2018-04-01T00:07:56.999Z", 1_522_541_276_999),
        ("2018-04-01T02:07:56.007+02:00", 1_522_541_276_007),  # checked path: not UTC itself
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_the_row_form_carries_the_time_in_epoch_milliseconds(when: str, ms: int) -> None:
    assert decode_transaction_row(raw(tx_time=when)) == (12, ms, 3, 99, 57.16)


def test_schema_field_may_be_omitted() -> None:
    assert isinstance(decode_transaction(raw(schema=...)), Transaction)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{oops", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (raw(schema="alert/1"), "wrong_schema"),
        (raw(schema="transaction/2"), "unsupported_version"),
        (raw(tx_id=...), "missing_field"),
        (raw(amount=...), "missing_field"),
        (raw(tx_time=...), "missing_field"),
        (raw(customer_id="3"), "bad_type"),
        (raw(tx_id=1.5), "bad_type"),
        (raw(terminal_id=True), "bad_type"),
        (raw(customer_id=-1), "bad_value"),
        (raw(amount="12"), "bad_type"),
        (raw(amount=-0.01), "bad_amount"),
        (raw(amount=1e12), "bad_amount"),
        (
            b'{"tx_id":1,"tx_time":"2018-04-01T00:00:00Z","customer_id":1,"terminal_id":1,"amount":NaN}',
            "invalid_json",
        ),
        (raw(tx_time="yesterday"), "bad_time"),
        (raw(tx_time="2018-04-01T10:00:00"), "bad_time"),
        (raw(tx_time=1522576800), "bad_time"),
    ],
)
def test_bad_transactions_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    result = decode_transaction(payload)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail


def test_infinite_amount_is_rejected() -> None:
    # JSON has no literal for infinity, but 1e999 parses to inf in most decoders.
    result = decode_transaction(raw().replace(b"57.16", b"1e999"))
    assert isinstance(result, Rejected)
    assert result.reason in {"bad_amount", "invalid_json"}


def test_times_are_utc_with_milliseconds() -> None:
    t = datetime(2018, 4, 1, 23, 59, 59, 123456, tzinfo=UTC)
    assert format_time(t) == "2018-04-01T23:59:59.123Z"
    parsed = parse_time("2018-04-02T01:59:59.123+02:00")
    assert parsed == datetime(2018, 4, 1, 23, 59, 59, 123000, tzinfo=UTC)


def test_label_round_trip_and_rejections() -> None:
    label = Label(5, 1, 2, True, datetime(2018, 4, 8, tzinfo=UTC))
    assert decode_label(encode(label)) == label
    data = orjson.loads(encode(label))
    data["is_fraud"] = 1
    bad = decode_label(orjson.dumps(data))
    assert isinstance(bad, Rejected)
    assert bad.reason == "bad_type"


def test_dead_letter_keeps_original_bytes() -> None:
    letter = DeadLetter(
        "invalid_json",
        "x",
        "score-transactions",
        "transactions",
        2,
        41,
        b"k",
        b"\x00\xff{",
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    data = orjson.loads(encode(letter))
    assert data["source"] == {"topic": "transactions", "partition": 2, "offset": 41}
    assert decode_dead_letter(encode(letter)) == letter


def test_an_alert_about_a_prediction_repeats_its_event_score_models_and_times() -> None:
    t = datetime(2018, 4, 1, tzinfo=UTC)
    p = Prediction("transactions", "7", "customer:1", 0.9, 0.5, {"onnx": "m/1"}, t, t, {})
    alert = Alert.about(p, "fraud_suspected", ["why"])
    data = alert.to_dict()
    assert data["alert_id"] == "transactions:fraud_suspected:7"
    assert (data["entity"], data["score"], data["threshold"]) == ("customer:1", 0.9, 0.5)
    assert data["model_versions"] == {"onnx": "m/1"}
    assert data["reasons"] == ["why"]
    assert (alert.event_time, alert.emit_time) == (t, t)
