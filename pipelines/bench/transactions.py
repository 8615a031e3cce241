"""``streamwise bench``: what a pipeline costs against the broker's own speed, in one run.

Everything goes through the real broker, on topics, consumer groups and a state folder of
its own (``bench-<8 hex>``, deleted at the end), so it runs beside a live deployment:

1. *Produce*: ``warm_days`` of simulated history (by default the whole state horizon: label
   delay, longest window and grace, 38 days at the default settings) are pre-loaded into the
   run's transactions topic with aiokafka, and between them, on its labels topic, the label
   of every payment whose label is due (``LABEL_DELAY_DAYS`` after it): in steady state
   about one label a payment, which the worker joins to the scored features and the learner
   learns, so the measure includes learning. The rate says how fast this machine and broker
   take a load at all. The measured transactions, the days that follow, are pre-loaded into
   a topic of the passthrough's own.
2. *Raw passthrough*: an aiokafka consumer and producer copy the measured records, value
   unchanged, to another topic. No decoding, no state, no scoring: roughly the most a Python
   consumer that also produces can do here, hence the baseline the pipeline is compared with.
   It runs once before the worker and once after it (step 4), and the baseline is the mean
   of the two, so that a host that slows down or speeds up during the run (a shared virtual
   machine can change by half within an hour) does not tilt the ratio one way.
3. *Pipeline worker*: the real ``streamwise worker`` subprocess (Faust, RocksDB state, batch
   scoring, the learner) processes the history, so that every customer's and terminal's
   window is as full as it stays in production. Once it has predicted all of it and learned
   its labels, the measured transactions and the labels due among them are published at
   once, as a backlog; the throughput is the transactions over the time from the first send
   to the last prediction (Kafka timestamps), or to when the scorer had handled the labels
   sent and the learner had learned every example the scorer sent it (the worker's
   metrics, polled every 50 ms), if that came later, so that every stage's work on them,
   and nothing else, falls in it.
   (Taking the first and last prediction instead let the first stage's lead over the
   second, 10,000-30,000 payments, fall outside the window. Without history,
   ``--warm-days 0``, the measured load is pre-loaded and that is what is measured.)
   Its peak RSS and its CPU time (all its threads) are sampled while it runs; the CPU over
   the same span gives the CPU a payment (and its label) costs and how busy the worker was
   (near 100 % of one core: the worker, not the broker, sets the rate). With ``--learner
   separate`` the worker leaves its learner out and a ``fraud-learner`` process runs beside
   it: the learned count comes from that process's metrics, and its CPU and RSS are
   reported apart. The predictions are
   read with aiokafka, whose record parsing is in C, so the reader takes little of the cores
   the worker runs on.
4. *Latency*: with that worker still running, more transactions (and their due labels) are
   published at half its measured throughput; latency is the prediction's timestamp minus
   the send timestamp. The worker's CPU over that load says how busy half its rate keeps it.
5. *Naive*: a second worker with micro-batches of one event (one table update, one scoring
   call, one ack per event) on a smaller copy of the load, to show what batching buys. It
   starts from empty state (a history would take it an hour), which flatters it.

A fixed pure-Python loop is timed just before each passthrough (:func:`host_reference_us`):
how fast Python runs on this host at that moment (other load on it included), to compare
runs taken on other days or machines, and a warning when it changed during the run. With
``--pin-cpu N`` both workers run on CPU ``N`` alone (all their threads) and a
:class:`HostProbe` times the same loop on that CPU every half second, in CPU time: its
readings over each measured span say how fast the worker's own core was meanwhile (a
virtual machine's cores change speed independently and within seconds).

The numbers describe one run on one machine with the broker on the same host; they are a
comparison between the ways of consuming, not a capacity promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipelines.kafka.admin import TopicSpec, client_config, create_topics, topic_specs
from pipelines.settings import Settings

__all__ = [
    "BenchError",
    "format_report",
    "host_drift",
    "host_reference_us",
    "isolated_settings",
    "run_bench",
]

_TX_PER_DAY = 9_700  # simulator default population: about 9,700 transactions a day
_LATENCY_SECONDS = 20.0  # how long the paced latency load lasts at most
_STOP_GRACE_S = 20.0
_RSS_INTERVAL_S = 0.1
# Waits give up after max(120 s, events / floor): generous against the rates seen so far.
_FLOOR_RATE = 200.0
_NAIVE_FLOOR_RATE = 50.0
_LEARNED_METRIC = "streamwise_learner_examples"
_EXAMPLES_METRIC = "streamwise_training_examples_total"
_LEARN_POLL_S = 0.05
_MIB = 1024 * 1024
_REPO = Path(__file__).resolve().parents[2]
_WORKER_CMD = "from pipelines.cli.main import main; main()"


def pinned(cpu: int | None, program: str) -> str:
    """A ``python -c`` ``program`` that first pins itself to ``cpu`` (``None``: as is), before
    it starts a thread: every thread it starts inherits the CPU."""
    if cpu is None:
        return program
    return f"import os; os.sched_setaffinity(0, {{{int(cpu)}}}); {program}"


Row = tuple[int, bytes, bytes]  # (tx_id, key, value)
Item = tuple[str, int, bytes, bytes]  # (kind: "tx" or "label", tx_id, key, value)


class BenchError(RuntimeError):
    """A bench step did not complete; the message says which and why."""


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- settings
def _child_env(settings: Settings) -> dict[str, str]:
    prefix = str(settings.model_config.get("env_prefix") or "").upper()
    env = {k: v for k, v in os.environ.items() if not (prefix and k.upper().startswith(prefix))}
    env.update(settings.to_env())
    return env


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def isolated_settings(settings: Settings, prefix: str, home: Path, **worker: Any) -> Settings:
    """``settings`` with every topic, the app prefix, the web port and home made private."""
    topics = settings.topics
    names = {k: f"{prefix}-{v}" for k, v in topics.model_dump().items() if isinstance(v, str)}
    worker_update = {"web_port": _free_port(settings.worker.web_host), **worker}
    return settings.model_copy(
        update={
            "app_prefix": prefix,
            "home": home.resolve(),
            "topics": topics.model_copy(update=names),
            "worker": settings.worker.model_copy(update=worker_update),
        }
    )


# --------------------------------------------------------------------------- topics
def _create_topics(settings: Settings, extra: Sequence[str] = ()) -> None:
    specs = topic_specs(settings)
    like = specs[0]
    specs += [TopicSpec(name, like.partitions, like.config, "bench") for name in extra]
    create_topics(settings, specs)


def _delete_topics(settings: Settings, run_id: str) -> None:
    """Delete every topic and consumer group of this run (best effort)."""
    from kafka import KafkaAdminClient

    admin: Any = None
    try:
        admin = KafkaAdminClient(**client_config(settings), client_id=f"{run_id}-admin")
        mine = sorted(t for t in admin.list_topics() if t.startswith(f"{run_id}-"))
        if mine:
            admin.delete_topics(mine, timeout_ms=30_000)
        groups = [str(g.get("group_id", "")) for g in admin.list_groups()]
        own = [g for g in groups if g.startswith(f"{run_id}-")]
        if own:
            admin.delete_groups(own)
        _say(f"deleted {len(mine)} topics and {len(own)} consumer groups of {run_id}")
    except Exception as exc:  # cleanup must not hide the result or the real error
        _say(f"could not delete all topics of {run_id}: {type(exc).__name__}: {exc}")
    finally:
        if admin is not None:
            admin.close()


# --------------------------------------------------------------------------- load


@contextlib.contextmanager
def run_scope(settings: Settings, run_id: str, base: Path) -> Iterator[None]:
    """Delete the run's topics afterwards; keep its folder (worker logs) only if it failed."""
    try:
        yield
    except BaseException:
        _say(f"kept {base} (worker logs) for inspection")
        raise
    else:
        shutil.rmtree(base, ignore_errors=True)
    finally:
        _delete_topics(settings, run_id)


def _reference_work() -> int:
    """A fixed piece of pure Python: int dict stores and lookups, list appends, a sum."""
    table: dict[int, int] = {}
    out: list[int] = []
    for i in range(20_000):
        table[i * 7919 % 10_007] = i
        out.append(table.get(i % 10_007, 0))
    return sum(out)


def host_reference_us(repeat: int = 20) -> float:
    """Microseconds this host takes for :func:`_reference_work`, the best of ``repeat``: lower
    is faster. It does not touch the project's code, so it only changes with the host."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        _reference_work()
        best = min(best, time.perf_counter() - started)
    return best * 1e6


_PROBE_EVERY_S = 0.5
# The probe times the loop in CPU time, not wall time: on the worker's core it is sometimes
# preempted by the worker, which must not count as a slower host.
_PROBE_CMD = """\
import sys, time
from pipelines.bench.transactions import _reference_work
every = float(sys.argv[1])
while True:
    at, started = time.time(), time.thread_time()
    _reference_work()
    print(f"{at:.3f} {(time.thread_time() - started) * 1e6:.0f}", flush=True)
    time.sleep(every)
"""


class HostProbe:
    """The host reference loop (:func:`_reference_work`) timed every ``every`` seconds by a
    process pinned to ``cpu``: how fast Python ran on that core, moment by moment, at about
    1 % of the core (a loop of 3-8 ms each half second).

    A virtual machine's cores change speed independently and within seconds (the loop alone
    on an idle core of this project's 2-CPU machine took 3,300-10,000 µs from one second to
    the next, and the two cores' timings correlated at 0.26), so only a probe on the core the
    worker runs on says how fast that worker's core was while it was measured."""

    def __init__(self, cpu: int, every: float = _PROBE_EVERY_S) -> None:
        self.cpu = cpu
        self.samples: list[tuple[float, float]] = []  # (epoch s at the loop's start, µs)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(  # fixed argv, no shell
            [sys.executable, "-c", pinned(cpu, _PROBE_CMD), str(every)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=_REPO,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, name="bench-probe", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, us = line.split()
            with self._lock:
                self.samples.append((float(at), float(us)))

    def between(self, start_s: float, end_s: float) -> dict[str, Any]:
        """The loops started between ``start_s`` and ``end_s`` (epoch s): their mean, median
        and spread (10th, 90th percentile) in µs, how many, and each (``us``, in order); NaN
        without any. Loops come at even intervals: the mean is the core's average slowness
        over the span."""
        with self._lock:
            inside = [us for at, us in self.samples if start_s <= at <= end_s]
        if not inside:
            nan = math.nan
            return {"mean_us": nan, "median_us": nan, "p10_us": nan, "p90_us": nan, "loops": 0}
        p10, median, p90 = np.percentile(inside, [10, 50, 90]).tolist()
        return {
            "mean_us": float(np.mean(inside)),
            "median_us": median,
            "p10_us": p10,
            "p90_us": p90,
            "loops": len(inside),
            "us": inside,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self._thread.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (and its children, unless pinned elsewhere)."""
    return set(os.sched_getaffinity(0))


def check_cpu(cpu: int) -> None:
    """Raise ``ValueError`` unless this process may run on ``cpu`` (``--pin-cpu``)."""
    cpus = sorted(usable_cpus())
    if cpu not in cpus:
        raise ValueError(f"CPU {cpu} is not one of {', '.join(map(str, cpus))}")


#: Above this relative change of the host reference or of the passthrough from the round
#: before the worker to the round after it, the report says the host's speed changed.
_DRIFT = 0.15


def host_drift(before: float, after: float) -> float:
    """The relative change from ``before`` to ``after`` (0.2: 20 % more); NaN if unknown."""
    if not before > 0 or not after > 0:
        return math.nan
    return after / before - 1.0


def machine_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def detail_lines(details: Sequence[tuple[str, str]]) -> list[str]:
    """``label  value`` rows, labels padded to one width, framed by blank lines."""
    width = max(len(label) for label, _ in details)
    return ["", *(f"  {label:<{width}}  {value}" for label, value in details), ""]


def _simulated_load(count: int, label_delay: timedelta) -> list[Item]:
    """The first ``count`` simulated transactions, JSON-encoded, in event-time order, and
    between them the label of every earlier one whose label time (``label_delay`` after it)
    has come, as a bank's label feed delivers them: in steady state about one label a
    payment, each joined to its scored features and learned."""
    from pipelines.fraud.produce import encoded_rows
    from processors.fraud.simulator import SimulationConfig, simulate

    days = math.ceil(count * 1.1 / _TX_PER_DAY) + 1
    table = simulate(SimulationConfig(customers=5000, terminals=10000, days=days, seed=7))
    if table.num_rows < count:
        raise BenchError(f"the simulator made {table.num_rows} rows in {days} days, not {count}")
    items: list[Item] = []
    txs = 0
    for kind, key, value in encoded_rows(table.slice(0, count), label_delay):
        if kind == "tx":
            txs += 1
        elif txs == count:
            break  # labels due after the last payment
        tx_id = int(orjson.loads(value)["tx_id"])
        # A right-sized copy: orjson (3.12 and later) returns bytes with about 4 KB allocated
        # whatever their length, and a load keeps ~900,000 of them (3.9 GB of RSS, not 0.5).
        items.append((kind, tx_id, key, memoryview(value).tobytes()))
    return items


def split_load(items: Sequence[Item], *bounds: int) -> list[list[Item]]:
    """``items`` cut after the ``bounds[0]``-th, ``bounds[1]``-th, ... transaction (counted
    from the start): a label goes with the transaction that follows it."""
    parts: list[list[Item]] = [[]]
    ends = iter(bounds)
    end = next(ends, None)
    txs = 0
    for item in items:
        while end is not None and txs == end:
            parts.append([])
            end = next(ends, None)
        parts[-1].append(item)
        txs += item[0] == "tx"
    parts += [[] for _ in range(len(bounds) + 1 - len(parts))]
    return parts


def transactions(items: Sequence[Item]) -> list[Row]:
    """The transactions of a load, as ``(tx_id, key, value)``."""
    return [(tx_id, key, value) for kind, tx_id, key, value in items if kind == "tx"]


def label_count(items: Sequence[Item]) -> int:
    return sum(kind == "label" for kind, *_ in items)


def labels_of(items: Sequence[Item], tx_ids: set[int]) -> tuple[list[Item], list[Item]]:
    """``items`` without the labels of transactions not in ``tx_ids``, and those labels.

    A label is published only once its transaction has been predicted, as in production,
    where it comes a week later. Published together, the labels topic runs ahead of the
    transactions (the worker reads its topics independently, and routing a label costs far
    less than scoring a payment), and the scorer holds each such label with its terminal
    until the payment arrives (``early``): correct, but not the steady state measured."""
    now: list[Item] = []
    later: list[Item] = []
    for item in items:
        (later if item[0] == "label" and item[1] not in tx_ids else now).append(item)
    return now, later


def _topics_of(settings: Settings) -> dict[str, str]:
    """Where each kind of item of a load is published."""
    return {"tx": settings.topics.transactions, "label": settings.topics.transaction_labels}


def _preload(settings: Settings, topics: dict[str, str], items: Sequence[Item]) -> float:
    """Publish ``items`` as fast as the broker takes them; return transactions per second."""
    return asyncio.run(_send_rows(settings, topics, items, None, "preload"))[1]


async def _send_rows(
    settings: Settings,
    topics: dict[str, str],
    items: Sequence[Item],
    rate: float | None,
    name: str,
) -> tuple[dict[str, int], float]:
    """Publish ``items``, each to the topic of its kind (at ``rate`` transactions per second,
    the labels between them in their order, or at once); return the send time (epoch ms, also
    the record's timestamp) per transaction id and the rate of transactions reached.

    aiokafka, not kafka-python: its record batches are built in C. kafka-python's producer
    took about half a core at 5,000 records/s, beside the worker being measured.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **client_config(settings),
        client_id=f"{settings.app_prefix}-{name}",
        acks="all",
        linger_ms=5 if rate else 20,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    sent: dict[str, int] = {}
    txs = len(items) - label_count(items)
    item_rate = None if rate is None else rate * len(items) / max(txs, 1)
    try:
        deliveries: list[asyncio.Future[Any]] = []
        started = time.perf_counter()
        i = 0
        while i < len(items):
            # Paced: every item that is due by now goes out with the time it went; then sleep
            # until the next one is due.
            # (`due` never falls: the clock is monotonic.)
            due = (
                len(items)
                if item_rate is None
                else int((time.perf_counter() - started) * item_rate) + 1
            )
            end = min(due, len(items))
            now_ms = time.time_ns() // 1_000_000
            for kind, tx_id, key, value in items[i:end]:
                topic = topics[kind]
                deliveries.append(await producer.send(topic, value, key, timestamp_ms=now_ms))
                if kind == "tx":
                    sent[str(tx_id)] = now_ms
            i = end
            if item_rate is not None and i < len(items):
                await asyncio.sleep(max(0.0, started + i / item_rate - time.perf_counter()))
        await producer.flush()
        await asyncio.gather(*deliveries)
        return sent, txs / (time.perf_counter() - started)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- passthrough
async def _passthrough_async(
    settings: Settings, source: str, sink: str, events: int, timeout_s: float, group: str
) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    config = client_config(settings)
    consumer = AIOKafkaConsumer(
        source,
        **config,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(**config, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        deadline = time.monotonic() + timeout_s
        started: float | None = None
        seen = 0
        deliveries: list[asyncio.Future[Any]] = []
        while seen < events:
            if time.monotonic() > deadline:
                raise BenchError(f"passthrough read {seen} of {events} records in {timeout_s} s")
            batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batches.values():
                if records and started is None:
                    started = time.perf_counter()
                for record in records:
                    deliveries.append(await producer.send(sink, value=record.value, key=record.key))
                seen += len(records)
        await producer.flush()
        await asyncio.gather(*deliveries)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        await consumer.commit()
        return events / elapsed
    finally:
        await consumer.stop()
        await producer.stop()


def _passthrough(
    settings: Settings, source: str, sink: str, events: int, round_: str
) -> tuple[float, float]:
    """Copy ``events`` records of ``source`` to ``sink`` from the start, in a consumer group
    of its own for each ``round_``: records a second, and the host reference
    (:func:`host_reference_us`) timed just before, on the same state of the host."""
    reference_us = host_reference_us()
    timeout_s = _timeout(events)
    group = f"{settings.app_prefix}-passthrough-{round_}"
    rate = asyncio.run(_passthrough_async(settings, source, sink, events, timeout_s, group))
    return rate, reference_us


# --------------------------------------------------------------------------- worker
def cpu_between(samples: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds used between two times, interpolated from ``(time, CPU used so far)``
    samples in time order; NaN with fewer than two samples."""
    if len(samples) < 2:
        return math.nan
    times = [t for t, _ in samples]
    used = [c for _, c in samples]
    return float(np.interp(end, times, used) - np.interp(start, times, used))


class WorkerProcess:
    """One ``streamwise worker`` subprocess with its log and a peak-RSS sampler."""

    def __init__(self, settings: Settings, pipeline: str, cpu: int | None = None) -> None:
        self.settings = settings
        self.log = settings.home / "worker.log"
        self.peak_rss = 0
        self.cpu: list[tuple[float, float]] = []  # (epoch s, CPU s used so far), sampled
        self._done = threading.Event()
        settings.home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", pinned(cpu, _WORKER_CMD), "worker", pipeline]
        self.started = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # fixed argv, no shell
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_child_env(settings),
                cwd=_REPO,
            )
        self._sampler = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._sampler.start()
        # With a separate learner (``--learner separate``): its process, whose metrics say
        # what it learned; stopped with this one.
        self.learner: WorkerProcess | None = None

    def _sample(self) -> None:
        import psutil  # type: ignore[import-untyped]

        try:
            root = psutil.Process(self.proc.pid)
            while not self._done.is_set():
                procs = [root, *root.children(recursive=True)]
                rss = 0
                cpu = 0.0
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += int(proc.memory_info().rss)
                        times = proc.cpu_times()
                        cpu += times.user + times.system
                self.peak_rss = max(self.peak_rss, rss)
                self.cpu.append((time.time(), cpu))
                self._done.wait(_RSS_INTERVAL_S)
        except psutil.Error:
            return

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the worker used between two epoch times (from the samples)."""
        return cpu_between(list(self.cpu), start, end)

    def busy(self, start: float, end: float) -> float:
        """The share of one core it used between ``start`` and ``end`` (epoch s)."""
        return self.cpu_between(start, end) / max(end - start, 1e-3)

    def label_counts(self) -> tuple[int, int, int]:
        """From the worker's metrics: labels the scorer has handled (whatever became of
        them), examples it sent to the learner, and examples the learner has learned (all 0
        before the first)."""
        conf = self.settings.worker
        url = f"http://{conf.web_host}:{conf.web_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return 0, 0, 0  # not serving yet
        counts = {"streamwise_labels_total": 0, _EXAMPLES_METRIC: 0, _LEARNED_METRIC: 0}
        for line in text.splitlines():
            name = line.split("{", 1)[0]
            if name in counts and 'step="' in line:
                counts[name] += int(float(line.rsplit(" ", 1)[1]))
        return tuple(counts.values())  # type: ignore[return-value]

    def wait_labels(self, expected: int, timeout_s: float) -> tuple[int, float | None]:
        """Poll until the scorer has handled ``expected`` labels and the learner has learned
        every example sent to it; return the learned count and when that was (epoch s), or
        ``None`` for the time if it already was at the first look."""
        deadline = time.monotonic() + timeout_s
        first = True
        while True:
            labels, examples, learned = self.label_counts()
            if self.learner is not None:
                learned = self.learner.label_counts()[2]
                self.learner.check_alive()
            if labels >= expected and learned >= examples:
                return learned, None if first else time.time()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"after {timeout_s:.0f} s the scorer had handled {labels} of {expected} "
                    f"labels and the learner learned {learned} of {examples} examples; worker "
                    f"log tail:\n{self.log_tail()}"
                )
            self.check_alive()
            first = False
            time.sleep(_LEARN_POLL_S)

    def check_alive(self) -> None:
        """Raise with the log's tail if the worker has exited."""
        if self.proc.poll() is not None:
            raise BenchError(
                f"worker {self.settings.app_prefix} exited with {self.proc.returncode}:\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period (its learner's process too); idempotent."""
        if self.learner is not None:
            self.learner.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _say(f"worker {self.proc.pid} ignored SIGTERM for {_STOP_GRACE_S} s; killing it")
                self.proc.kill()
                self.proc.wait()
        self._done.set()
        self._sampler.join()


# --------------------------------------------------------------------------- predictions
class PredictionReader:
    """Reads a predictions topic in a thread: first Kafka timestamp (ms) per ``event_id``."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.first_ms: dict[str, int] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except Exception as exc:
            self._fail(exc)

    async def _read(self) -> None:
        # aiokafka, not kafka-python: its record batches are parsed in C. kafka-python's pure
        # Python parsing took about three quarters of a core at 6,000 predictions/s, on the
        # same cores as the worker it measures.
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            **client_config(self.settings),
            client_id=f"{self.settings.app_prefix}-reader",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            parts = range(self.settings.topics.partitions)
            consumer.assign([TopicPartition(self.topic, p) for p in parts])
            await consumer.seek_to_beginning()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
                seen = [
                    (str(orjson.loads(r.value)["event_id"]), int(r.timestamp))
                    for records in batches.values()
                    for r in records
                    if r.value is not None
                ]
                if seen:
                    with self._changed:
                        for event_id, ms in seen:
                            self.first_ms[event_id] = min(ms, self.first_ms.get(event_id, ms))
                        self._changed.notify_all()
        finally:
            await consumer.stop()

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            self._error = exc
            self._changed.notify_all()

    def wait_for(self, count: int, worker: WorkerProcess, timeout_s: float) -> dict[str, int]:
        """Block until ``count`` distinct events have a prediction; return a snapshot."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.first_ms) < count:
                if self._error is not None:
                    raise BenchError(f"reading {self.topic} failed: {self._error!r}")
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{len(self.first_ms)} of {count} predictions on {self.topic} after "
                        f"{timeout_s:.0f} s; worker log tail:\n{worker.log_tail()}"
                    )
                self._changed.wait(0.5)
            return dict(self.first_ms)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _throughput(stamps: Sequence[int]) -> tuple[float, int]:
    """(events/s between the first and last timestamp, the last timestamp in ms)."""
    first, last = min(stamps), max(stamps)
    return (len(stamps) - 1) / max((last - first) / 1000, 1e-3), last


def _timeout(events: int, floor_rate: float = _FLOOR_RATE) -> float:
    return max(120.0, events / floor_rate)


def _measure_worker(
    settings: Settings,
    pipeline: str,
    items: Sequence[Item],
    floor_rate: float = _FLOOR_RATE,
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
        firsts = reader.wait_for(len(rows), worker, _timeout(len(rows), floor_rate))
        if backlog:
            if labels_after:
                _say(f"history predicted; {len(labels_after):,} labels of it")
                asyncio.run(
                    _send_rows(settings, _topics_of(settings), labels_after, None, "labels")
                )
            wanted = labels + len(labels_after)
            before, _ = worker.wait_labels(wanted, _timeout(wanted, floor_rate))
            _say(f"history's labels handled, {before:,} learned")
            sent, _ = asyncio.run(
                _send_rows(settings, _topics_of(settings), backlog, None, "backlog")
            )
            total = len(rows) + len(transactions(backlog))
            rows, labels = transactions(backlog), label_count(backlog)
            firsts = reader.wait_for(total, worker, _timeout(len(rows)))
            labels += wanted  # the scorer's count runs from the worker's start
        learned, learned_s = worker.wait_labels(labels, _timeout(labels, floor_rate))
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
            "peak_rss_mib": worker.learner.peak_rss / _MIB,
        }
    return worker, reader, result


def learner_settings(settings: Settings) -> Settings:
    """The settings of a ``fraud-learner`` process beside the worker of ``settings``: the
    same topics and prefix, its own web port and home (log, state folder)."""
    port = _free_port(settings.worker.web_host)
    return settings.model_copy(
        update={
            "home": settings.home / "learner",
            "worker": settings.worker.model_copy(update={"web_port": port}),
        }
    )


# --------------------------------------------------------------------------- latency
def _paced_send(
    settings: Settings, items: Sequence[Item], rate: float
) -> tuple[dict[str, int], float]:
    """Publish ``items`` at ``rate`` transactions per second; return send ms per transaction
    id and the rate."""
    return asyncio.run(_send_rows(settings, _topics_of(settings), items, rate, "paced"))


def _measure_latency(
    settings: Settings,
    worker: WorkerProcess,
    reader: PredictionReader,
    items: Sequence[Item],
    rate: float,
    probe: HostProbe | None = None,
) -> dict[str, Any]:
    rows = transactions(items)
    _say(f"latency: {len(rows):,} transactions ({label_count(items):,} labels) at {rate:,.0f}/s")
    total = len(reader.first_ms) + len(rows)
    sent, actual_rate = _paced_send(settings, items, rate)
    firsts = reader.wait_for(total, worker, _timeout(len(rows)))
    latencies = np.array([firsts[tx] - ms for tx, ms in sent.items()], dtype=np.float64)
    p50, p99 = np.percentile(latencies, [50, 99]).tolist()
    start_s = min(sent.values()) / 1000
    end_s = max(firsts[tx] for tx in sent) / 1000
    result: dict[str, Any] = {
        "rate": actual_rate,
        "events": len(rows),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(latencies.max()),
        # Near 100 % here means half the backlog rate already saturates the worker at the
        # smaller batches a paced load forms, and the latency is mostly queueing.
        "cpu_busy": worker.busy(start_s, end_s),
    }
    if probe is not None:
        result["host_probe"] = probe.between(start_s, end_s)
    return result


# --------------------------------------------------------------------------- run
def _kafka_version(settings: Settings) -> str | None:
    if not settings.uses_local_broker:
        return None
    from pipelines.kafka.broker import LocalBroker

    return LocalBroker(settings).version()


def _ensure_broker(settings: Settings) -> None:
    if settings.uses_local_broker:
        from pipelines.kafka.broker import LocalBroker

        LocalBroker(settings).start()


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def state_horizon_days(settings: Settings) -> int:
    """Days of history after which a terminal's window is as full as it gets: the label
    delay, the longest window and the grace period."""
    from processors.fraud.windows import DAY_MS

    return math.ceil(settings.transactions.features.terminal_horizon_ms / DAY_MS)


def run_bench(
    settings: Settings,
    pipeline: str = "transactions",
    events: int = 100_000,
    warm_days: int | None = None,
    learner: str = "inline",
    pin_cpu: int | None = None,
) -> dict[str, Any]:
    """Run every step described in the module docstring once; return the results.

    ``warm_days`` of history (default: :func:`state_horizon_days`) go through the worker
    before the measured ``events``. ``learner="separate"`` runs the pipeline worker without
    its learner and a ``fraud-learner`` process beside it (the naive worker keeps its own).
    ``pin_cpu`` runs both workers on that CPU alone (all their threads; a separate learner
    is not pinned) with a :class:`HostProbe` on it, whose readings go into the results.
    """
    if pipeline != "transactions":
        raise ValueError(f"no bench for pipeline {pipeline!r}")
    if learner not in ("inline", "separate"):
        raise ValueError(f"learner must be 'inline' or 'separate', not {learner!r}")
    if events < 2:
        raise ValueError("events must be at least 2")
    if warm_days is None:
        warm_days = state_horizon_days(settings)
    if warm_days < 0:
        raise ValueError("warm_days must not be negative")
    if pin_cpu is not None:
        check_cpu(pin_cpu)
    warm = warm_days * _TX_PER_DAY
    _ensure_broker(settings)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    base = (settings.home / "bench" / run_id).resolve()
    main = isolated_settings(settings, run_id, base / "pipeline")
    main = main.model_copy(
        update={"transactions": main.transactions.model_copy(update={"learner": learner})}
    )
    naive = isolated_settings(settings, f"{run_id}-naive", base / "naive", batch_size=1)
    passthrough_in, passthrough_out = f"{run_id}-passthrough-in", f"{run_id}-passthrough-out"
    naive_events = min(events, max(1000, events // 10))
    _say(f"run {run_id}: {events:,} events, state in {base}")
    with run_scope(settings, run_id, base), contextlib.ExitStack() as stack:
        probe = None
        if pin_cpu is not None:
            probe = HostProbe(pin_cpu)
            stack.callback(probe.stop)
        _create_topics(main, [passthrough_in, passthrough_out])
        _create_topics(naive)
        delay = timedelta(milliseconds=main.transactions.label_delay_ms)
        load = _simulated_load(warm + events + events // 2, delay)
        history, backlog, spare = split_load(load, warm, warm + events)
        # Labels go out once their transactions are predicted (see labels_of): the history's
        # after it. The backlog's own labels that fall due within it (its first days, with
        # 80,000 events) are left out, so that every load carries its steady share of labels
        # (about one a payment), the latency load included.
        history, history_labels = labels_of(history, set())
        known = {tx_id for tx_id, _, _ in transactions(history)}
        backlog, _ = labels_of(backlog, known)
        known |= {tx_id for tx_id, _, _ in transactions(backlog)}
        spare, _ = labels_of(spare, known)
        passthrough_load, _ = labels_of(backlog, set())  # its transactions only
        produce_rate = _preload(main, {"tx": passthrough_in}, passthrough_load)
        if history:
            produce_rate = _preload(main, _topics_of(main), history)
            _say(f"pre-loaded {warm:,} transactions of history at {produce_rate:,.0f}/s")
        else:  # no history to wait for: measured from the first to the last prediction
            _preload(main, _topics_of(main), backlog)
        naive_load, _ = labels_of(split_load(load, naive_events)[0], set())
        _preload(naive, _topics_of(naive), naive_load)

        passthrough_before, reference_before = _passthrough(
            main, passthrough_in, passthrough_out, events, "before"
        )
        _say(f"raw passthrough: {passthrough_before:,.0f} events/s")

        _say(f"pipeline worker {main.app_prefix} (batch {main.worker.batch_size})")
        worker, reader, measured = (
            _measure_worker(
                main, pipeline, history, backlog=backlog, labels_after=history_labels, probe=probe
            )
            if history
            else _measure_worker(main, pipeline, backlog, probe=probe)
        )
        try:
            _say(
                f"pipeline worker: {measured['events_per_s']:,.0f} transactions/s, "
                f"{measured['learned']:,} of {measured['labels']:,} labels learned"
            )
            half = measured["events_per_s"] / 2
            count = max(1, min(events // 2, int(half * _LATENCY_SECONDS)))
            latency = _measure_latency(
                main, worker, reader, split_load(spare, count)[0], half, probe
            )
        finally:
            reader.close()
            worker.stop()
        measured["peak_rss_mib"] = worker.peak_rss / _MIB
        measured["batch_size"] = main.worker.batch_size
        _say(f"latency p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms")
        passthrough_after, reference_after = _passthrough(
            main, passthrough_in, passthrough_out, events, "after"
        )
        _say(f"raw passthrough again: {passthrough_after:,.0f} events/s")

        _say(f"naive worker {naive.app_prefix} (batch 1, {naive_events:,} events)")
        naive_worker, naive_reader, naive_measured = _measure_worker(
            naive, pipeline, naive_load, _NAIVE_FLOOR_RATE, probe=probe
        )
        naive_reader.close()
        naive_worker.stop()
        _say(f"naive worker: {naive_measured['events_per_s']:,.0f} events/s")

    passthrough_rate = (passthrough_before + passthrough_after) / 2
    worker_rate = float(measured["events_per_s"])
    naive_rate = float(naive_measured["events_per_s"])
    return {
        "pipeline": pipeline,
        "events": events,
        "warm": {"days": warm_days, "events": warm},
        "partitions": settings.topics.partitions,
        "kafka_version": _kafka_version(settings),
        "produce_rate": produce_rate,
        "passthrough": {
            "events_per_s": passthrough_rate,
            "before": passthrough_before,
            "after": passthrough_after,
        },
        "host_reference_us": {"before": reference_before, "after": reference_after},
        "learner": learner,
        "worker": measured,
        "naive": {
            "events": naive_events,
            "events_per_s": naive_rate,
            **({"host_probe": naive_measured["host_probe"]} if probe is not None else {}),
        },
        "pin_cpu": pin_cpu,
        "latency": latency,
        "ratios": {
            "worker_vs_passthrough": _ratio(worker_rate, passthrough_rate),
            "naive_vs_passthrough": _ratio(naive_rate, passthrough_rate),
            "worker_vs_naive": _ratio(worker_rate, naive_rate),
        },
        "machine": machine_info(),
    }


# --------------------------------------------------------------------------- report
def format_report(report: dict[str, Any]) -> str:
    """A readable, aligned table of ``run_bench``'s result."""
    w, n, lat, r = report["worker"], report["naive"], report["latency"], report["ratios"]
    m = report["machine"]
    warm = report.get("warm", {"days": 0, "events": 0})
    kafka = report["kafka_version"] or "(external cluster)"
    throughput = [
        ("produce (pre-load, aiokafka)", report["produce_rate"], None),
        ("raw passthrough (aiokafka)", report["passthrough"]["events_per_s"], 1.0),
        (
            f"pipeline worker (batch {w.get('batch_size', '?')})",
            w["events_per_s"],
            r["worker_vs_passthrough"],
        ),
        (
            f"naive worker (batch 1, {n['events']:,} events, empty state)",
            n["events_per_s"],
            r["naive_vs_passthrough"],
        ),
    ]
    width = max(len(label) for label, _, _ in throughput)
    lines = [
        f"streamwise bench: {report['pipeline']}, {report['events']:,} events after "
        f"{warm['days']} days of history ({warm['events']:,} events), "
        f"{report['partitions']} partitions, Kafka {kafka}",
        f"machine: {m['cpus']} CPUs, Python {m['python']}",
        "",
        f"  {'throughput':<{width}}  {'events/s':>10}  {'vs passthrough':>14}",
    ]
    for label, rate, ratio in throughput:
        shown = "" if ratio is None else f"{ratio:.2f}"
        lines.append(f"  {label:<{width}}  {rate:>10,.0f}  {shown:>14}")
    details = [
        ("pipeline worker vs naive", f"{r['worker_vs_naive']:.2f}x"),
        (
            "pipeline worker wall time",
            f"{w['wall_s']:,.1f} s (start, history included, to last prediction)",
        ),
        ("pipeline worker peak RSS", f"{w['peak_rss_mib']:,.1f} MiB (with children)"),
        (
            "pipeline worker CPU",
            f"{w['cpu_us_per_event']:,.0f} µs an event; busy {w['cpu_busy']:.0%} of one core "
            "(all threads, first send to last prediction)",
        ),
        *_label_lines(w),
        *_learner_lines(report),
        (
            "latency load",
            f"{lat['events']:,} events paced at {lat['rate']:,.0f}/s (half the worker's rate)",
        ),
        (
            "latency p50 / p99 / max",
            f"{lat['p50_ms']:,.0f} / {lat['p99_ms']:,.0f} / {lat['max_ms']:,.0f} ms",
        ),
        ("worker CPU under that load", f"busy {lat.get('cpu_busy', math.nan):.0%} of one core"),
    ]
    details += _host_lines(report)
    details += _probe_lines(report)
    lines += detail_lines(details)
    drifts = [
        host_drift(pair.get("before", math.nan), pair.get("after", math.nan))
        for pair in (report.get("host_reference_us", {}), report["passthrough"])
    ]
    if any(abs(d) > _DRIFT for d in drifts):
        lines.append(
            "The host's speed changed during this run (host reference or passthrough by more "
            f"than {_DRIFT:.0%} from before the worker to after it): compare it with care."
        )
    lines.append(
        "Numbers from one run on this machine (broker and bench on the same host); "
        "compare them, don't quote them."
    )
    return "\n".join(lines)


def _label_lines(worker: dict[str, Any]) -> list[tuple[str, str]]:
    """The labels that came with the measured payments, and how many the learner took."""
    if "labels" not in worker:
        return []
    after = worker.get("learning_after_s", 0.0)
    return [
        (
            "labels in the measured load",
            f"{worker['labels']:,} sent, {worker['learned']:,} learned "
            + (
                f"(the learner finished {after:.1f} s after the last prediction; the span "
                "runs to then)"
                if after > 0
                else "(by the last prediction)"
            ),
        )
    ]


def _learner_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the learner ran and what its process used, if it had one of its own."""
    own = report["worker"].get("learner_process")  # measured only for --learner separate
    if own is None:
        return []
    return [
        (
            "learner",
            "a process of its own (--learner separate): not in the worker's CPU or RSS",
        ),
        (
            "learner process",
            f"busy {own['cpu_busy']:.0%} of one core (first send to last prediction); "
            f"peak RSS {own['peak_rss_mib']:,.1f} MiB",
        ),
    ]


def _host_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The passthrough before and after the worker, and the host reference, if measured."""
    lines = []
    p = report["passthrough"]
    if "before" in p and "after" in p:
        lines.append(
            (
                "raw passthrough before / after",
                f"{p['before']:,.0f} / {p['after']:,.0f} events/s "
                "(the worker is compared with their mean)",
            )
        )
    ref = report.get("host_reference_us")
    if ref:
        lines.append(
            (
                "host reference",
                f"{ref['before']:,.0f} / {ref['after']:,.0f} µs before each passthrough "
                "(a fixed pure-Python loop, best of 20; lower is faster)",
            )
        )
    return lines


def _probe_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the workers were pinned, and how fast the host probe found that CPU meanwhile."""
    cpu = report.get("pin_cpu")
    if cpu is None:
        return []

    def reading(part: dict[str, Any]) -> str:
        probe = part.get("host_probe") or {}
        if not probe.get("loops"):
            return "no reading"
        return (
            f"mean {probe.get('mean_us', math.nan):,.0f} µs, median {probe['median_us']:,.0f} "
            f"({probe['p10_us']:,.0f}-{probe['p90_us']:,.0f}), {probe['loops']} loops"
        )

    lines = [
        ("workers pinned", f"to CPU {cpu}, all their threads (the bench and broker are not)"),
        (
            "host probe on that CPU",
            f"the reference loop's CPU time every {_PROBE_EVERY_S:g} s: mean, median (10th-90th "
            "percentile); lower is faster",
        ),
        ("  during the backlog", reading(report["worker"])),
        ("  under the latency load", reading(report["latency"])),
        ("  naive worker", reading(report["naive"])),
    ]
    return lines
