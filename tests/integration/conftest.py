"""A real Apache Kafka broker for the integration suite, and workers as real processes.

The session starts the project's own local broker (KRaft, loopback, on free ports so a
developer's broker and other test sessions are left alone) unless ``STREAMWISE_TEST_BROKER``
names a running one. Each test gets unique topics, consumer groups, state and web port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.bench.scrape import samples
from pipelines.bench.waiting import wait_until
from pipelines.kafka.admin import client_config, create_topics
from pipelines.kafka.broker import LocalBroker
from pipelines.settings import LocalBrokerSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker_settings() -> Iterator[Settings]:
    external = os.environ.get("STREAMWISE_TEST_BROKER")
    if external:
        yield Settings(broker=external)
        return
    port = _free_port()
    while (controller_port := _free_port()) == port:
        pass
    settings = Settings(
        home=ROOT / ".streamwise" / f"test-{os.getpid()}",
        local_broker=LocalBrokerSettings(port=port, controller_port=controller_port),
    )
    broker = LocalBroker(settings)
    broker.stop()
    shutil.rmtree(broker.data, ignore_errors=True)
    try:
        broker.start()
        yield settings
    finally:
        broker.stop()
        shutil.rmtree(settings.home, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(broker_settings: Settings, tmp_path: Path) -> Settings:
    """Settings with this test's own topics, app prefix, state and web port; topics created."""
    run = f"t{uuid.uuid4().hex[:8]}"
    topics = broker_settings.topics.model_copy(
        update={
            name: f"{run}-{getattr(broker_settings.topics, name)}"
            for name in (
                "transactions",
                "transaction_labels",
                "predictions",
                "alerts",
                "dead_letters",
                "model_metrics",
                "audio_chunks",
                "video_frames",
                "video_anonymized",
            )
        }
        | {"partitions": 3}
    )
    worker = broker_settings.worker.model_copy(
        update={"web_port": _free_port(), "batch_within_s": 0.1, "loglevel": "info"}
    )
    result = broker_settings.model_copy(
        update={"topics": topics, "worker": worker, "app_prefix": run, "home": tmp_path / "home"}
    )
    create_topics(result)
    return result


class Worker:
    """``streamwise worker PIPELINE`` as a child process with the test's settings."""

    def __init__(self, settings: Settings, pipeline: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWISE_")}
        env |= settings.to_env() | {"PYTHONUNBUFFERED": "1"}
        self.settings = settings
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli.main", "worker", pipeline],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _get(self, path: str) -> bytes | None:
        """A page of the worker's web server, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.settings.worker.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bytes(response.read())
        except OSError:
            return None

    def health(self) -> dict[str, Any] | None:
        page = self._get("/health")
        return None if page is None else dict(orjson.loads(page))

    def wait_assigned(self, topic: str, timeout_s: float = 90.0) -> None:
        def assigned() -> bool:
            assert self.proc.poll() is None, f"worker exited:\n{self.log_tail()}"
            health = self.health()
            return bool(health and any(f"topic='{topic}'" in tp for tp in health["assigned"]))

        wait_until(
            assigned,
            timeout_s,
            interval_s=0.3,
            what=lambda: f"worker never got {topic} assigned:\n{self.log_tail()}",
            error=AssertionError,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The log's last lines, after the worker's step counters (to tell where it stopped)."""
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        page = self._get("/metrics")
        if page is None:
            return tail
        wanted = ("streamwise_events", "streamwise_labels", "streamwise_learned")
        counters = [
            f"{s.name}{s.labels} {s.value}"
            for s in samples(page.decode())
            if s.name.startswith(wanted)
        ]
        return "\n".join(["worker counters:", *counters, "log tail:", tail])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings, str], Worker]]:
    workers: list[Worker] = []

    def start(settings: Settings, pipeline: str = "transactions") -> Worker:
        worker = Worker(settings, pipeline, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def read_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout_s: float = 90.0,
    isolation: str = "read_uncommitted",
) -> list[Any]:
    """Records of ``topic`` from the beginning (decoded JSON) until ``until`` holds; with
    ``isolation`` ``read_committed`` only those of committed transactions (and plain ones)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **client_config(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []

        def done() -> bool:
            if until(records):
                return True
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(orjson.loads(r.value) for r in batch)
            return False

        with contextlib.suppress(TimeoutError):  # the caller asserts on what came
            wait_until(done, timeout_s, interval_s=0.0)
        return records
    finally:
        consumer.close()


def publish_raw(
    settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**client_config(settings), acks="all")
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
