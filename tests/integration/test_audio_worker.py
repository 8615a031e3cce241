"""The audio worker against Apache Kafka: concurrent streams, speech alerts, dead letters."""

from __future__ import annotations

import base64
from collections.abc import Callable

from pipelines.audio.produce import AudioStream, chunked, publish_audio
from pipelines.settings import Settings
from processors.audio.codec import AudioChunk, encode_chunk
from tests.audio_media import padded, vad_path
from tests.integration.conftest import Worker, publish_raw, read_topic

WINDOW, HOP, CHUNK = 15360, 7680, 1600


def windows(chunks: int) -> int:
    return (chunks * CHUNK - WINDOW) // HOP + 1


def test_concurrent_streams_get_every_window_and_speech_alerts_only_where_spoken(
    settings: Settings, start_worker: Callable[[Settings, str], Worker]
) -> None:
    audio = settings.audio.model_copy(update={"vad_path": vad_path(), "dead_after_s": 3.0})
    settings = settings.model_copy(update={"audio": audio})
    media = {
        "talk": padded("alsa-front-center.wav"),
        "talk-2": padded("alsa-rear-left.wav"),
        "beep": padded("synth-tone-1khz.wav"),
        "hiss": padded("alsa-noise.wav"),
    }
    streams = [AudioStream(sid, chunked(x, CHUNK)) for sid, x in media.items()]
    worker = start_worker(settings, "audio")
    worker.wait_assigned(settings.topics.audio_chunks)
    bad = [
        (b"talk", encode_chunk(AudioChunk("talk", 0, 48000, 1, "int16", 0, b"\0\0" * 4800))),
        (b"hiss", encode_chunk(AudioChunk("talk", 0, 16000, 1, "int16", 0, b"\0\0" * 1600))),
        (b"talk", b"not an audio chunk at all, just some bytes"),
    ]
    publish_raw(settings, settings.topics.audio_chunks, bad)
    report = publish_audio(settings, streams, chunk_ms=100, realtime=False)
    assert report.chunks == sum(len(s.chunks) for s in streams)

    expected = {f"{s.stream_id}:{i}" for s in streams for i in range(windows(len(s.chunks)))}
    preds = read_topic(
        settings, settings.topics.predictions, lambda r: {p["event_id"] for p in r} >= expected
    )
    assert {p["event_id"] for p in preds} == expected, worker.log_tail()
    assert all(p["schema"] == "prediction/1" and p["pipeline"] == "audio" for p in preds)

    # Every stream stops after its last chunk: after 3 s each is reported as dead.
    def complete(records: list[dict[str, object]]) -> bool:
        return sum(r["kind"] == "dead_microphone" for r in records) >= len(streams)

    alerts = read_topic(settings, settings.topics.alerts, complete)
    speech = sorted((a["entity"], a["kind"]) for a in alerts if str(a["kind"]).startswith("speech"))
    spoken = {e for e, _ in speech}
    assert spoken == {"stream:talk", "stream:talk-2"}, alerts
    for entity in spoken:
        kinds = [k for e, k in speech if e == entity]
        assert kinds.count("speech_started") == kinds.count("speech_ended") >= 1
    dead = sorted(a["entity"] for a in alerts if a["kind"] == "dead_microphone")
    assert dead == sorted(f"stream:{s.stream_id}" for s in streams)

    letters = read_topic(settings, settings.topics.dead_letters, lambda r: len(r) >= len(bad))
    by_value = {base64.b64decode(d["value_b64"]): d["reason"] for d in letters}
    reasons = ["wrong_sample_rate", "key_mismatch", "not_audio_chunk"]
    assert by_value == {v: r for (_, v), r in zip(bad, reasons, strict=True)}
    assert len(letters) == len(bad)
    assert worker.proc.poll() is None
