"""``streamwise produce``: publish transactions, audio streams and video frames."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from pipelines.cli.common import load_settings

__all__ = ["produce"]


@click.group()
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
    """Publish ``table`` (and its labels, ``delay`` later in event time) with a progress bar."""
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


def stream_ids(files: tuple[Path, ...], stream_id: str | None) -> list[str]:
    """One id per file: ``--stream-id`` for one file, ``ID-0, ID-1, ...`` for several,
    else the file names' stems (made unique)."""
    if stream_id is not None:
        return [stream_id] if len(files) == 1 else [f"{stream_id}-{i}" for i in range(len(files))]
    ids: list[str] = []
    for path in files:
        stem = path.stem or "stream"
        ids.append(stem if stem not in ids else f"{stem}-{len(ids)}")
    return ids


@produce.command("audio")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--stream-id", help="Stream id (a prefix when several files are given).")
@click.option("--chunk-ms", default=100, show_default=True, type=click.IntRange(10, 1000))
@click.option(
    "--realtime/--max-speed",
    default=True,
    show_default=True,
    help="Pace chunks at the audio's own speed, or send as fast as possible.",
)
@click.option("--loop", is_flag=True, help="Repeat the files until interrupted.")
def produce_audio(
    files: tuple[Path, ...], stream_id: str | None, chunk_ms: int, realtime: bool, loop: bool
) -> None:
    """Publish sound FILES (WAV, FLAC, OGG, ...) as concurrent 16 kHz mono streams.

    Each file becomes one stream of CHUNK_MS chunks on the audio-chunks topic, keyed by its
    stream id; files are resampled to 16 kHz with a polyphase filter.
    """
    import soundfile as sf

    from pipelines.audio.produce import AudioStream, chunked, load_audio, publish_audio

    settings = load_settings()
    streams = []
    for path, sid in zip(files, stream_ids(files, stream_id), strict=True):
        try:
            samples = load_audio(path)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise click.ClickException(f"cannot read {path}: {exc}") from exc
        streams.append(AudioStream(sid, chunked(samples, 16 * chunk_ms)))
        click.echo(f"{sid}: {path} ({len(samples) / 16000:.1f} s)", err=True)
    try:
        report = publish_audio(settings, streams, chunk_ms=chunk_ms, realtime=realtime, loop=loop)
    except KeyboardInterrupt:
        return
    click.echo(
        f"published {report.chunks} chunks of {report.streams} streams "
        f"in {report.seconds:.1f} s to {settings.broker_url}"
    )


@produce.command("video")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--camera-id",
    "camera_ids",
    multiple=True,
    help="Camera id, once per source in order (default: cam0, cam1, ...).",
)
@click.option(
    "--fps", type=click.FloatRange(min=0.1), help="Frames/s per camera (default: the source's)."
)
@click.option(
    "--width", type=click.IntRange(16, 8192), help="Resize frames to this width, aspect kept."
)
@click.option(
    "--realtime/--max-speed",
    default=True,
    show_default=True,
    help="Pace at fps, or send as fast as possible.",
)
@click.option("--loop", is_flag=True, help="Restart files and folders at their end.")
@click.option("--frames", "limit", type=click.IntRange(1), help="Stop after N frames per camera.")
@click.option(
    "--quality", default=90, show_default=True, type=click.IntRange(10, 100), help="JPEG quality."
)
def produce_video(
    sources: tuple[str, ...],
    camera_ids: tuple[str, ...],
    fps: float | None,
    width: int | None,
    realtime: bool,
    loop: bool,
    limit: int | None,
    quality: int,
) -> None:
    """Publish frames of SOURCES (video files, image folders or camera indexes) to video-frames.

    Several sources become several cameras, published side by side.
    """
    from pipelines.video.produce import Camera, publish_video
    from processors.video.sources import open_source

    if camera_ids and len(camera_ids) != len(sources):
        raise click.BadParameter("give --camera-id once per source, or not at all")
    ids = camera_ids or tuple(f"cam{i}" for i in range(len(sources)))
    try:
        cameras = [Camera(cid, open_source(src)) for cid, src in zip(ids, sources, strict=True)]
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc

    def progress(camera: str, count: int) -> None:
        if count % 100 == 0:
            click.echo(f"{camera}: {count} frames", err=True)

    report = publish_video(
        load_settings(),
        cameras,
        fps=fps,
        width=width,
        realtime=realtime,
        loop=loop,
        limit=limit,
        quality=quality,
        progress=progress,
    )
    total = sum(report.frames.values())
    click.echo(f"published {total} frames from {len(cameras)} camera(s) in {report.seconds:.1f} s")
