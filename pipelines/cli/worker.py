"""``streamwise worker``: run one worker process of a pipeline."""

from __future__ import annotations

import click

from pipelines.cli.common import load_settings, print_settings

__all__ = ["worker"]


def _pipelines() -> list[str]:
    """The pipeline names a worker can run (the choices of its argument)."""
    from pipelines.runtime.worker import PIPELINES

    return list(PIPELINES)


@click.command("worker")
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
    print_settings(settings)
    run_worker(settings, pipeline)
