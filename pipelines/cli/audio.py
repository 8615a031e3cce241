"""``streamwise produce audio`` and ``streamwise bench audio``."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import echo_report, load_settings

__all__ = ["bench_audio", "produce_audio"]


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


@click.command("audio")
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


@click.command("audio")
@click.option("--streams", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(2, 3600))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_audio(streams: int, seconds: float, as_json: bool) -> None:
    """Streams per core, real-time factor, latency and RSS of the audio worker, batched vs not."""
    from pipelines.bench.audio import format_report, run_bench

    report = run_bench(load_settings(), streams=streams, seconds=seconds)
    echo_report(report, as_json, format_report)
