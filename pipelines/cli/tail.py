"""``streamwise tail``: print a topic's records as they arrive."""

from __future__ import annotations

from typing import Any

import click
import orjson

from pipelines.cli.common import load_settings

__all__ = ["tail_cmd"]


@click.command("tail")
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
