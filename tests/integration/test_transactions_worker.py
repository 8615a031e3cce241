"""The transactions worker against Apache Kafka: completeness, dead letters, crash recovery."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta

import orjson

from pipelines.produce import publish_transactions
from pipelines.settings import Settings
from processors.simulator import SimulationConfig, simulate
from tests.integration.conftest import Worker, publish_raw, read_topic


def small_table(customers: int = 80, days: int = 6, seed: int = 11):  # type: ignore[no-untyped-def]
    return simulate(
        SimulationConfig(customers=customers, terminals=2 * customers, days=days, seed=seed)
    )


def test_every_transaction_gets_one_prediction_and_big_amounts_alert(
    settings: Settings, start_worker: Callable[[Settings, str], Worker]
) -> None:
    table = small_table()
    n = table.num_rows
    assert n > 500
    worker = start_worker(settings, "transactions")
    worker.wait_assigned(settings.topics.transactions)
    report = publish_transactions(settings, table, label_delay=timedelta(days=7))
    assert report.transactions == n
    assert report.labels == n

    preds = read_topic(settings, settings.topics.predictions, lambda r: len(r) >= n)
    ids = [p["event_id"] for p in preds]
    assert len(ids) == n, worker.log_tail()
    assert set(ids) == {str(i) for i in table.column("tx_id").to_pylist()}

    amounts = dict(
        zip(table.column("tx_id").to_pylist(), table.column("amount").to_pylist(), strict=True)
    )
    expected_alerts = {str(i) for i, a in amounts.items() if a >= 220.0}
    assert expected_alerts, "the simulation has scenario-1 frauds"
    alerts = read_topic(settings, settings.topics.alerts, lambda r: len(r) >= len(expected_alerts))
    assert {a["event_id"] for a in alerts} == expected_alerts
    assert all(a["schema"] == "alert/1" and a["model_versions"]["scorer"] for a in alerts)
    assert worker.proc.poll() is None


def tx_json(**changes: object) -> bytes:
    """A transaction/1 record with some fields changed (``...`` drops a field)."""
    data: dict[str, object] = {
        "tx_id": 9000,
        "tx_time": "2018-04-01T00:00:00Z",
        "customer_id": 1,
        "terminal_id": 1,
        "amount": 5,
    }
    data |= changes
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


BAD: list[tuple[str, bytes | None]] = [
    ("invalid_json", b"{this is not json"),
    ("invalid_json", b"\x00\x01\x02binary"),
    ("missing_field", tx_json(amount=...)),
    ("bad_type", tx_json(tx_id="9002")),
    ("bad_amount", tx_json(amount=-4)),
    ("invalid_json", tx_json().replace(b'"amount":5', b'"amount":NaN')),
    ("invalid_json", tx_json().replace(b'"amount":5', b'"amount":1e999')),
    ("bad_time", tx_json(tx_time="the day after")),
    ("empty", None),
    ("oversized", b'{"pad": "' + b"x" * 100_000 + b'"}'),
    ("wrong_schema", b'{"schema": "alert/1"}'),
]


def good(tx_id: int) -> bytes:
    return orjson.dumps(
        {
            "schema": "transaction/1",
            "tx_id": tx_id,
            "tx_time": "2018-04-01T12:00:00Z",
            "customer_id": tx_id % 5,
            "terminal_id": 3,
            "amount": 12.5,
        }
    )


def test_each_bad_input_lands_in_dead_letters_while_good_ones_flow(
    settings: Settings, start_worker: Callable[[Settings, str], Worker]
) -> None:
    worker = start_worker(settings, "transactions")
    worker.wait_assigned(settings.topics.transactions)
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, (_, value) in enumerate(BAD):
        messages.append((b"1", good(i)))
        messages.append((b"1", value))
    publish_raw(settings, settings.topics.transactions, messages)

    letters = read_topic(settings, settings.topics.dead_letters, lambda r: len(r) >= len(BAD))
    assert len(letters) == len(BAD), worker.log_tail()
    # All went to one partition (same key), so dead letters keep the input order.
    assert [d["reason"] for d in letters] == [reason for reason, _ in BAD]
    for letter, (_, value) in zip(letters, BAD, strict=True):
        assert letter["step"] == "score-transactions"
        assert letter["source"]["topic"] == settings.topics.transactions
        original = None if letter["value_b64"] is None else base64.b64decode(letter["value_b64"])
        assert original == value
        assert letter["detail"]

    preds = read_topic(settings, settings.topics.predictions, lambda r: len(r) >= len(BAD))
    assert sorted(int(p["event_id"]) for p in preds) == list(range(len(BAD)))

    # Still running and still processing after the battery.
    publish_raw(settings, settings.topics.transactions, [(b"2", good(777))])
    preds = read_topic(settings, settings.topics.predictions, lambda r: len(r) > len(BAD))
    assert "777" in {p["event_id"] for p in preds}
    assert worker.proc.poll() is None


def test_a_worker_killed_mid_stream_loses_nothing_after_restart(
    settings: Settings, start_worker: Callable[[Settings, str], Worker]
) -> None:
    table = small_table(customers=1000, days=8, seed=5)
    n = table.num_rows
    publish_transactions(settings, table.drop_columns(["is_fraud"]))
    slow = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"batch_size": 50})}
    )
    first = start_worker(slow, "transactions")
    read_topic(slow, slow.topics.predictions, lambda r: len(r) >= n // 4, timeout_s=120)
    first.kill()
    assert first.proc.returncode == -9
    before = {
        p["event_id"]
        for p in read_topic(slow, slow.topics.predictions, lambda r: False, timeout_s=2)
    }
    assert 0 < len(before) < n, "the kill must land mid-stream"

    second = start_worker(slow, "transactions")
    expected = {str(i) for i in table.column("tx_id").to_pylist()}
    preds = read_topic(
        slow,
        slow.topics.predictions,
        lambda r: {p["event_id"] for p in r} >= expected,
        timeout_s=180,
    )
    seen = {p["event_id"] for p in preds}
    assert seen == expected, second.log_tail()
    # At-least-once: some may be predicted twice, none lost.
    assert len(preds) >= n
