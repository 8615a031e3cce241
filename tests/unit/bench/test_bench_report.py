"""The bench's arithmetic and report, without a broker (the bench itself is run by hand)."""

from __future__ import annotations

import gc
import math
import os
import re
import subprocess
import sys
import time
import tracemalloc
from datetime import timedelta

import pytest

from pipelines.bench.host import HostProbe, host_drift, host_reference_us, pinned, usable_cpus
from pipelines.bench.load import label_count, labels_of, simulated_load, split_load, transactions
from pipelines.bench.report import format_report
from pipelines.bench.waiting import wait_until
from pipelines.bench.worker_process import cpu_between


def test_cpu_between_interpolates_the_samples() -> None:
    samples = [(10.0, 1.0), (11.0, 1.5), (12.0, 2.5)]
    assert cpu_between(samples, 10.5, 11.5) == pytest.approx(1.0 - 0.25)
    assert cpu_between(samples, 10.0, 12.0) == pytest.approx(1.5)
    assert math.isnan(cpu_between(samples[:1], 10.0, 12.0))


def test_the_report_shows_rates_ratios_cpu_and_latency() -> None:
    report = _report(
        passthrough={"events_per_s": 50_000.0},
        worker={
            "events_per_s": 12_500.0,
            "wall_s": 10.5,
            "peak_rss_mib": 512.0,
            "batch_size": 500,
            "cpu_us_per_event": 71.6,
            "cpu_busy": 0.9,
        },
        naive={"events": 8_000, "events_per_s": 500.0},
        latency={
            "rate": 6_250.0,
            "events": 40_000,
            "p50_ms": 80,
            "p99_ms": 190,
            "max_ms": 230,
            "cpu_busy": 0.55,
        },
        ratios={
            "worker_vs_passthrough": 0.25,
            "naive_vs_passthrough": 0.01,
            "worker_vs_naive": 25.0,
        },
    )
    text = format_report(report)
    assert "12,500" in text
    assert "0.25" in text
    assert "72 µs an event; busy 90% of one core" in text
    assert "80 / 190 / 230 ms" in text
    assert "80,000 events after 38 days of history (368,600 events)" in text
    assert "busy 55% of one core" in text


def _report(**changes: object) -> dict[str, object]:
    """A whole report (as ``run_bench`` returns it) with some parts replaced."""
    report: dict[str, object] = {
        "pipeline": "transactions",
        "events": 80_000,
        "warm": {"days": 38, "events": 368_600},
        "partitions": 4,
        "kafka_version": "4.4.0",
        "produce_rate": 68_000.0,
        "passthrough": {"events_per_s": 45_000.0, "before": 50_000.0, "after": 40_000.0},
        "host_reference_us": {"before": 2_000.0, "after": 2_100.0},
        "worker": {
            "events_per_s": 9_000.0,
            "wall_s": 10.5,
            "peak_rss_mib": 512.0,
            "batch_size": 500,
            "cpu_us_per_event": 100.0,
            "cpu_busy": 0.9,
        },
        "naive": {"events": 8_000, "events_per_s": 300.0},
        "latency": {"rate": 4_500.0, "events": 40_000, "p50_ms": 80, "p99_ms": 190, "max_ms": 230},
        "ratios": {
            "worker_vs_passthrough": 0.2,
            "naive_vs_passthrough": 0.01,
            "worker_vs_naive": 30.0,
        },
        "machine": {"cpus": 2, "python": "3.11.7"},
    }
    report.update(changes)
    return report


def test_the_report_shows_both_passthroughs_and_the_host_reference() -> None:
    text = format_report(_report())
    assert "50,000 / 40,000 events/s (the worker is compared with their mean)" in text
    assert "45,000" in text  # the mean is the baseline row
    assert "2,000 / 2,100 µs before each passthrough" in text


def test_the_report_warns_when_the_host_changed_during_the_run() -> None:
    # The passthrough fell by a fifth between before and after the worker.
    assert "speed changed during this run" in format_report(_report())
    steady = {"events_per_s": 45_000.0, "before": 45_500.0, "after": 44_500.0}
    assert "speed changed" not in format_report(_report(passthrough=steady))
    slower = {"before": 2_000.0, "after": 2_600.0}  # the reference loop took 30 % longer
    text = format_report(_report(passthrough=steady, host_reference_us=slower))
    assert "speed changed during this run" in text


def test_a_report_from_before_the_second_passthrough_still_formats() -> None:
    text = format_report(_report(passthrough={"events_per_s": 45_000.0}, host_reference_us={}))
    assert "before / after" not in text
    assert "host reference" not in text
    assert "speed changed" not in text


def test_host_drift_and_the_reference_loop() -> None:
    assert host_drift(100.0, 120.0) == pytest.approx(0.2)
    assert host_drift(100.0, 80.0) == pytest.approx(-0.2)
    assert math.isnan(host_drift(0.0, 80.0))
    assert math.isnan(host_drift(math.nan, 80.0))
    assert host_reference_us(repeat=1) > 0


def _load(*kinds: tuple[str, int]) -> list[tuple[str, int, bytes, bytes]]:
    """Load items of the given kinds and transaction ids; values tell them apart."""
    return [(kind, tx, b"k", b"%d" % i) for i, (kind, tx) in enumerate(kinds)]


def test_a_load_is_cut_after_whole_transactions_and_labels_go_with_the_next() -> None:
    items = _load(("tx", 1), ("tx", 2), ("label", 1), ("tx", 3), ("label", 2), ("label", 3))
    first, second, third = split_load(items, 2, 3)
    assert [(kind, tx) for kind, tx, _, _ in first] == [("tx", 1), ("tx", 2)]
    assert [(kind, tx) for kind, tx, _, _ in second] == [("label", 1), ("tx", 3)]
    assert [(kind, tx) for kind, tx, _, _ in third] == [("label", 2), ("label", 3)]
    assert transactions(second) == [(3, b"k", b"3")]
    assert label_count(third) == 2
    assert split_load(items, 10) == [items, []]


def test_labels_of_transactions_not_yet_predicted_are_held_back_in_order() -> None:
    items = _load(("label", 1), ("tx", 5), ("label", 5), ("label", 2))
    now, later = labels_of(items, {1, 2})
    assert now == [items[0], items[1], items[3]]
    assert later == [items[2]]


def test_the_report_says_how_many_labels_were_learned_and_when() -> None:
    worker = dict(_report()["worker"])  # type: ignore[call-overload]
    late = format_report(
        _report(worker={**worker, "labels": 80_200, "learned": 80_200, "learning_after_s": 1.25})
    )
    assert "80,200 sent, 80,200 learned (the learner finished 1.2 s after" in late
    on_time = format_report(
        _report(worker={**worker, "labels": 10, "learned": 9, "learning_after_s": 0.0})
    )
    assert "10 sent, 9 learned (by the last prediction)" in on_time
    assert "labels in the measured load" not in format_report(_report())


def test_the_report_shows_a_separate_learners_own_process() -> None:
    worker = dict(_report()["worker"])  # type: ignore[call-overload]
    own = {"cpu_busy": 0.21, "peak_rss_mib": 180.25}
    text = format_report(_report(learner="separate", worker={**worker, "learner_process": own}))
    assert "a process of its own (--learner separate): not in the worker's CPU or RSS" in text
    assert "busy 21% of one core (first send to last prediction); peak RSS 180.2 MiB" in text
    inline = format_report(_report(learner="inline"))
    assert "learner process" not in inline
    assert "learner process" not in format_report(_report())  # reports of earlier releases


def test_the_bench_knows_only_two_places_for_the_learner() -> None:
    from pathlib import Path

    from pipelines.bench.transactions import run_bench
    from pipelines.settings import Settings

    with pytest.raises(ValueError, match="learner must be 'inline' or 'separate'"):
        run_bench(Settings(home=Path("/nonexistent")), learner="elsewhere")


def test_a_pinned_program_runs_on_its_cpu_alone_threads_included() -> None:
    cpu = max(usable_cpus())
    program = (
        "import os, threading; seen = []; "
        "t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0)))); "
        "t.start(); t.join(); print(sorted(os.sched_getaffinity(0)), seen[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, preexec_fn=pinned(cpu)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"[{cpu}]", f"[{cpu}]"]
    assert pinned(None) is None
    assert os.sched_getaffinity(0) == usable_cpus()  # the bench itself is left as it was


def test_the_host_probe_times_the_reference_loop_on_its_cpu() -> None:
    cpu = min(usable_cpus())
    started = time.time()
    probe = HostProbe(cpu, every=0.02)

    def five() -> bool:
        assert probe.proc.poll() is None, "the probe exited"
        return len(probe.samples) >= 5

    try:
        # a wait, not a speed claim: loops take ms
        wait_until(five, 60, interval_s=0.05, what="five probe loops", error=AssertionError)
        affinity = os.sched_getaffinity(probe.proc.pid)
    finally:
        probe.stop()
    assert affinity == {cpu}
    assert probe.proc.returncode is not None  # stopped
    reading = probe.between(started, time.time())
    assert reading["loops"] == len(probe.samples)
    assert 0 < reading["p10_us"] <= reading["median_us"] <= reading["p90_us"]
    assert reading["us"] == [us for _, us in probe.samples]
    assert min(reading["us"]) <= reading["mean_us"] <= max(reading["us"])
    before = probe.between(started - 60, started - 30)
    assert before["loops"] == 0
    assert math.isnan(before["median_us"])


def test_a_pinned_report_shows_the_probe_for_each_span() -> None:
    def probe(median: float, loops: int = 20) -> dict[str, float]:
        return {
            "mean_us": median + 1000,
            "median_us": median,
            "p10_us": median - 500,
            "p90_us": median + 1500,
            "loops": loops,
        }

    base = _report()
    worker = {**base["worker"], "host_probe": probe(4_000.0)}  # type: ignore[dict-item]
    latency = {**base["latency"], "host_probe": probe(6_000.0, 30)}  # type: ignore[dict-item]
    naive = {**base["naive"], "host_probe": probe(5_000.0, 0)}  # type: ignore[dict-item]
    text = format_report(_report(pin_cpu=1, worker=worker, latency=latency, naive=naive))
    assert "to CPU 1, all their threads" in text
    backlog = r"during the backlog +mean 5,000 µs, median 4,000 \(3,500-5,500\), 20 loops"
    assert re.search(backlog, text)
    paced = r"under the latency load +mean 7,000 µs, median 6,000 \(5,500-7,500\), 30 loops"
    assert re.search(paced, text)
    assert re.search(r"naive worker +no reading", text)
    plain = format_report(_report())
    assert "pinned" not in plain
    assert "host probe" not in plain


def test_the_bench_refuses_a_cpu_it_cannot_run_on() -> None:
    from click.testing import CliRunner

    from pipelines.cli.main import main

    wrong = max(usable_cpus()) + 1
    result = CliRunner().invoke(main, ["bench", "transactions", "--pin-cpu", str(wrong)])
    assert result.exit_code == 2
    assert f"CPU {wrong} is not one of" in result.output


def test_a_simulated_load_keeps_its_records_right_sized() -> None:
    # orjson 3.12+ returns bytes with about 4 KB allocated whatever their length; a bench
    # load of ~900,000 records held that way took 4 GB of the bench process's RSS.
    simulated_load(500, timedelta(days=7))  # imports and caches first: not the load's
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        items = simulated_load(3000, timedelta(hours=2))  # labels among them
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert label_count(items) > 0
    assert kept / len(items) < 1500  # about 400 bytes an item; 4,200 with orjson's buffers
