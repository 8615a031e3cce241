"""``streamwise bench``: measure a pipeline through the real broker (transactions, audio, video)."""

from __future__ import annotations

import click

from pipelines.cli.common import echo_report, load_settings

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Measure a pipeline through the real broker against baselines from the same run."""


@bench.command("transactions")
@click.option("--events", default=100_000, show_default=True, type=click.IntRange(1000))
@click.option(
    "--warm-days",
    type=click.IntRange(0),
    default=None,
    help="Days of simulated history the worker processes before the measured events "
    "[default: the state horizon, label delay + 30 days + grace: 38 at default settings].",
)
@click.option(
    "--learner",
    type=click.Choice(["inline", "separate"]),
    default="inline",
    show_default=True,
    help="Where the online learner runs: in the pipeline worker, or in a fraud-learner "
    "process beside it (STREAMWISE_TRANSACTIONS__LEARNER=separate; its CPU and RSS are "
    "reported apart, not in the worker's).",
)
@click.option(
    "--pin-cpu",
    type=click.IntRange(0),
    default=None,
    help="Run the pipeline and naive workers on this CPU alone (all their threads; a "
    "separate learner is not pinned), with a probe timing the host reference loop on it "
    "every 0.5 s, reported for each measured span [default: not pinned, no probe].",
)
@click.option(
    "--guarantee",
    type=click.Choice(["at_least_once", "exactly_once"]),
    default=None,
    help="The pipeline worker's delivery guarantee. exactly_once also measures at_least_once "
    "in the same run, on topics of its own, as its baseline, and prints both and their "
    "throughput ratio against the 0.9 goal [default: STREAMWISE_PROCESSING_GUARANTEE, "
    "at_least_once unless set].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_transactions(
    events: int,
    warm_days: int | None,
    learner: str,
    pin_cpu: int | None,
    guarantee: str | None,
    as_json: bool,
) -> None:
    """Throughput, latency, CPU per event and RSS of the transactions worker vs a raw
    passthrough (run before and after the worker; the mean is the baseline), with windows as
    full as in production (after WARM_DAYS of history) and each payment's label published
    when due (a week later), so the learner's work is in the measure. A fixed Python loop
    timed before each passthrough shows whether the host's speed changed during the run.
    With --guarantee exactly_once, the worker runs under at_least_once, then exactly_once."""
    from pipelines.bench.host import check_cpu
    from pipelines.bench.transactions import format_report, run_bench

    if pin_cpu is not None:
        try:
            check_cpu(pin_cpu)  # before minutes of set-up, not after
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--pin-cpu") from exc
    report = run_bench(
        load_settings(),
        "transactions",
        events=events,
        warm_days=warm_days,
        learner=learner,
        pin_cpu=pin_cpu,
        guarantee=guarantee,
    )
    echo_report(report, as_json, format_report)


@bench.command("audio")
@click.option("--streams", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(2, 3600))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_audio(streams: int, seconds: float, as_json: bool) -> None:
    """Streams per core, real-time factor, latency and RSS of the audio worker, batched vs not."""
    from pipelines.bench.audio import format_report, run_bench

    report = run_bench(load_settings(), streams=streams, seconds=seconds)
    echo_report(report, as_json, format_report)


@bench.command("video")
@click.option(
    "--frames",
    default=600,
    show_default=True,
    type=click.IntRange(50),
    help="Frames per measurement.",
)
@click.option("--cameras", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_video(frames: int, cameras: int, as_json: bool) -> None:
    """Frames/s, latency and RSS of the video worker vs standalone decode + detection."""
    from pipelines.bench.video import format_report, run_bench_video

    report = run_bench_video(load_settings(), frames=frames, cameras=cameras)
    echo_report(report, as_json, format_report)
