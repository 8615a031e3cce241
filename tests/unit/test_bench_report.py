"""The bench's arithmetic and report, without a broker (the bench itself is run by hand)."""

from __future__ import annotations

import math

import pytest

from pipelines.bench import cpu_between, format_report


def test_cpu_between_interpolates_the_samples() -> None:
    samples = [(10.0, 1.0), (11.0, 1.5), (12.0, 2.5)]
    assert cpu_between(samples, 10.5, 11.5) == pytest.approx(1.0 - 0.25)
    assert cpu_between(samples, 10.0, 12.0) == pytest.approx(1.5)
    assert math.isnan(cpu_between(samples[:1], 10.0, 12.0))


def test_the_report_shows_rates_ratios_cpu_and_latency() -> None:
    report = {
        "pipeline": "transactions",
        "events": 80_000,
        "warm": {"days": 38, "events": 368_600},
        "partitions": 4,
        "kafka_version": "4.4.0",
        "produce_rate": 68_000.0,
        "passthrough": {"events_per_s": 50_000.0},
        "worker": {
            "events_per_s": 12_500.0,
            "wall_s": 10.5,
            "peak_rss_mib": 512.0,
            "batch_size": 500,
            "cpu_us_per_event": 71.6,
            "cpu_busy": 0.9,
        },
        "naive": {"events": 8_000, "events_per_s": 500.0},
        "latency": {
            "rate": 6_250.0,
            "events": 40_000,
            "p50_ms": 80,
            "p99_ms": 190,
            "max_ms": 230,
            "cpu_busy": 0.55,
        },
        "ratios": {
            "worker_vs_passthrough": 0.25,
            "naive_vs_passthrough": 0.01,
            "worker_vs_naive": 25.0,
        },
        "machine": {"cpus": 2, "python": "3.11.7"},
    }
    text = format_report(report)
    assert "12,500" in text
    assert "0.25" in text
    assert "72 µs an event; busy 90% of one core" in text
    assert "80 / 190 / 230 ms" in text
    assert "80,000 events after 38 days of history (368,600 events)" in text
    assert "busy 55% of one core" in text
