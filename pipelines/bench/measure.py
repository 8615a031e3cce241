"""The transactions worker measured over a load: throughput, then latency under a paced one.

Both read the worker's predictions (Kafka timestamps), its metrics (labels handled and
learned) and its CPU samples over the same span, so that every stage's work on the load, and
nothing else, falls in it (see :mod:`pipelines.bench.transactions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.bench.harness import FLOOR_RATE, MIB, free_port, say, timeout_for
from pipelines.bench.host import HostProbe
from pipelines.bench.load import Item, label_count, topics_of, transactions
from pipelines.bench.passthrough import send_items
from pipelines.bench.reader import PredictionReader
from pipelines.bench.worker_process import WorkerProcess
from pipelines.settings import Settings

__all__ = ["learner_settings", "measure_latency", "measure_worker"]


def learner_settings(settings: Settings) -> Settings:
    """The settings of a ``fraud-learner`` process beside the worker of ``settings``: the
    same topics and prefix, its own web port and home (log, state folder)."""
    port = free_port(settings.worker.web_host)
    return settings.model_copy(
        update={
            "home": settings.home / "learner",
            "worker": settings.worker.model_copy(update={"web_port": port}),
        }
    )


def measure_worker(
    settings: Settings,
    pipeline: str,
    items: Sequence[Item],
    floor_rate: float = FLOOR_RATE,
    backlog: Sequence[Item] = (),
    labels_after: Sequence[Item] = (),
    probe: HostProbe | None = None,
) -> tuple[WorkerProcess, PredictionReader, dict[str, Any]]:
    """Start a worker on pre-loaded ``items``; return it, its reader and its throughput.

    Without ``backlog``, over the transactions of ``items`` from their first to their last
    prediction. With it, ``items`` are the history that fills the worker's state: once its
    transactions are predicted, its labels (``labels_after``) are published and learned, then
    the ``backlog`` is published at once, and the throughput is over the time from its first
    send to its last prediction or, if the learner finishes later, to when it has learned the
    backlog's labels. With a ``probe``, the worker runs on the probe's CPU only, and the
    result has the probe's reading over the same span."""
    worker = WorkerProcess(settings, pipeline, None if probe is None else probe.cpu)
    if settings.transactions.learner == "separate":
        worker.learner = WorkerProcess(learner_settings(settings), "fraud-learner")
    reader = PredictionReader(settings, settings.topics.predictions)
    rows, labels = transactions(items), label_count(items)
    before = wanted = 0  # learned and labels before the measured load
    try:
        firsts = reader.wait_for(len(rows), worker, timeout_for(len(rows), floor_rate))
        if backlog:
            if labels_after:
                say(f"history predicted; {len(labels_after):,} labels of it")
                send_items(settings, topics_of(settings), labels_after, None, "labels")
            wanted = labels + len(labels_after)
            before, _ = worker.wait_labels(wanted, timeout_for(wanted, floor_rate))
            say(f"history's labels handled, {before:,} learned")
            sent, _ = send_items(settings, topics_of(settings), backlog, None, "backlog")
            total = len(rows) + len(transactions(backlog))
            rows, labels = transactions(backlog), label_count(backlog)
            firsts = reader.wait_for(total, worker, timeout_for(len(rows)))
            labels += wanted  # the scorer's count runs from the worker's start
        learned, learned_s = worker.wait_labels(labels, timeout_for(labels, floor_rate))
    except BaseException:
        reader.close()
        worker.stop()
        raise
    stamps = [firsts[str(tx_id)] for tx_id, _, _ in rows]
    if backlog:
        first_ms, last_ms = min(sent.values()), max(stamps)
    else:
        first_ms, last_ms = min(stamps), max(stamps)
    last_prediction_s = last_ms / 1000
    if learned_s is not None:
        last_ms = max(last_ms, round(learned_s * 1000))
    n = len(rows) - (0 if backlog else 1)
    rate = n / max((last_ms - first_ms) / 1000, 1e-3)
    first_s, last_s = first_ms / 1000, last_ms / 1000
    cpu_s = worker.cpu_between(first_s, last_s)
    result: dict[str, Any] = {
        "events_per_s": rate,
        "wall_s": last_s - worker.started,
        # CPU the worker spent per payment (its label's work included) while predictions
        # came out, and how busy it was: near 100 % of one core means the worker, not the
        # broker, sets the rate.
        "cpu_us_per_event": cpu_s / max(n, 1) * 1e6,
        "cpu_busy": worker.busy(first_s, last_s),
        "labels": labels - wanted,
        "learned": learned - before,
        "learning_after_s": max(0.0, last_s - last_prediction_s),
    }
    if probe is not None:
        result["host_probe"] = probe.between(first_s, last_s)
    if worker.learner is not None:  # its own process: not in the worker's CPU or RSS
        result["learner_process"] = {
            "cpu_busy": worker.learner.busy(first_s, last_s),
            "peak_rss_mib": worker.learner.peak_rss / MIB,
        }
    return worker, reader, result


def measure_latency(
    settings: Settings,
    worker: WorkerProcess,
    reader: PredictionReader,
    items: Sequence[Item],
    rate: float,
    probe: HostProbe | None = None,
) -> dict[str, Any]:
    """Publish ``items`` at ``rate`` transactions per second to a running worker; return the
    latency from each send to its prediction (its Kafka timestamp) and to when the reader
    received it (``visible_*``), and how busy the worker was meanwhile."""
    rows = transactions(items)
    say(f"latency: {len(rows):,} transactions ({label_count(items):,} labels) at {rate:,.0f}/s")
    total = len(reader.first_ms) + len(rows)
    sent, actual_rate = send_items(settings, topics_of(settings), items, rate, "paced")
    firsts = reader.wait_for(total, worker, timeout_for(len(rows)))
    latencies = np.array([firsts[tx] - ms for tx, ms in sent.items()], dtype=np.float64)
    p50, p99 = np.percentile(latencies, [50, 99]).tolist()
    # When a read_committed reader got it: under exactly_once after its transaction
    # committed, which the prediction's own timestamp (taken when it was sent) leaves out.
    seen = reader.seen()
    visible = np.array([seen[tx] - ms for tx, ms in sent.items()], dtype=np.float64)
    seen_p50, seen_p99 = np.percentile(visible, [50, 99]).tolist()
    start_s = min(sent.values()) / 1000
    end_s = max(firsts[tx] for tx in sent) / 1000
    result: dict[str, Any] = {
        "rate": actual_rate,
        "events": len(rows),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(latencies.max()),
        "visible_p50_ms": float(seen_p50),
        "visible_p99_ms": float(seen_p99),
        # Near 100 % here means half the backlog rate already saturates the worker at the
        # smaller batches a paced load forms, and the latency is mostly queueing.
        "cpu_busy": worker.busy(start_s, end_s),
    }
    if probe is not None:
        result["host_probe"] = probe.between(start_s, end_s)
    return result
