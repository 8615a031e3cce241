"""The fraud pipeline's stages, driven with fake events, dicts for state, recorded outputs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from models.fraud_learner import OnlineFraudLearner
from pipelines.fraud.build import internal_topics, load_model
from pipelines.fraud.learning import LearnerReplica, LearnFraud, decode_snapshot
from pipelines.fraud.routing import CustomerFeatures, RouteLabels
from pipelines.fraud.scoring import STEP, ScoreTransactions
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import DeliveryError
from pipelines.runtime.steps import Step, run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.common.schemas import decode_dead_letter, encode
from processors.fraud.features import FEATURE_NAMES
from processors.fraud.pending import PendingFeatures
from processors.fraud.schemas import Label, Transaction
from processors.fraud.windows import FeatureConfig, TerminalWindow
from processors.fraud.wire import decode_rows, encode_rows, partition_for
from tests.pipelines.fakes import FakeEvent, FakeMessage, events

T0 = datetime(2018, 4, 2, 12, tzinfo=UTC)  # a Monday, noon


def tx(tx_id: int, customer: int, amount: float, terminal: int = 3, minutes: int = 0) -> bytes:
    when = T0 + timedelta(minutes=minutes or tx_id)
    return encode(Transaction(tx_id, when, customer, terminal, amount))


def run(step: Step, batch: Sequence[Any]) -> None:
    asyncio.run(run_batch(step, batch))


def reasons(out: RecordingOutputs) -> list[str | None]:
    return [getattr(decode_dead_letter(s.value), "reason", None) for s in out.on("dead-letters")]


def customers(home: Path) -> tuple[CustomerFeatures, RecordingOutputs, dict[int, Any]]:
    settings = Settings(home=home)
    out = RecordingOutputs()
    state: dict[int, Any] = {}
    step = CustomerFeatures(settings, state, out, StepMetrics(), "tx-by-terminal", 4)
    return step, out, state


def test_customer_features_go_to_the_partition_of_their_terminal(home: Path) -> None:
    step, out, state = customers(home)
    run(step, events("transactions", [tx(1, 7, 20.0, 3), tx(2, 7, 40.0, 9), tx(3, 8, 5.0, 3)]))
    sent = out.on("tx-by-terminal")
    by_partition = {s.partition: decode_rows(s.value, "rows") for s in sent}
    assert set(by_partition) == {partition_for(3, 4), partition_for(9, 4)}
    rows = {row[0]: row for part in by_partition.values() for row in part}
    # [tx_id, t_ms, customer, terminal, amount, weekend, night, nb1, avg1, nb7, avg7, ...]
    assert rows[2][2:7] == [7, 9, 40.0, 0.0, 0.0]
    assert rows[2][7:9] == [2.0, 30.0]  # two payments today, mean 30, this one included
    assert orjson.loads(rows[2][-1])["tx_id"] == 2  # the original bytes travel along
    assert set(state) == {7, 8}  # one state value per customer, written once per batch
    assert out.deliveries == 1


def test_a_payment_behind_its_customer_by_more_than_the_grace_is_dead_lettered(
    home: Path,
) -> None:
    step, out, _ = customers(home)
    run(step, events("transactions", [tx(1, 7, 20.0, minutes=300), tx(2, 7, 9.0, minutes=60)]))
    assert reasons(out) == ["late"]
    letter = decode_dead_letter(out.on("dead-letters")[0].value)
    assert "4h behind" in getattr(letter, "detail", "")
    assert getattr(letter, "value", None) == tx(2, 7, 9.0, minutes=60)
    assert [r[0] for s in out.on("tx-by-terminal") for r in decode_rows(s.value, "rows")] == [1]


def test_labels_are_routed_by_terminal(home: Path) -> None:
    out = RecordingOutputs()
    step = RouteLabels(Settings(home=home), out, StepMetrics(), "labels-by-terminal", 4)
    label = encode(Label(5, 7, 11, True, T0))
    run(step, events("transaction-labels", [label, b"{broken"]))
    (sent,) = out.on("labels-by-terminal")
    assert sent.partition == partition_for(11, 4)
    assert decode_rows(sent.value, "labels") == [[5, 11, 1, int(T0.timestamp() * 1000)]]
    assert reasons(out) == ["invalid_json"]


def scorer(home: Path) -> tuple[ScoreTransactions, RecordingOutputs, dict[str, str]]:
    settings = Settings(home=home)
    names = internal_topics(settings)
    out = RecordingOutputs()
    step = ScoreTransactions(
        settings, load_model(settings), LearnerReplica(), {}, {}, out, StepMetrics(), names
    )
    return step, out, names


def internal(topic: str, field: str, rows: list[Any], offset: int = 0) -> FakeEvent:
    return FakeEvent(FakeMessage(topic, 0, offset, None, encode_rows(field, rows)))


def row(tx_id: int, t_ms: int, amount: float, terminal: int = 3) -> list[Any]:
    customer6 = [1.0, amount, 1.0, amount, 1.0, amount]
    return [tx_id, t_ms, 7, terminal, amount, 0.0, 0.0, *customer6, '{"raw": 1}']


STATUSES = ("applied", "duplicate", "early")


def test_each_transaction_is_scored_once_and_its_label_joins_what_was_scored(home: Path) -> None:
    step, out, names = scorer(home)
    t = int(T0.timestamp() * 1000)
    run(step, [internal(names["tx"], "rows", [row(1, t, 20.0), row(2, t + 1, 900.0)])])
    preds = [orjson.loads(s.value) for s in out.on("predictions")]
    assert [p["event_id"] for p in preds] == ["1", "2"]
    assert set(FEATURE_NAMES) <= set(preds[1]["features"])
    assert preds[1]["model_versions"]["onnx"].startswith("fraud-lgbm/")
    assert preds[1]["model_versions"]["river"] == "river-logreg/0"
    labels = [[2, 3, 1, t + 7 * 86_400_000], [2, 3, 0, t + 7 * 86_400_000], [9, 3, 0, t]]
    run(step, [internal(names["labels"], "labels", labels, 1)])
    count = step.metrics.registry.get_sample_value
    assert [count("streamwise_labels_total", {"step": STEP, "status": s}) for s in STATUSES] == [
        1.0,  # the first label of payment 2
        1.0,  # its second
        1.0,  # a payment this terminal has not seen (yet)
    ]
    assert count("streamwise_training_examples_total", {"step": STEP}) == 1.0
    (training,) = out.on(names["training"])
    ((tx_id, is_fraud, features, served),) = decode_rows(training.value, "examples")
    assert (tx_id, is_fraud) == (2, 1)
    assert [round(f, 6) for f in features] == [preds[1]["features"][n] for n in FEATURE_NAMES]
    # The scores it was served with travel along, for the live evaluation.
    p = preds[1]
    assert served[:2] == [t + 1, 7]
    assert [round(v, 6) for v in served[2:]] == [
        p["features"]["score_onnx"],
        p["features"]["score_river"],
        p["score"],
    ]
    assert p["model_versions"]["champion"] == "blend:0.3"
    assert p["model_versions"]["challenger"] == "blend:0.6"
    assert "score_challenger" in p["features"]


def test_a_label_read_before_its_payment_teaches_the_learner_once_the_payment_is_scored(
    home: Path,
) -> None:
    step, out, names = scorer(home)
    t = int(T0.timestamp() * 1000)
    label = [[5, 3, 1, t + 7 * 86_400_000]]
    run(step, [internal(names["labels"], "labels", label, 0)])
    assert out.on(names["training"]) == []  # nothing to join yet
    run(step, [internal(names["tx"], "rows", [row(5, t, 50.0)], 1)])
    (pred,) = [orjson.loads(s.value) for s in out.on("predictions")]
    (training,) = out.on(names["training"])
    ((tx_id, is_fraud, features, served),) = decode_rows(training.value, "examples")
    assert (tx_id, is_fraud) == (5, 1)
    assert [round(f, 6) for f in features] == [pred["features"][n] for n in FEATURE_NAMES]
    assert served[:2] == [t, 7]  # with the scores it was served
    assert round(served[4], 6) == pred["score"]
    count = step.metrics.registry.get_sample_value
    assert count("streamwise_labels_total", {"step": STEP, "status": "early"}) == 1.0
    assert count("streamwise_training_examples_total", {"step": STEP}) == 1.0


def test_pending_features_are_stored_by_transaction_and_read_back_after_a_restart(
    home: Path,
) -> None:
    settings = Settings(home=home)
    names = internal_topics(settings)
    t = int(T0.timestamp() * 1000)
    terminals: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}

    def restarted() -> tuple[ScoreTransactions, RecordingOutputs]:  # nothing in memory
        out = RecordingOutputs()
        model = load_model(settings)
        replica = LearnerReplica()
        return ScoreTransactions(
            settings, model, replica, terminals, pending, out, StepMetrics(), names
        ), out

    step, _ = restarted()
    run(step, [internal(names["tx"], "rows", [row(1, t, 20.0), row(2, t + 1, 30.0)])])
    assert set(pending) == {1, 2}  # one value a payment
    assert TerminalWindow.from_bytes(terminals[3]).transaction_ids() == [1, 2]

    step, out = restarted()
    run(step, [internal(names["labels"], "labels", [[2, 3, 1, t + 7 * 86_400_000]], 1)])
    (training,) = out.on(names["training"])
    ((tx_id, is_fraud, features, served),) = decode_rows(training.value, "examples")
    assert (tx_id, is_fraud, len(features), served[:2]) == (2, 1, 15, [t + 1, 7])
    assert set(pending) == {1}  # the label took its entry: deleted


def test_a_terminal_saved_by_an_earlier_release_keeps_its_pending_features(home: Path) -> None:
    settings = Settings(home=home)
    names = internal_topics(settings)
    t = int(T0.timestamp() * 1000)
    window = TerminalWindow()
    window.add_transaction(1, t, FeatureConfig())
    old = PendingFeatures()
    old.add(1, t, [float(i) for i in range(15)])
    old.add(9, t, [0.0] * 15)  # a payment the window no longer holds keeps its entry too
    # An earlier release kept all of a terminal's entries in one pending-features value.
    terminals: dict[int, bytes] = {3: window.to_bytes()}
    legacy = {3: old.to_bytes()}
    pending: dict[int, bytes] = {}
    out = RecordingOutputs()
    step = ScoreTransactions(
        settings,
        load_model(settings),
        LearnerReplica(),
        terminals,
        pending,
        out,
        StepMetrics(),
        names,
        legacy_pending=legacy,
    )
    run(step, [internal(names["labels"], "labels", [[1, 3, 1, t + 7 * 86_400_000]])])
    (training,) = out.on(names["training"])
    ((tx_id, is_fraud, features, _),) = decode_rows(training.value, "examples")
    assert (tx_id, is_fraud, features) == (1, 1, [float(i) for i in range(15)])
    assert legacy == {}  # moved: the old value is deleted
    assert set(pending) == {9}  # the entry left is stored under its own transaction
    assert pending[9] == old.rows[9]  # the same packed row


def test_a_damaged_internal_record_is_a_dead_letter(home: Path) -> None:
    step, out, names = scorer(home)
    run(step, [FakeEvent(FakeMessage(names["tx"], 0, 0, None, b'{"v": 99}'))])
    assert reasons(out) == ["invalid_internal"]


def test_the_learner_learns_each_example_once_across_a_restart(home: Path) -> None:
    settings = Settings(home=home)
    out = RecordingOutputs()
    checkpoint: list[bytes] = []

    async def latest() -> bytes | None:
        return checkpoint[-1] if checkpoint else None

    def learner() -> LearnFraud:
        return LearnFraud(settings, out, StepMetrics(), "snapshots", latest)

    rng = np.random.default_rng(1)
    batches = [
        internal("training", "examples", [[i, i % 2, rng.random(15).tolist()]], offset=i)
        for i in range(6)
    ]
    run(learner(), batches[:4])
    checkpoint.append(out.on("snapshots")[-1].value)
    run(learner(), batches[2:])  # a restart: the first four are covered by the checkpoint
    model, covered = decode_snapshot(out.on("snapshots")[-1].value)
    assert (model.learned, covered) == (6, 5)
    direct = OnlineFraudLearner()
    for b in batches:
        ((_, y, f),) = decode_rows(b.message.value, "examples")
        direct.learn(f, bool(y))
    x = rng.random((3, 15))
    assert np.array_equal(model.predict_batch(x), direct.predict_batch(x))


class FailingDelivery(RecordingOutputs):
    """Outputs whose broker refuses the first ``failures`` delivery checks."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def delivered(self) -> None:
        await super().delivered()
        if self.failures:
            self.failures -= 1
            raise DeliveryError("1 of 2 records were not delivered: RecordTooLarge")


def test_a_refused_delivery_sends_the_batch_to_dead_letters(home: Path) -> None:
    step, _, _ = customers(home)
    out = FailingDelivery(failures=1)
    step.outputs = step.dead.outputs = out
    run(step, events("transactions", [tx(1, 7, 20.0), tx(2, 7, 40.0)]))
    assert reasons(out) == ["processing_error"] * 2
    assert "DeliveryError" in getattr(
        decode_dead_letter(out.on("dead-letters")[0].value), "detail", ""
    )
    # the refused one, the dead letters', and the hand-over after the policy (exactly_once
    # commits the dead letters with the batch's offsets there)
    assert out.deliveries == 3


def test_when_even_dead_letters_are_refused_the_batch_fails(home: Path) -> None:
    step, _, _ = customers(home)
    out = FailingDelivery(failures=2)
    step.outputs = step.dead.outputs = out
    with pytest.raises(DeliveryError):
        run(step, events("transactions", [tx(1, 7, 20.0)]))


def test_ids_are_pseudonymised_with_a_keyed_hash_when_a_key_is_set(home: Path) -> None:
    settings = Settings(home=home, transactions={"pseudonymise_key": "s3cret"})
    names = internal_topics(settings)
    out = RecordingOutputs()
    step = ScoreTransactions(
        settings, load_model(settings), LearnerReplica(), {}, {}, out, StepMetrics(), names
    )
    t = int(T0.timestamp() * 1000)
    run(step, [internal(names["tx"], "rows", [row(1, t, 20.0)])])
    (sent,) = out.on("predictions")
    entity = orjson.loads(sent.value)["entity"]
    digest = hmac.new(b"s3cret", b"customer:7", hashlib.sha256).hexdigest()
    assert entity == f"customer:~{digest[:16]}"
    assert sent.key == entity.encode()


def test_under_exactly_once_every_record_names_the_input_it_came_from(home: Path) -> None:
    """Outputs of a batch of several input partitions go in each input's own transaction:
    rows of customers on two partitions bound for one terminal leave as two records."""
    step, out, _ = customers(home)
    out.by_source = True
    batch = [
        FakeEvent(FakeMessage("transactions", p, o, b"1", tx(10 * p + o, 7 + p, 20.0, 3)))
        for p in (0, 1)
        for o in range(3)
    ]
    run(step, batch)
    sent = out.on("tx-by-terminal")
    assert len(sent) == 2  # one record per input partition (one terminal, one target)
    for record, source in zip(out.sent, out.sources, strict=True):
        assert source is not None
        rows = decode_rows(record.value, "rows")
        assert {r[0] // 10 for r in rows} == {source.message.partition}
    out.by_source = False
    plain, _, _ = customers(home)
    run(plain, batch)
    assert len(plain.outputs.on("tx-by-terminal")) == 1  # type: ignore[attr-defined]


def test_under_exactly_once_predictions_and_examples_name_their_input(home: Path) -> None:
    settings = Settings(home=home)
    names = internal_topics(settings)
    out = RecordingOutputs(by_source=True)
    step = ScoreTransactions(
        settings, load_model(settings), LearnerReplica(), {}, {}, out, StepMetrics(), names
    )
    t = int(T0.timestamp() * 1000)
    scored = [internal(names["tx"], "rows", [row(p * 100 + 1, t, 20.0)]) for p in (0, 1)]
    for p, event in enumerate(scored):
        event.message.partition = p
    run(step, scored)
    labels = [
        FakeEvent(FakeMessage(names["labels"], p, 5, None, encode_rows("labels", [lab])))
        for p, lab in enumerate([[1, 3, 1, t + 10], [101, 3, 0, t + 10]])
    ]
    run(step, labels)
    predictions = [
        (s, src) for s, src in zip(out.sent, out.sources, strict=True) if s.topic == "predictions"
    ]
    assert len(predictions) == 2
    for sent, source in predictions:
        tx_id = int(orjson.loads(sent.value)["event_id"])
        assert source.message.partition == tx_id // 100
    training = [
        (s, src)
        for s, src in zip(out.sent, out.sources, strict=True)
        if s.topic == names["training"]
    ]
    assert len(training) == 2  # one record per input partition
    for sent, source in training:
        (example,) = decode_rows(sent.value, "examples")
        assert example[0] // 100 == source.message.partition
