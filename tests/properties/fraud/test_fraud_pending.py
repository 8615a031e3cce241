"""Properties of the pending features: any mix of adds, notes, takes and expiries keeps the
same entries as a plain dict, in memory and through ``to_bytes``/``from_bytes``."""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.fraud.pending import NOTES, PendingFeatures

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
        entries = {tx: pending.get(tx) for tx in pending.rows}
        assert {tx: e[:2] for tx, e in entries.items() if e} == {
            tx: (t, f) for tx, (t, f, _) in model.items()
        }
        for tx, (_, _, notes) in model.items():
            got = entries[tx]
            assert got is not None
            if notes is not None:
                assert got[2] == notes
            else:
                assert all(math.isnan(v) for v in got[2])


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), values, st.booleans()),
        max_size=20,
        unique_by=lambda e: e[0],
    )
)
def test_the_column_format_of_earlier_versions_reads_as_the_same_entries(
    entries: list[tuple[int, int, float, bool]],
) -> None:
    """State written by version 2 (columns: ids, times, features, notes) still reads."""
    n = len(entries)
    ids = [tx for tx, _, _, _ in entries]
    times = [t for _, t, _, _ in entries]
    features = [v + i for _, _, v, _ in entries for i in range(WIDTH)]
    notes = [v if noted else math.nan for _, _, v, noted in entries for _ in range(NOTES)]
    v2 = struct.pack("<BII", 2, n, WIDTH) + struct.pack(
        f"<{n}q{n}q{n * (WIDTH + NOTES)}d", *ids, *times, *features, *notes
    )
    pending = PendingFeatures.from_bytes(v2)
    assert len(pending) == n
    for tx, t, v, noted in entries:
        got = pending.get(tx)
        assert got is not None
        assert got[:2] == (t, [v + i for i in range(WIDTH)])
        if noted:
            assert got[2] == [v] * NOTES
        else:
            assert all(math.isnan(x) for x in got[2])
    assert PendingFeatures.from_bytes(pending.to_bytes()).rows == pending.rows
