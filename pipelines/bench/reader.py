"""The bench's view of a predictions topic: when each event was first predicted, and seen.

It reads ``read_committed``, as the outputs' consumers must (docs/operations.md, "Delivery
guarantees"): under ``exactly_once`` a prediction counts once its transaction committed, and
an aborted one never does; under ``at_least_once`` (no transactions) nothing changes.
"""

from __future__ import annotations

import threading
import time

import orjson

from pipelines.bench.harness import BenchError
from pipelines.bench.waiting import wait_until
from pipelines.bench.worker_process import WorkerProcess
from pipelines.kafka.bulk_io import read_from_start
from pipelines.kafka.compacted import ISOLATION_LEVEL
from pipelines.settings import Settings

__all__ = ["PredictionReader"]

Batch = list[tuple[bytes, int]]  # (value, Kafka timestamp ms)


class PredictionReader:
    """Reads a predictions topic in a thread: per ``event_id``, the first prediction's Kafka
    timestamp (ms, when the worker sent it) and when the reader first received it (epoch ms:
    under ``exactly_once``, after its transaction committed).

    It reads with :func:`pipelines.kafka.bulk_io.read_from_start` (record parsing in C), so
    the reader takes little of the cores the worker it measures runs on."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.first_ms: dict[str, int] = {}
        self.seen_ms: dict[str, int] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            read_from_start(
                self.settings,
                self.topic,
                self._add,
                self._stop.is_set,
                client_id=f"{self.settings.app_prefix}-reader",
                isolation_level=ISOLATION_LEVEL,
            )
        except Exception as exc:
            with self._changed:
                self._error = exc
                self._changed.notify_all()

    def _add(self, batch: Batch) -> None:
        now_ms = round(time.time() * 1000)
        seen = [(str(orjson.loads(value)["event_id"]), ms) for value, ms in batch]
        with self._changed:
            for event_id, ms in seen:
                self.first_ms[event_id] = min(ms, self.first_ms.get(event_id, ms))
                self.seen_ms.setdefault(event_id, now_ms)
            self._changed.notify_all()

    def wait_for(self, count: int, worker: WorkerProcess, timeout_s: float) -> dict[str, int]:
        """Block until ``count`` distinct events have a prediction; return a snapshot of
        their first timestamps."""

        def enough() -> bool:
            if len(self.first_ms) >= count:
                return True
            if self._error is not None:
                raise BenchError(f"reading {self.topic} failed: {self._error!r}")
            worker.check_alive()
            return False

        def timed_out() -> str:
            return (
                f"{len(self.first_ms)} of {count} predictions on {self.topic} after "
                f"{timeout_s:.0f} s; worker log tail:\n{worker.log_tail()}"
            )

        with self._changed:  # the wait releases it: a new batch wakes the check at once
            wait_until(
                enough,
                timeout_s,
                interval_s=0.5,
                what=timed_out,
                error=BenchError,
                pause=self._changed.wait,
            )
            return dict(self.first_ms)

    def seen(self) -> dict[str, int]:
        """A snapshot of when each event's prediction was first received (epoch ms)."""
        with self._changed:
            return dict(self.seen_ms)

    def close(self) -> None:
        """Stop reading (within 200 ms) and join the thread."""
        self._stop.set()
        self._thread.join()
