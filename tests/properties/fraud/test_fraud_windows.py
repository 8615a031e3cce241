"""Properties of the fraud windows: any event sequence gives the brute-force features.

Each sequence runs through two states, one kept in memory and one sent through
``to_bytes``/``from_bytes`` after every event (as a Faust table would), and both must agree
with a brute-force computation that keeps every event ever accepted and filters it per window.
Sequences are time-sorted, or step back within and beyond the grace period; steps favour the
configuration's edges (windows, label delay, grace, horizons, each +- 1 ms).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.fraud.windows import DAY_MS, CustomerWindow, FeatureConfig, Late, TerminalWindow

HOUR = 3_600_000
T0 = 1_523_318_400_000  # 2018-04-10T00:00:00Z
EXAMPLES = settings(max_examples=300)  # exact edge coincidences are rare: look at more cases

configs = st.sampled_from(
    [
        FeatureConfig(),
        FeatureConfig(windows_days=(1, 2), label_delay_ms=DAY_MS, grace_ms=6 * HOUR),
        FeatureConfig(windows_days=(1,), label_delay_ms=1, grace_ms=0),
    ]
)


def hours(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high).map(lambda h: h * HOUR)


def steps(config: FeatureConfig, *, backward: bool) -> st.SearchStrategy[int]:
    """Time from one event to the next: the config's edges (+- 1 ms) or whole hours, so that
    events often land exactly on each other's window edges."""
    spans = [*config.windows_ms, config.label_delay_ms, config.grace_ms]
    spans += [config.customer_horizon_ms, config.terminal_horizon_ms]
    edges = sorted({max(0, span + d) for span in spans for d in (-1, 0, 1)} | {0, 1})
    exact = st.sampled_from(edges)
    forward = st.one_of(st.just(0), exact, exact, hours(0, 72), st.integers(0, 3 * DAY_MS))
    if not backward:
        return forward
    grace = config.grace_ms
    behind = [-grace - 1, -grace, -grace + 1, -1]
    return st.one_of(forward, st.sampled_from(behind), hours(-grace // HOUR - 1, 0))


def sequences(config: FeatureConfig) -> st.SearchStrategy[list[int]]:
    """Time-sorted sequences, or ones that also step back (within the grace or beyond)."""
    return st.one_of(
        st.lists(steps(config, backward=False), max_size=40),
        st.lists(steps(config, backward=True), max_size=40),
    )


amounts = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False), st.sampled_from([0.1, 0.2, 1e15])
)

Observed = list[float] | tuple[str, int, int]


def observed(result: list[float] | Late) -> Observed:
    return ("late", result.by_ms, result.newest_ms) if isinstance(result, Late) else result


def times_from(steps: list[int]) -> list[int]:
    times, clock = [], T0
    for step in steps:
        clock += step
        times.append(clock)
    return times


# --- customers ----------------------------------------------------------------------------


def customer_brute_force(
    events: list[tuple[int, float]], config: FeatureConfig
) -> Iterator[Observed]:
    accepted: list[tuple[int, float]] = []
    for t, amount in events:
        newest = max((s for s, _ in accepted), default=None)
        if newest is not None and t < newest - config.grace_ms:
            yield ("late", newest - config.grace_ms - t, newest)
            continue
        accepted.append((t, amount))
        row: list[float] = []
        for days in config.windows_days:
            inside = [a for s, a in accepted if t - days * DAY_MS < s <= t]
            row += [float(len(inside)), math.fsum(inside) / len(inside)]
        yield row


@EXAMPLES
@given(configs, st.data())
def test_customer_window_equals_brute_force(config: FeatureConfig, data: st.DataObject) -> None:
    times = times_from(data.draw(sequences(config)))
    events = [(t, data.draw(amounts)) for t in times]
    memory, raw = CustomerWindow(), CustomerWindow().to_bytes()
    accepted: list[int] = []
    for (t, amount), expected in zip(events, customer_brute_force(events, config), strict=True):
        assert observed(memory.add(t, amount, config)) == expected
        stored = CustomerWindow.from_bytes(raw)
        assert observed(stored.add(t, amount, config)) == expected
        raw = stored.to_bytes()
        if isinstance(expected, list):
            accepted.append(t)
    assert CustomerWindow.from_bytes(raw) == memory
    assert CustomerWindow.from_bytes(raw).to_bytes() == raw
    cutoff = max(accepted, default=0) - config.customer_horizon_ms
    assert len(memory) == sum(1 for t in accepted if t > cutoff)  # exactly the horizon


# --- terminals ----------------------------------------------------------------------------

near = st.sampled_from([0, 0, 1, -1])
label_offsets = st.one_of(near, near, hours(-24, 40 * 24), st.integers(-DAY_MS, 0))


def operations(config: FeatureConfig) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Transactions (new, or a repeat of an earlier one) and labels (of one, of one still to
    come, or of none)."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("tx"), steps(config, backward=True)),
            st.tuples(st.just("tx"), steps(config, backward=False)),
            st.tuples(st.just("dup"), st.integers(0, 60)),
            # a label read ahead of its payment: one of the next few transactions
            st.tuples(st.just("ahead"), st.integers(1, 3), st.booleans(), label_offsets),
            st.tuples(
                st.just("label"),
                st.integers(0, 60),  # which transaction (one past the last: an unknown one)
                st.booleans(),  # fraud
                label_offsets,
                st.booleans(),  # pass the transaction time as a hint
                st.booleans(),  # offset from the newest time rather than tx time + delay
            ),
        ),
        max_size=40,
    )


def concrete(ops: list[tuple[Any, ...]], config: FeatureConfig) -> list[tuple[Any, ...]]:
    """``("tx", id, t)`` and ``("label", id, tx time hint or None, label time, is fraud)``."""
    sent: list[tuple[int, int]] = []
    out: list[tuple[Any, ...]] = []
    clock = T0
    for op in ops:
        if op[0] == "tx":
            clock += op[1]
            sent.append((len(sent) + 1, clock))
            out.append(("tx", *sent[-1]))
        elif op[0] == "dup" and sent:
            out.append(("tx", *sent[op[1] % len(sent)]))
        elif op[0] == "ahead":
            _, later, fraud, offset = op
            out.append(("label", len(sent) + later, None, clock + offset, fraud))
        elif op[0] == "label":
            _, pick, fraud, offset, hinted, from_clock = op
            pick %= len(sent) + 1
            unknown = (10**6 + pick, clock - config.terminal_horizon_ms)  # at the horizon
            tx_id, t = sent[pick] if pick < len(sent) else unknown
            label_time = (clock if from_clock else t + config.label_delay_ms) + offset
            out.append(("label", tx_id, t if hinted else None, label_time, fraud))
    return out


@dataclass
class Held:
    time: int
    labelled: bool = False
    fraud_at: int | None = None


def terminal_brute_force(
    events: list[tuple[Any, ...]], config: FeatureConfig
) -> Iterator[Observed | str]:
    recorded: dict[int, Held] = {}
    early: dict[int, tuple[bool, int]] = {}  # labels of payments not seen yet
    newest: int | None = None
    for event in events:
        if event[0] == "tx":
            _, tx_id, t = event
            if newest is not None and t < newest - config.grace_ms:
                yield ("late", newest - config.grace_ms - t, newest)
                continue
            if tx_id not in recorded:
                recorded[tx_id] = Held(t)
                if tx_id in early:  # its label came first
                    fraud, label_time = early.pop(tx_id)
                    recorded[tx_id].labelled = True
                    recorded[tx_id].fraud_at = label_time if fraud else None
            newest = t if newest is None else max(newest, t)
            horizon_edge = newest - config.terminal_horizon_ms
            early = {tx: e for tx, e in early.items() if e[1] > horizon_edge}
            edge, row = t - config.label_delay_ms, []
            for days in config.windows_days:
                inside = [h for h in recorded.values() if edge - days * DAY_MS < h.time <= edge]
                frauds = sum(1 for h in inside if h.fraud_at is not None and h.fraud_at <= t)
                row += [float(len(inside)), frauds / len(inside) if inside else 0.0]
            yield row
            continue
        _, tx_id, hint, label_time, fraud = event
        held = recorded.get(tx_id)
        cutoff = None if newest is None else newest - config.terminal_horizon_ms
        if held is not None and cutoff is not None and held.time > cutoff:
            if held.labelled:
                yield "duplicate"
            else:
                held.labelled, held.fraud_at = True, (label_time if fraud else None)
                yield "applied"
            continue
        when = label_time - config.label_delay_ms if hint is None else hint
        if cutoff is not None and when <= cutoff:
            yield "expired"
        elif tx_id in early:
            yield "duplicate"
        else:
            early[tx_id] = (fraud, label_time)
            yield "early"


def apply(window: TerminalWindow, event: tuple[Any, ...], config: FeatureConfig) -> Observed | str:
    if event[0] == "tx":
        return observed(window.add_transaction(event[1], event[2], config))
    _, tx_id, hint, label_time, fraud = event
    return window.add_label(tx_id, hint, label_time, fraud, config)


@EXAMPLES
@given(configs, st.data())
def test_terminal_window_equals_brute_force(config: FeatureConfig, data: st.DataObject) -> None:
    events = concrete(data.draw(operations(config)), config)
    memory, raw = TerminalWindow(), TerminalWindow().to_bytes()
    recorded: dict[int, int] = {}
    for event, expected in zip(events, terminal_brute_force(events, config), strict=True):
        assert apply(memory, event, config) == expected
        stored = TerminalWindow.from_bytes(raw)
        assert apply(stored, event, config) == expected
        raw = stored.to_bytes()
        if event[0] == "tx" and isinstance(expected, list):
            recorded.setdefault(event[1], event[2])
    assert TerminalWindow.from_bytes(raw) == memory
    assert TerminalWindow.from_bytes(raw).to_bytes() == raw
    cutoff = max(recorded.values(), default=0) - config.terminal_horizon_ms
    assert len(memory) == sum(1 for t in recorded.values() if t > cutoff)  # exactly the horizon
