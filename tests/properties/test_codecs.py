"""Properties of the codecs: round trips, and no input ever raises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from processors.schemas import (
    Label,
    Rejected,
    Transaction,
    decode_label,
    decode_transaction,
    encode,
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
