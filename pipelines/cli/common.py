"""What every ``streamwise`` command module shares: loading, printing settings and reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import orjson
from pydantic import ValidationError

from pipelines.settings import Settings

__all__ = ["echo_report", "load_settings", "print_settings"]


def load_settings() -> Settings:
    """Settings from the environment; invalid ones end the command with the reason."""
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid STREAMWISE_* settings:\n{exc}") from exc


def print_settings(settings: Settings) -> None:
    """The resolved settings as a table on stderr, secrets masked (``settings``, ``worker``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="streamwise settings", show_header=True)
    table.add_column("setting")
    table.add_column("value")
    for name, value in settings.describe():
        table.add_row(name, value)
    Console(stderr=True).print(table)


def echo_report(
    report: dict[str, Any], as_json: bool, format_report: Callable[[dict[str, Any]], str]
) -> None:
    """A bench report as indented JSON (for scripts) or as its readable table."""
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_report(report))
