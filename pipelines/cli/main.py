"""The ``streamwise`` command line: the root group, ``settings``, and every area's commands.

Each area's commands are defined in their own module (broker, produce, worker, tail, bench,
evaluate) and added here; a command imports what it runs when it runs (never faust, which
reads ``sys.argv`` on import), so ``--help`` stays quick.
"""

from __future__ import annotations

import click
import orjson

from pipelines.cli.bench import bench
from pipelines.cli.broker import assets, broker, topics
from pipelines.cli.common import load_settings, print_settings
from pipelines.cli.evaluate import evaluate
from pipelines.cli.produce import produce
from pipelines.cli.tail import tail_cmd
from pipelines.cli.worker import worker

__all__ = ["main"]


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
        print_settings(settings)


main.add_command(broker)
main.add_command(topics)
main.add_command(assets)
main.add_command(produce)
main.add_command(worker)
main.add_command(tail_cmd)
main.add_command(bench)
main.add_command(evaluate)


if __name__ == "__main__":
    main()
