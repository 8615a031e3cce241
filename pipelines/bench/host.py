"""How fast the host runs Python, and on which CPUs the bench's processes run.

A fixed pure-Python loop (:func:`reference_work`) is timed before each passthrough, and
with ``--pin-cpu`` a :class:`HostProbe` times it every half second on the workers' CPU:
a shared virtual machine changes speed within the hour, and its cores independently.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pipelines.bench.harness import REPO

__all__ = [
    "DRIFT",
    "PROBE_EVERY_S",
    "HostProbe",
    "check_cpu",
    "host_drift",
    "host_reference_us",
    "machine_info",
    "on_cpu",
    "pinned",
    "reference_work",
    "usable_cpus",
]

PROBE_EVERY_S = 0.5
#: Above this relative change of the host reference or of the passthrough from the round
#: before the worker to the round after it, the report says the host's speed changed.
DRIFT = 0.15


def reference_work() -> int:
    """A fixed piece of pure Python: int dict stores and lookups, list appends, a sum."""
    table: dict[int, int] = {}
    out: list[int] = []
    for i in range(20_000):
        table[i * 7919 % 10_007] = i
        out.append(table.get(i % 10_007, 0))
    return sum(out)


def host_reference_us(repeat: int = 20) -> float:
    """Microseconds this host takes for :func:`reference_work`, the best of ``repeat``: lower
    is faster. It does not touch the project's code, so it only changes with the host."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        reference_work()
        best = min(best, time.perf_counter() - started)
    return best * 1e6


def host_drift(before: float, after: float) -> float:
    """The relative change from ``before`` to ``after`` (0.2: 20 % more); NaN if unknown."""
    if not before > 0 or not after > 0:
        return math.nan
    return after / before - 1.0


def machine_info() -> dict[str, Any]:
    """The CPU count and Python version a report names."""
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (and its children, unless pinned elsewhere)."""
    return set(os.sched_getaffinity(0))


def check_cpu(cpu: int) -> None:
    """Raise ``ValueError`` unless this process may run on ``cpu`` (``--pin-cpu``)."""
    cpus = sorted(usable_cpus())
    if cpu not in cpus:
        raise ValueError(f"CPU {cpu} is not one of {', '.join(map(str, cpus))}")


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """The ``preexec_fn`` that pins a child process to ``cpu`` (``None``: as is).

    It runs in the child between fork and exec, so the program's first thread, and every
    thread it starts, inherits the CPU. (``preexec_fn`` is unsafe when it takes a lock that
    another thread of the parent held at the fork; this one makes one system call.)"""
    if cpu is None:
        return None
    return functools.partial(os.sched_setaffinity, 0, {int(cpu)})


@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Run the calling thread on ``cpu`` alone for the block, then as before."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# The probe times the loop in CPU time, not wall time: on the worker's core it is sometimes
# preempted by the worker, which must not count as a slower host.
_PROBE_CMD = """\
import sys, time
from pipelines.bench.host import reference_work
every = float(sys.argv[1])
while True:
    at, started = time.time(), time.thread_time()
    reference_work()
    print(f"{at:.3f} {(time.thread_time() - started) * 1e6:.0f}", flush=True)
    time.sleep(every)
"""


class HostProbe:
    """The host reference loop (:func:`reference_work`) timed every ``every`` seconds by a
    process pinned to ``cpu``: how fast Python ran on that core, moment by moment, at about
    1 % of the core (a loop of 3-8 ms each half second).

    A virtual machine's cores change speed independently and within seconds (the loop alone
    on an idle core of this project's 2-CPU machine took 3,300-10,000 µs from one second to
    the next, and the two cores' timings correlated at 0.26), so only a probe on the core the
    worker runs on says how fast that worker's core was while it was measured."""

    def __init__(self, cpu: int, every: float = PROBE_EVERY_S) -> None:
        self.cpu = cpu
        self.samples: list[tuple[float, float]] = []  # (epoch s at the loop's start, µs)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(  # fixed argv, no shell
            [sys.executable, "-c", _PROBE_CMD, str(every)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            text=True,
            preexec_fn=pinned(cpu),
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
        """End the probe's process and its reader; the samples stay."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self._thread.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
