"""``streamwise bench audio``: how many real-time streams one audio worker keeps up with.

Everything goes through the real broker on topics, groups and state of the run's own
(``bench-<8 hex>``, deleted at the end). The streams are real media (alsa-utils speech and
noise, synthesized tones, noise and silence from ``tests/media``) tiled to ``seconds``.

1. *Capacity*: ``streams`` streams of ``seconds`` each are pre-loaded as 100 ms chunks; a
   ``streamwise worker audio`` (batched VAD, features, anomaly scoring) works through them.
   Between its first and last prediction it processes so many audio seconds per wall
   second and spends so many CPU seconds (user + system, all threads) per audio second:
   the real-time factor per core. Streams per core = 1 / that factor.
2. *Latency*: with that worker running, ``streams`` new streams are published in real time
   for ``seconds`` (one chunk per stream every 100 ms); latency is a window prediction's
   Kafka timestamp minus the send time of the chunk that completed the window.
3. *Unbatched*: a second worker with ``STREAMWISE_AUDIO__VAD_BATCHED=false`` (one VAD call
   per stream per frame) on a quarter of the pre-load, for the gain of batching.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from models.assets import fetch_all
from pipelines.audio.produce import AudioStream, chunked, load_audio, publish_audio
from pipelines.bench.harness import (
    MIB,
    REPO,
    create_run_topics,
    ensure_broker,
    isolated_settings,
    kafka_version,
    run_scope,
    say,
)
from pipelines.bench.host import machine_info
from pipelines.bench.reader import PredictionReader
from pipelines.bench.report import detail_lines, table_lines
from pipelines.bench.worker_process import WorkerProcess
from pipelines.settings import Settings
from processors.audio.stream_state import segment_id

__all__ = ["format_report", "run_bench"]

RATE = 16000
CHUNK_MS = 100
_MEDIA = (
    "alsa-front-center.wav",
    "alsa-noise.wav",
    "synth-tone-1khz.wav",
    "alsa-side-right.wav",
    "synth-pink-noise.wav",
    "alsa-rear-left.wav",
    "synth-chord.wav",
    "synth-white-noise.wav",
    "synth-silence.wav",
)


def _media(assets: Path) -> list[np.ndarray]:
    fetch_all(REPO / "models" / "audio.toml", assets)
    fetch_all(REPO / "tests" / "media" / "audio.toml", assets)
    return [load_audio(assets / name) for name in _MEDIA]


def _streams(media: list[np.ndarray], prefix: str, count: int, seconds: float) -> list[AudioStream]:
    """``count`` streams of ``seconds``, each a different rotation of the media."""
    length = round(seconds * RATE)
    out = []
    for i in range(count):
        order = media[i % len(media) :] + media[: i % len(media)]
        tiled = np.concatenate(order * math.ceil(length / sum(len(m) for m in order) + 1))
        out.append(AudioStream(f"{prefix}-{i}", chunked(tiled[:length], RATE * CHUNK_MS // 1000)))
    return out


def _windows(settings: Settings, chunks: int) -> int:
    samples = chunks * RATE * CHUNK_MS // 1000
    window, hop = round(settings.audio.window_s * RATE), round(settings.audio.hop_s * RATE)
    return max(0, (samples - window) // hop + 1)


def _capacity(
    settings: Settings, streams: list[AudioStream], session: int
) -> tuple[WorkerProcess, PredictionReader, dict[str, Any]]:
    """Start a worker on pre-loaded streams (published under ``session``); measure audio
    seconds per wall and CPU second."""
    expected = [
        f"{segment_id(s.stream_id, session)}:{i}"
        for s in streams
        for i in range(_windows(settings, len(s.chunks)))
    ]
    worker = WorkerProcess(settings, "audio")
    reader = PredictionReader(settings, settings.topics.predictions)
    try:
        reader.wait_for(1, worker, 180.0)
        cpu0, first = worker.cpu_seconds(), len(reader.first_ms)
        stamps = reader.wait_for(len(expected), worker, max(180.0, len(expected) / 50))
        cpu1 = worker.cpu_seconds()
    except BaseException:
        reader.close()
        worker.stop()
        raise
    times = [stamps[e] for e in expected]
    hop = settings.audio.hop_s
    audio_s = (len(expected) - first) * hop
    wall_s = (max(times) - min(times)) / 1000
    cpu_s = cpu1 - cpu0
    result = {
        "streams": len(streams),
        "audio_s": len(expected) * hop,
        "audio_s_per_wall_s": (len(expected) - 1) * hop / max(wall_s, 1e-3),
        "cpu_s_per_audio_s": cpu_s / max(audio_s, 1e-9),
        "streams_per_core": audio_s / max(cpu_s, 1e-9),
    }
    return worker, reader, result


WARMUP_WINDOWS = 2  # per stream, left out of the steady-state latency


def _latency(
    settings: Settings, reader: PredictionReader, worker: WorkerProcess, streams: list[AudioStream]
) -> dict[str, Any]:
    sent: dict[tuple[str, int], int] = {}
    before = len(reader.first_ms)
    report = publish_audio(
        settings,
        streams,
        chunk_ms=CHUNK_MS,
        realtime=True,
        on_send=lambda sid, seq, ms: sent.__setitem__((sid, seq), ms),
    )
    counts = {s.stream_id: _windows(settings, len(s.chunks)) for s in streams}
    stamps = reader.wait_for(before + sum(counts.values()), worker, 120.0)
    window, hop = round(settings.audio.window_s * RATE), round(settings.audio.hop_s * RATE)
    chunk = RATE * CHUNK_MS // 1000
    latencies, steady = [], []
    for sid, count in counts.items():
        for i in range(count):
            seq = -(-(i * hop + window) // chunk) - 1  # the chunk that completed window i
            latencies.append(stamps[f"{segment_id(sid, report.session)}:{i}"] - sent[(sid, seq)])
            if i >= WARMUP_WINDOWS:
                steady.append(latencies[-1])
    values = np.array(latencies, dtype=np.float64)
    p50, p99 = np.percentile(values, [50, 99]).tolist()
    # Every stream of the load starts at once, so their first windows share one slow batch
    # (new stream state, anomaly models, VAD state); the steady state leaves them out.
    steady_values = np.array(steady or latencies, dtype=np.float64)
    s50, s99 = np.percentile(steady_values, [50, 99]).tolist()
    return {
        "streams": len(streams),
        "windows": len(values),
        "publish_s": report.seconds,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(values.max()),
        "steady_p50_ms": float(s50),
        "steady_p99_ms": float(s99),
        "steady_max_ms": float(steady_values.max()),
    }


def run_bench(settings: Settings, streams: int = 100, seconds: float = 30.0) -> dict[str, Any]:
    """Run the steps of the module docstring once; return the results."""
    if streams < 1 or seconds < 2:
        raise ValueError("need at least one stream of two seconds")
    ensure_broker(settings)
    media = _media(settings.assets_dir)
    vad = settings.assets_dir.resolve() / "silero_vad.onnx"
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    base = (settings.home / "bench" / run_id).resolve()
    audio = settings.audio.model_copy(update={"vad_path": vad})
    shared = settings.model_copy(update={"audio": audio})
    main = isolated_settings(shared, run_id, base / "batched")
    flat = shared.model_copy(update={"audio": audio.model_copy(update={"vad_batched": False})})
    unbatched = isolated_settings(flat, f"{run_id}-unbatched", base / "unbatched")
    few = max(1, streams // 4)
    say(f"run {run_id}: {streams} streams x {seconds:.0f} s, state in {base}")
    with run_scope(settings, run_id, base):
        create_run_topics(main)
        create_run_topics(unbatched)
        load = _streams(media, "pre", streams, seconds)
        main_run = publish_audio(main, load, chunk_ms=CHUNK_MS, realtime=False)
        flat_run = publish_audio(unbatched, load[:few], chunk_ms=CHUNK_MS, realtime=False)
        say(f"pre-loaded {sum(len(s.chunks) for s in load):,} chunks")
        worker, reader, batched = _capacity(main, load, main_run.session)
        try:
            say(f"batched: {batched['streams_per_core']:.0f} streams per core")
            live = _streams(media, "live", streams, seconds)
            say(f"latency: {streams} real-time streams for {seconds:.0f} s")
            latency = _latency(main, reader, worker, live)
        finally:
            reader.close()
            worker.stop()
        batched["peak_rss_mib"] = worker.peak_rss / MIB
        say(f"latency p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms")
        worker2, reader2, flat_result = _capacity(unbatched, load[:few], flat_run.session)
        reader2.close()
        worker2.stop()
        say(f"unbatched: {flat_result['streams_per_core']:.0f} streams per core")
    return {
        "pipeline": "audio",
        "streams": streams,
        "seconds": seconds,
        "chunk_ms": CHUNK_MS,
        "kafka_version": kafka_version(settings),
        "batched": batched,
        "unbatched": flat_result,
        "latency": latency,
        "batching_gain": batched["streams_per_core"] / max(flat_result["streams_per_core"], 1e-9),
        "machine": machine_info(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def format_report(report: dict[str, Any]) -> str:
    """A readable table of ``run_bench``'s result."""
    b, u, lat, m = report["batched"], report["unbatched"], report["latency"], report["machine"]
    rows = [
        (f"batched VAD ({b['streams']} streams)", b),
        (f"unbatched VAD ({u['streams']} streams)", u),
    ]
    lines = [
        f"streamwise bench: audio, {report['streams']} streams x {report['seconds']:.0f} s, "
        f"{report['chunk_ms']} ms chunks, Kafka {report['kafka_version'] or '(external)'}",
        f"machine: {m['cpus']} CPUs, Python {m['python']}",
        "",
        *table_lines(
            ("worker", "audio s/wall s", "CPU s/audio s", "streams/core"),
            [
                (
                    label,
                    f"{r['audio_s_per_wall_s']:,.1f}",
                    f"{r['cpu_s_per_audio_s']:.4f}",
                    f"{r['streams_per_core']:,.0f}",
                )
                for label, r in rows
            ],
            ("left", "right", "right", "right"),
        ),
    ]
    details = [
        ("batching gain (streams/core)", f"{report['batching_gain']:.2f}x"),
        ("batched worker peak RSS", f"{b['peak_rss_mib']:,.0f} MiB"),
        ("latency load", f"{lat['streams']} streams in real time, {lat['windows']:,} windows"),
        (
            "chunk -> prediction p50/p99/max",
            f"{lat['p50_ms']:,.0f} / {lat['p99_ms']:,.0f} / {lat['max_ms']:,.0f} ms",
        ),
        (
            f"  after each stream's first {WARMUP_WINDOWS} windows",
            f"{lat['steady_p50_ms']:,.0f} / {lat['steady_p99_ms']:,.0f} / "
            f"{lat['steady_max_ms']:,.0f} ms",
        ),
    ]
    lines += detail_lines(details)
    lines.append(
        "CPU s/audio s is the real-time factor on one core (user + system time of the worker "
        "process); one run on this machine, broker on the same host."
    )
    return "\n".join(lines)
