"""``exactly_once`` against Apache Kafka: a worker SIGKILLed mid-stream, three times.

A ``read_committed`` reader of the outputs (a kafka-python consumer, no code shared with the
worker) sees each payment's prediction exactly once and no record of any output twice, and
the customer features equal the batch replay's; with the worker's own record of its
transactions in its log, nothing was sent outside one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from pipelines.fraud.produce import publish_transactions
from pipelines.settings import Settings
from processors.fraud.features import FEATURE_NAMES, replay_features
from processors.fraud.simulator import SimulationConfig, simulate
from tests.integration.conftest import Worker, read_topic

COMMITTED = "read_committed"


def _ids(records: list[Any]) -> set[str]:
    return {r["event_id"] for r in records}


def test_sigkilled_three_times_a_read_committed_reader_sees_each_prediction_once(
    settings: Settings, start_worker: Callable[[Settings, str], Worker]
) -> None:
    table = simulate(SimulationConfig(customers=600, terminals=1200, days=6, seed=23))
    n = table.num_rows
    eos = settings.model_copy(
        update={
            "processing_guarantee": "exactly_once",
            "worker": settings.worker.model_copy(update={"batch_size": 50}),
        }
    )
    publish_transactions(eos, table.drop_columns(["is_fraud"]))
    expected = {str(i) for i in table.column("tx_id").to_pylist()}
    workers: list[Worker] = []
    for kill in (1, 2, 3):  # killed a quarter, half and three quarters of the way
        worker = start_worker(eos, "transactions")
        workers.append(worker)
        read_topic(
            eos,
            eos.topics.predictions,
            lambda r, k=kill: len(_ids(r)) >= k * n // 4,  # type: ignore[misc]
            timeout_s=180,
            isolation=COMMITTED,
        )
        worker.kill()
        assert worker.proc.returncode == -9
    last = start_worker(eos, "transactions")
    workers.append(last)
    predictions = read_topic(
        eos,
        eos.topics.predictions,
        lambda r: _ids(r) >= expected,
        timeout_s=240,
        isolation=COMMITTED,
    )
    seen = Counter(p["event_id"] for p in predictions)
    assert set(seen) == expected, f"{len(expected - set(seen))} never predicted"
    # Give a straggling duplicate time to show: read the topic again, from the start.
    again = read_topic(
        eos, eos.topics.predictions, lambda r: False, timeout_s=5, isolation=COMMITTED
    )
    twice = {k: c for k, c in Counter(p["event_id"] for p in again).items() if c > 1}
    assert not twice, f"{len(twice)} predictions seen more than once, e.g. {list(twice)[:5]}"
    assert len(again) == n
    # Read uncommitted, the aborted transactions of the killed workers show (a test that
    # would pass without transactions would not be one).
    raw = read_topic(eos, eos.topics.predictions, lambda r: False, timeout_s=5)
    assert len(raw) >= n
    for topic in (eos.topics.alerts, eos.topics.dead_letters):
        records = read_topic(eos, topic, lambda r: False, timeout_s=3, isolation=COMMITTED)
        keys = Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)
        assert all(c == 1 for c in keys.values()), f"a record of {topic} seen twice"
    # The customer features (their windows restored from the changelog after each kill)
    # equal the batch replay's.
    replay = replay_features(table.drop_columns(["is_fraud"]))
    by_id = {p["event_id"]: p["features"] for p in again}
    label_free = [i for i, name in enumerate(FEATURE_NAMES) if not name.startswith("TERMINAL")]
    for row, tx_id in zip(replay.tolist(), table.column("tx_id").to_pylist(), strict=True):
        got = by_id[str(tx_id)]
        assert [got[FEATURE_NAMES[i]] for i in label_free] == [
            round(row[i], 6) for i in label_free
        ], tx_id
    for worker in workers:
        log = worker.log.read_text(errors="replace")
        assert "outside a transaction" not in log
