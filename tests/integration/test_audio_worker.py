"""The audio worker against Apache Kafka: concurrent streams, speech alerts, dead letters,
and a second worker that dies while live streams go on."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from models.silero_vad import SileroVad
from pipelines.audio.produce import AudioStream, PublishReport, chunked, publish_audio
from pipelines.bench.scrape import samples
from pipelines.bench.waiting import wait_until
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer
from processors.audio.codec import AudioChunk, encode_chunk
from processors.audio.stream_state import segment_id
from tests.audio_media import padded, vad_path
from tests.integration.conftest import Worker, _free_port, publish_raw, read_topic

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

    expected = {
        f"{segment_id(s.stream_id, report.session)}:{i}"
        for s in streams
        for i in range(windows(len(s.chunks)))
    }
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


def test_a_restarted_producer_gets_every_window_of_its_second_run(
    settings: Settings, start_worker: Callable[[Settings, str], Worker]
) -> None:
    """The same file published twice under one stream id, the second run counting its
    sequence from 0 again (a restarted producer): its chunks are a new session of the
    stream, not duplicates of the first run's, and every window of both runs is predicted."""
    audio = settings.audio.model_copy(update={"vad_path": vad_path()})
    settings = settings.model_copy(update={"audio": audio})
    stream = AudioStream("mic-1", chunked(padded("alsa-noise.wav"), CHUNK))
    worker = start_worker(settings, "audio")
    worker.wait_assigned(settings.topics.audio_chunks)
    runs = [publish_audio(settings, [stream], chunk_ms=100, realtime=False) for _ in range(2)]
    assert runs[0].session != runs[1].session
    expected = {
        f"{segment_id(stream.stream_id, run.session)}:{i}"
        for run in runs
        for i in range(windows(len(stream.chunks)))
    }
    preds = read_topic(
        settings, settings.topics.predictions, lambda r: {p["event_id"] for p in r} >= expected
    )
    assert {p["event_id"] for p in preds} == expected, worker.log_tail()
    assert worker.proc.poll() is None


def step_metric(worker: Worker, name: str, **labels: str) -> float:
    """The sum of the audio step's samples of metric ``name`` with ``labels`` on ``worker``."""
    page = worker._get("/metrics")
    wanted = {"step": "analyze-audio", **labels}
    found = [
        s.value
        for s in samples(page.decode() if page else "")
        if s.name == name and s.labels == wanted
    ]
    return sum(found)


def chunks_analyzed(worker: Worker) -> float:
    return step_metric(worker, "streamwise_events_total", outcome="ok")


def test_live_streams_go_on_at_the_other_worker_without_false_alerts(
    settings: Settings, start_worker: Callable[[Settings, str], Worker], tmp_path: Path
) -> None:
    """Seven live streams on three partitions (real speech on each partition); a second
    worker joins, takes some of them over, and is SIGKILLed mid-stream; the first takes
    them back, each from its checkpoint.

    Before the fix, the first worker raised ``dead_microphone`` for the streams it lost when
    the second joined, and filled the time the other had them with silence when they came
    back after the kill; before checkpoints, a moved stream's anomaly learner started again
    at zero examples.
    """
    dead_after = 4.0
    audio = settings.audio.model_copy(update={"vad_path": vad_path(), "dead_after_s": dead_after})
    worker_conf = settings.worker.model_copy(update={"session_timeout_s": 6.0})
    settings = settings.model_copy(update={"audio": audio, "worker": worker_conf})
    other = settings.model_copy(
        update={
            "worker": worker_conf.model_copy(update={"web_port": _free_port()}),
            "home": tmp_path / "home-2",
        }
    )
    # keyed to partitions 1, 2, 0 and 0 of three; continuous sound (never silent for long)
    media = {
        "mic-a": "synth-tone-1khz.wav",
        "mic-b": "synth-chord.wav",
        "mic-e": "synth-pink-noise.wav",
        "mic-h": "synth-white-noise.wav",
    }
    # real speech keyed to partitions 1, 0 and 2: 1.4 s of speech in 3.4 s, 2 s of silence
    speech = {
        "talk": "alsa-front-center.wav",
        "talk-a": "alsa-side-right.wav",
        "mic-s": "alsa-rear-left.wav",
    }
    rounds = 360  # 36 s of live audio per stream
    streams = [
        AudioStream(sid, chunked(padded(name, 0.0, 0.0), CHUNK)) for sid, name in media.items()
    ] + [AudioStream(sid, chunked(padded(name), CHUNK)) for sid, name in speech.items()]
    segments = {
        s.stream_id: segments_read_straight(s, rounds) for s in streams if s.stream_id in speech
    }
    first = start_worker(settings, "audio")
    first.wait_assigned(settings.topics.audio_chunks)

    result: list[PublishReport] = []
    publisher = threading.Thread(
        target=lambda: result.append(
            publish_audio(settings, streams, chunk_ms=100, realtime=True, loop=True,
                          max_rounds=rounds)
        ),
        daemon=True,
    )  # fmt: skip
    publisher.start()

    def analysed(worker: Worker, chunks: int) -> None:
        wait_until(
            lambda: chunks_analyzed(worker) >= chunks,
            40.0,
            interval_s=0.3,
            what=lambda: f"a worker analysed fewer than {chunks} chunks:\n{worker.log_tail()}",
            error=AssertionError,
        )

    media |= speech
    analysed(first, 70)  # every stream known to the first worker
    second = start_worker(other, "audio")
    second.wait_assigned(settings.topics.audio_chunks)
    analysed(second, 140)  # it holds its streams for a while, mid-stream
    second.kill()
    publisher.join(rounds * 0.1 + 30.0)
    assert result, "the publisher did not finish"
    stopped = time.time()
    session = result[0].session

    # Every stream stops at the end: each gets exactly one dead_microphone, after it stopped.
    def complete(records: list[dict[str, object]]) -> bool:
        return {r["entity"] for r in records if r["kind"] == "dead_microphone"} >= {
            f"stream:{sid}" for sid in media
        }

    alerts = read_topic(settings, settings.topics.alerts, complete, timeout_s=60.0)
    dead = [a for a in alerts if a["kind"] == "dead_microphone"]
    early = [
        (a["entity"], a["emit_time"])
        for a in dead
        if datetime.fromisoformat(str(a["emit_time"])).timestamp() < stopped + dead_after - 1.0
    ]
    assert early == [], first.log_tail()
    assert sorted(a["entity"] for a in dead) == sorted(f"stream:{sid}" for sid in media), alerts
    # Speech alerts are right across the moves: only where spoken, one segment per utterance
    # (none lost, none made up at a hole), each that started also ended, under its own id.
    spoken = [a for a in alerts if str(a["kind"]).startswith("speech")]
    assert {str(a["entity"]) for a in spoken} == {f"stream:{sid}" for sid in speech}, spoken
    for sid in speech:
        mine = [a for a in spoken if a["entity"] == f"stream:{sid}"]
        started = {a["event_id"] for a in mine if a["kind"] == "speech_started"}
        ended = {a["event_id"] for a in mine if a["kind"] == "speech_ended"}
        assert started == ended, mine
        expected = segments[sid]  # segments when read straight through by one worker
        assert expected - 3 <= len(started) <= expected + 3, (sid, expected, mine)

    # The surviving worker took the streams over: each one's last seconds were predicted.
    def recent(p: dict[str, object]) -> bool:
        return datetime.fromisoformat(str(p["event_time"])).timestamp() > stopped - 3.0

    def covered(records: list[dict[str, object]]) -> bool:
        return {p["entity"] for p in records if recent(p)} >= {f"stream:{sid}" for sid in media}

    preds = read_topic(settings, settings.topics.predictions, covered)
    assert covered(preds), first.log_tail()
    assert all(str(p["event_id"]).startswith(f"{p['entity']}"[7:]) for p in preds)
    assert {str(p["event_id"]).rsplit(":", 1)[0] for p in preds} == {
        segment_id(sid, session) for sid in media
    }
    gaps = [p for p in preds if p["features"]["gap_chunks_total"] > 0]
    assert gaps == [], gaps[:3]
    for sid in media:
        assert_learner_went_on([p for p in preds if p["entity"] == f"stream:{sid}"])
    # the streams came back to the first worker from the second's checkpoints
    assert step_metric(first, "streamwise_audio_streams_restored_total") > 0, first.log_tail()
    assert first.proc.poll() is None


def segments_read_straight(stream: AudioStream, rounds: int) -> int:
    """Speech segments in ``rounds`` chunks of ``stream`` (looped) read by one analyzer."""
    analyzer = AudioAnalyzer(Settings().audio, SileroVad(vad_path()))
    chunks = [
        AudioChunk(
            stream.stream_id, i, 16000, 1, "int16", i * 10**8, stream.chunks[i % len(stream.chunks)]
        )
        for i in range(rounds)
    ]
    found = [
        f for i in range(0, rounds, 10) for f in analyzer.process(chunks[i : i + 10], 0.0).findings
    ]
    found += analyzer.check_stalled(1e9)
    return sum(f.kind == "speech_started" for f in found)


def assert_learner_went_on(preds: list[dict[str, object]], hop_s: float = 0.48) -> None:
    """A stream's anomaly learner never started again: along the stream (window order) its
    example count grows; a window a restored worker analysed again counts fewer examples by
    at most the checkpoint lag (5 s of windows, and a batch), and it is never back at zero
    once the stream has learned its first windows."""
    lag = round(5.0 / hop_s) + 4
    seen: list[tuple[int, float]] = []
    for p in preds:
        features = p["features"]
        assert isinstance(features, dict)
        seen.append((int(str(p["event_id"]).rsplit(":", 1)[1]), features["anomaly_examples"]))
    seen.sort()
    assert seen, "no predictions"
    most = 0.0
    for index, examples in seen:
        assert examples >= most - lag, (index, examples, most, seen)
        if most >= 1:
            assert examples > 0, (index, seen)
        most = max(most, examples)
    assert most >= len({i for i, _ in seen}) - 3 * lag  # at most three holes: join, kill, back
