"""``streamwise bench transactions --guarantee``: which modes run, on what, and the report."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines.bench import transactions as bench_transactions
from pipelines.bench.guarantees import eos_ratio, mode_prefix, modes_for, verdict
from pipelines.bench.report import format_report
from pipelines.cli.main import main
from pipelines.settings import Settings


def test_exactly_once_brings_its_at_least_once_baseline_first() -> None:
    assert modes_for("exactly_once") == ("at_least_once", "exactly_once")
    assert modes_for("at_least_once") == ("at_least_once",)
    with pytest.raises(ValueError, match="guarantee must be one of"):
        modes_for("both")


def test_each_mode_has_a_prefix_of_its_own_under_the_run() -> None:
    both = modes_for("exactly_once")
    prefixes = {g: mode_prefix("bench-1234abcd", g, both) for g in both}
    assert prefixes == {"at_least_once": "bench-1234abcd-alo", "exactly_once": "bench-1234abcd-eos"}
    # one mode keeps the run's own prefix, as before there were modes
    assert mode_prefix("bench-1234abcd", "at_least_once", ("at_least_once",)) == "bench-1234abcd"


def test_modes_share_no_topic_group_state_or_guarantee(home: Path) -> None:
    base = Settings(home=home)
    both = modes_for("exactly_once")
    runs = {
        g: bench_transactions._mode_settings(base, "bench-1", home / "run", g, both, "separate")
        for g in both
    }
    alo, eos = runs["at_least_once"], runs["exactly_once"]
    assert (alo.processing_guarantee, eos.processing_guarantee) == ("at_least_once", "exactly_once")
    assert (alo.app_prefix, eos.app_prefix) == ("bench-1-alo", "bench-1-eos")
    assert alo.home != eos.home
    assert alo.worker.web_port != eos.worker.web_port
    assert alo.transactions.learner == eos.transactions.learner == "separate"
    names = {
        g: {v for v in s.topics.model_dump().values() if isinstance(v, str)}
        for g, s in runs.items()
    }
    assert not names["at_least_once"] & names["exactly_once"]
    assert all(n.startswith("bench-1-") for n in names["exactly_once"])  # the run deletes them
    assert base.processing_guarantee == "at_least_once"  # the caller's settings untouched


def test_the_ratio_needs_both_modes_and_a_baseline() -> None:
    assert eos_ratio({"at_least_once": 10_000.0, "exactly_once": 9_300.0}) == pytest.approx(0.93)
    assert eos_ratio({"at_least_once": 10_000.0}) is None
    assert math.isnan(eos_ratio({"at_least_once": 0.0, "exactly_once": 5.0}) or 0.0)


def test_the_verdict_says_by_how_much_the_goal_is_missed() -> None:
    assert verdict(0.93) == "goal >= 0.90 met"
    assert verdict(0.90) == "goal >= 0.90 met"
    assert verdict(0.72) == "below the goal of 0.90 by 18 points"
    assert verdict(math.nan) == "no baseline"


def test_an_unknown_guarantee_is_refused_before_any_broker_is_started(home: Path) -> None:
    with pytest.raises(ValueError, match="guarantee must be one of"):
        bench_transactions.run_bench(Settings(home=home), guarantee="twice")
    assert not (home / "broker").exists()


def _fake_run_bench(calls: list[dict[str, Any]]) -> Any:
    def run_bench(settings: Settings, pipeline: str, **options: Any) -> dict[str, Any]:
        calls.append({"guarantee_setting": settings.processing_guarantee, **options})
        return {"fake": True}

    return run_bench


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--guarantee", "exactly_once"], {}, "exactly_once"),
        (
            ["--guarantee", "at_least_once"],
            {"STREAMWISE_PROCESSING_GUARANTEE": "exactly_once"},
            "at_least_once",
        ),
        ([], {}, None),  # run_bench then takes the settings' guarantee
    ],
)
def test_the_cli_passes_the_guarantee_on(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], expected: str | None
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(bench_transactions, "run_bench", _fake_run_bench(calls))
    result = CliRunner().invoke(
        main, ["bench", "transactions", *argv, "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert calls[0]["guarantee"] == expected
    assert '"fake": true' in result.output


def test_the_cli_refuses_an_unknown_guarantee(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(bench_transactions, "run_bench", _fake_run_bench(calls))
    result = CliRunner().invoke(main, ["bench", "transactions", "--guarantee", "both"])
    assert result.exit_code == 2
    assert "'at_least_once', 'exactly_once'" in result.output
    assert calls == []


def _mode(rate: float, p50: float, p99: float, seen: tuple[float, float], rss: float) -> Any:
    return {
        "worker": {
            "events_per_s": rate,
            "wall_s": 40.0,
            "peak_rss_mib": rss,
            "batch_size": 500,
            "cpu_us_per_event": 1e6 / rate,
            "cpu_busy": 0.95,
        },
        "latency": {
            "rate": rate / 2,
            "events": 10_000,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": p99 + 50,
            "visible_p50_ms": seen[0],
            "visible_p99_ms": seen[1],
        },
        "vs_passthrough": rate / 40_000,
    }


def _both(eos_rate: float) -> dict[str, Any]:
    """A run_bench result of ``--guarantee exactly_once`` (only what the report reads)."""
    modes = {
        "at_least_once": _mode(10_000.0, 80, 190, (95, 210), 480.0),
        "exactly_once": _mode(eos_rate, 120, 260, (160, 330), 520.0),
    }
    return {
        "pipeline": "transactions",
        "events": 20_000,
        "warm": {"days": 5, "events": 48_500},
        "partitions": 4,
        "kafka_version": "4.1.0",
        "produce_rate": 60_000.0,
        "passthrough": {"events_per_s": 40_000.0, "before": 40_500.0, "after": 39_500.0},
        "host_reference_us": {"before": 2_000.0, "after": 2_010.0},
        "learner": "inline",
        "guarantee": "exactly_once",
        "modes": modes,
        "worker": modes["exactly_once"]["worker"],
        "naive": {"events": 2_000, "events_per_s": 300.0},
        "pin_cpu": None,
        "latency": modes["exactly_once"]["latency"],
        "ratios": {
            "worker_vs_passthrough": eos_rate / 40_000,
            "naive_vs_passthrough": 300 / 40_000,
            "worker_vs_naive": eos_rate / 300,
            "exactly_once_vs_at_least_once": eos_rate / 10_000,
        },
        "eos_goal": 0.9,
        "machine": {"cpus": 2, "python": "3.12.3"},
    }


def _row(text: str, first: str) -> list[str]:
    """The cells (split on runs of spaces) of the report line that starts with ``first``."""
    line = next(line for line in text.splitlines() if line.strip().startswith(first))
    return [cell for cell in line.strip().split("  ") if cell.strip()]


def test_the_report_has_a_row_per_guarantee_and_the_ratio_to_the_goal() -> None:
    text = format_report(_both(9_400.0))
    alo = [c.strip() for c in _row(text, "at_least_once ")]
    eos = [c.strip() for c in _row(text, "exactly_once ")]
    assert alo == ["at_least_once", "10,000", "1.00", "80 / 190", "95 / 210", "480", "100"]
    assert eos == ["exactly_once", "9,400", "0.94", "120 / 260", "160 / 330", "520", "106"]
    assert "exactly_once / at_least_once throughput: 0.94 (goal >= 0.90 met" in text
    assert "pipeline worker (batch 500, at_least_once)" in text
    assert "pipeline worker (batch 500, exactly_once)" in text
    assert re.search(r"pipeline worker figures +of the exactly_once run", text)


def test_the_report_says_how_far_below_the_goal_exactly_once_is() -> None:
    text = format_report(_both(7_000.0))
    assert "throughput: 0.70 (below the goal of 0.90 by 20 points" in text


def test_one_mode_has_its_row_and_no_ratio() -> None:
    report = _both(9_400.0)
    report["modes"] = {"at_least_once": report["modes"]["at_least_once"]}
    report["guarantee"] = "at_least_once"
    del report["ratios"]["exactly_once_vs_at_least_once"], report["eos_goal"]
    text = format_report(report)
    assert _row(text, "at_least_once ")[1].strip() == "10,000"
    assert not [line for line in text.splitlines() if line.strip().startswith("exactly_once")]
    assert "(batch 500, exactly_once)" not in text
    assert "pipeline worker figures" not in text
