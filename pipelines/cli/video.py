"""``streamwise produce video`` and ``streamwise bench video``."""

from __future__ import annotations

import click

from pipelines.cli.common import echo_report, load_settings

__all__ = ["bench_video", "produce_video"]


@click.command("video")
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


@click.command("video")
@click.option(
    "--frames",
    default=600,
    show_default=True,
    type=click.IntRange(50),
    help="Frames per measurement.",
)
@click.option("--cameras", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_video(frames: int, cameras: int, as_json: bool) -> None:
    """Frames/s, latency and RSS of the video worker vs standalone decode + detection."""
    from pipelines.bench.video import format_report, run_bench_video

    report = run_bench_video(load_settings(), frames=frames, cameras=cameras)
    echo_report(report, as_json, format_report)
