"""What every ``streamwise`` command module shares: loading settings, printing reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import orjson
from pydantic import ValidationError

from pipelines.settings import Settings

__all__ = ["echo_report", "load_settings"]


def load_settings() -> Settings:
    """Settings from the environment; invalid ones end the command with the reason."""
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid STREAMWISE_* settings:\n{exc}") from exc


def echo_report(
    report: dict[str, Any], as_json: bool, format_report: Callable[[dict[str, Any]], str]
) -> None:
    """A bench report as indented JSON (for scripts) or as its readable table."""
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_report(report))
