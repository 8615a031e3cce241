"""Properties of the pending features: any mix of adds, notes, takes and expiries keeps the
same entries as a plain dict, in memory and through ``to_bytes``/``from_bytes``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.fraud_pending import NOTES, PendingFeatures

WIDTH = 3
values = st.floats(allow_nan=False, allow_infinity=False, width=64)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 30), st.integers(0, 1_000), values),
        st.tuples(st.just("note"), st.integers(0, 30), values),
        st.tuples(st.just("take"), st.integers(0, 30)),
        st.tuples(st.just("expire"), st.integers(0, 1_200), st.integers(0, 300)),
        st.tuples(st.just("reload")),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(ops)
def test_pending_features_behave_like_a_dict_with_expiry(steps: list[tuple[Any, ...]]) -> None:
    pending = PendingFeatures()
    model: dict[int, tuple[int, list[float], list[float] | None]] = {}
    for step in steps:
        match step:
            case ("add", tx, t, v):
                pending.add(tx, t, [v] * WIDTH)
                model[tx] = (t, [v] * WIDTH, None)
            case ("note", tx, v):
                pending.note(tx, [v] * NOTES)
                if tx in model:
                    model[tx] = (model[tx][0], model[tx][1], [v] * NOTES)
            case ("take", tx):
                got = pending.take(tx)
                want = model.pop(tx, None)
                assert (got is None) == (want is None)
                if got is not None and want is not None:
                    assert got[:2] == want[:2]
            case ("expire", now, ttl):
                dropped = pending.expire(now, ttl)
                old = [tx for tx, (t, _, _) in model.items() if t < now - ttl]
                for tx in old:
                    del model[tx]
                assert dropped == len(old)
            case ("reload",):
                raw = pending.to_bytes()
                pending = PendingFeatures.from_bytes(raw)
                assert pending.to_bytes() == raw
        assert {tx: (t, list(f)) for tx, (t, f, _) in pending.entries.items()} == {
            tx: (t, f) for tx, (t, f, _) in model.items()
        }
        for tx, (_, _, notes) in model.items():
            if notes is not None:
                assert list(pending.entries[tx][2]) == notes
