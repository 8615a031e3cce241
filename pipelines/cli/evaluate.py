"""``streamwise evaluate``: a pipeline's prediction quality, offline, on simulated data."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import echo_report, load_settings

__all__ = ["evaluate"]


@click.group()
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
