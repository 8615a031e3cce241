"""A ``streamwise worker`` as a child process of the bench: its log, CPU, RSS and metrics."""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import psutil  # type: ignore[import-untyped]  # psutil ships no type information

from pipelines.bench.harness import REPO, BenchError, child_env, say
from pipelines.bench.host import pinned
from pipelines.bench.scrape import metrics_page, sample_total
from pipelines.bench.waiting import wait_until
from pipelines.settings import Settings

__all__ = ["WorkerProcess", "cpu_between"]

_STOP_GRACE_S = 20.0
_SAMPLE_EVERY_S = 0.1
_LEARN_POLL_S = 0.05
_WORKER_CMD = "from pipelines.cli.main import main; main()"
_LABELS = "streamwise_labels_total"
_EXAMPLES = "streamwise_training_examples_total"
_LEARNED = "streamwise_learner_examples"


def cpu_between(samples: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds used between two times, interpolated from ``(time, CPU used so far)``
    samples in time order; NaN with fewer than two samples."""
    if len(samples) < 2:
        return math.nan
    times = [t for t, _ in samples]
    used = [c for _, c in samples]
    return float(np.interp(end, times, used) - np.interp(start, times, used))


class WorkerProcess:
    """One ``streamwise worker`` subprocess with its log and a peak-RSS and CPU sampler;
    with ``cpu``, it runs on that CPU alone, all its threads."""

    def __init__(self, settings: Settings, pipeline: str, cpu: int | None = None) -> None:
        self.settings = settings
        self.log = settings.home / "worker.log"
        self.peak_rss = 0
        self.cpu: list[tuple[float, float]] = []  # (epoch s, CPU s used so far), sampled
        self._done = threading.Event()
        settings.home.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # fixed argv, no shell
                [sys.executable, "-c", _WORKER_CMD, "worker", pipeline],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(settings),
                cwd=REPO,
                preexec_fn=pinned(cpu),
            )
        self._sampler = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._sampler.start()
        # With a separate learner (``--learner separate``): its process, whose metrics say
        # what it learned; stopped with this one.
        self.learner: WorkerProcess | None = None

    def _sample(self) -> None:
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
                self._done.wait(_SAMPLE_EVERY_S)
        except psutil.Error:
            return

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads) the worker's process has used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

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
        text = metrics_page(conf.web_host, conf.web_port)
        if text is None:
            return 0, 0, 0  # not serving yet
        labels, examples, learned = (
            int(sample_total(text, name, having=("step",)))
            for name in (_LABELS, _EXAMPLES, _LEARNED)
        )
        return labels, examples, learned

    def wait_labels(self, expected: int, timeout_s: float) -> tuple[int, float | None]:
        """Poll until the scorer has handled ``expected`` labels and the learner has learned
        every example sent to it; return the learned count and when that was (epoch s), or
        ``None`` for the time if it already was at the first look."""
        looks = 0
        last = (0, 0, 0)

        def done() -> tuple[int, float | None] | None:
            nonlocal looks, last
            looks += 1
            labels, examples, learned = self.label_counts()
            if self.learner is not None:
                learned = self.learner.label_counts()[2]
                self.learner.check_alive()
            last = (labels, examples, learned)
            if labels >= expected and learned >= examples:
                return learned, None if looks == 1 else time.time()
            self.check_alive()
            return None

        def timed_out() -> str:
            labels, examples, learned = last
            return (
                f"after {timeout_s:.0f} s the scorer had handled {labels} of {expected} "
                f"labels and the learner learned {learned} of {examples} examples; worker "
                f"log tail:\n{self.log_tail()}"
            )

        return wait_until(
            done, timeout_s, interval_s=_LEARN_POLL_S, what=timed_out, error=BenchError
        )

    def check_alive(self) -> None:
        """Raise with the log's tail if the worker has exited."""
        if self.proc.poll() is not None:
            raise BenchError(
                f"worker {self.settings.app_prefix} exited with {self.proc.returncode}:\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the worker's log."""
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
                say(f"worker {self.proc.pid} ignored SIGTERM for {_STOP_GRACE_S} s; killing it")
                self.proc.kill()
                self.proc.wait()
        self._done.set()
        self._sampler.join()
