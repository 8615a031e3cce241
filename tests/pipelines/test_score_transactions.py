"""The transactions step, driven with fake events, a dict for state and recorded outputs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from models.amount_rule import AmountRule
from pipelines.metrics import StepMetrics
from pipelines.outputs import RecordingOutputs
from pipelines.settings import Settings
from pipelines.transactions import ScoreTransactions
from processors.schemas import Transaction, decode_dead_letter, encode
from tests.pipelines.fakes import FakeEvent, events

T0 = datetime(2018, 4, 1, tzinfo=UTC)


def tx(tx_id: int, customer: int, amount: float) -> bytes:
    return encode(Transaction(tx_id, T0 + timedelta(minutes=tx_id), customer, 3, amount))


def make_step(
    home: Path, scorer: object | None = None
) -> tuple[ScoreTransactions, RecordingOutputs, dict[int, object]]:
    settings = Settings(home=home)
    outputs = RecordingOutputs()
    state: dict[int, object] = {}
    step = ScoreTransactions(
        settings,
        scorer or AmountRule(220.0),
        state,
        outputs,
        StepMetrics(),  # type: ignore[arg-type]
    )
    return step, outputs, state


def run(step: ScoreTransactions, batch: list[FakeEvent]) -> None:
    asyncio.run(step(batch))


def test_one_prediction_per_transaction_and_alert_above_threshold(home: Path) -> None:
    step, out, state = make_step(home)
    run(step, events("transactions", [tx(1, 7, 20.0), tx(2, 7, 40.0), tx(3, 7, 300.0)]))
    preds = [orjson.loads(s.value) for s in out.on("predictions")]
    assert [p["event_id"] for p in preds] == ["1", "2", "3"]
    assert [p["is_alert"] for p in preds] == [False, False, True]
    assert preds[2]["features"]["customer_mean_before"] == pytest.approx(30.0)
    alerts = [orjson.loads(s.value) for s in out.on("alerts")]
    assert len(alerts) == 1
    assert alerts[0]["event_id"] == "3"
    assert alerts[0]["entity"] == "customer:7"
    assert alerts[0]["model_versions"] == {"scorer": "amount-rule/1?limit=220"}
    assert "10.0x the mean 30.00 of 2 earlier payments" in alerts[0]["reasons"][1]
    assert state[7] == [3.0, 360.0]
    assert all(s.key == b"7" for s in out.sent)


def test_bad_events_go_to_dead_letters_and_good_ones_still_flow(home: Path) -> None:
    step, out, _ = make_step(home)
    bad = [b"{not json", b'{"tx_id": 1}', None, b"x" * 70_000, b'{"schema": "alert/1"}']
    batch = events("transactions", [tx(1, 1, 10.0), *bad, tx(2, 1, 10.0)])
    run(step, batch)
    assert len(out.on("predictions")) == 2
    letters = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    reasons = [getattr(d, "reason", None) for d in letters]
    assert reasons == ["invalid_json", "missing_field", "empty", "oversized", "wrong_schema"]
    first = letters[0]
    assert not isinstance(first, type(None))
    assert first.value == b"{not json"
    assert first.offset == 1
    assert first.step == "score-transactions"


class Exploding:
    version = "broken/1"

    def predict_batch(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        raise RuntimeError("model file is corrupt")


def test_a_failing_model_dead_letters_the_batch_instead_of_crashing(home: Path) -> None:
    step, out, _ = make_step(home, Exploding())
    run(step, events("transactions", [tx(1, 1, 10.0), tx(2, 2, 10.0)]))
    assert out.on("predictions") == []
    letters = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    assert [d.reason for d in letters] == ["processing_error"] * 2
    assert "model file is corrupt" in letters[0].detail
    assert [d.value for d in letters] == [tx(1, 1, 10.0), tx(2, 2, 10.0)]


def test_state_is_written_inside_the_event_scope(home: Path) -> None:
    """Faust binds a table write to the current event; the step must set it for each write."""
    step, out, _ = make_step(home)
    seen: list[object] = []

    class Spy(dict[int, object]):
        def __setitem__(self, key: int, value: object) -> None:
            seen.append(out.current)
            super().__setitem__(key, value)

    step.state = Spy()
    batch = events("transactions", [tx(1, 1, 10.0), tx(2, 2, 10.0)])
    run(step, batch)
    assert seen == batch
