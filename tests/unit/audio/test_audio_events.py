"""Speech segments and level events from sequences of measurements."""

from __future__ import annotations

from processors.audio.events import LevelWatch, SpeechTracker


def run(tracker: SpeechTracker, probs: list[float]) -> list[tuple[str, int, int | None]]:
    return [(e.kind, e.start, e.end) for p in probs for e in tracker.update(p)]


def tracker() -> SpeechTracker:
    return SpeechTracker(threshold=0.5, min_speech=3 * 512, min_silence=2 * 512, frame=512)


def test_a_segment_starts_after_min_speech_and_ends_after_min_silence() -> None:
    events = run(tracker(), [0.0, 0.9, 0.8, 0.9, 0.9, 0.1, 0.1, 0.0])
    assert events == [("speech_started", 512, None), ("speech_ended", 512, 5 * 512)]


def test_blips_shorter_than_min_speech_are_not_segments() -> None:
    assert run(tracker(), [0.9, 0.9, 0.1, 0.9, 0.1, 0.9, 0.9, 0.0] * 3) == []


def test_a_short_pause_does_not_split_a_segment() -> None:
    probs = [0.9] * 4 + [0.1] + [0.9] * 4 + [0.0] * 3
    events = run(tracker(), probs)
    assert [e[0] for e in events] == ["speech_started", "speech_ended"]
    assert events[1][2] == 9 * 512


def test_probabilities_between_the_thresholds_keep_a_segment_open() -> None:
    events = run(tracker(), [0.9] * 3 + [0.4] * 10 + [0.0] * 2)
    assert events[-1] == ("speech_ended", 0, 13 * 512)


def test_close_ends_an_open_segment_where_frames_reached() -> None:
    t = tracker()
    run(t, [0.9] * 5)
    assert [(e.kind, e.end) for e in t.close()] == [("speech_ended", 5 * 512)]
    assert t.close() == []


def watch() -> LevelWatch:
    return LevelWatch(16000, level_dbfs=-6.0, clip_ratio=0.01, silence_dbfs=-70.0, dead_after_s=2.0)


def test_level_and_clipping_alert_once_per_episode() -> None:
    w = watch()
    kinds = []
    for i, (db, clip) in enumerate([(-20, 0), (-3, 0.2), (-2, 0.3), (-20, 0), (-3, 0)]):
        kinds += [e.kind for e in w.update(i * 8000, i * 8000 + 16000, db, clip)]
    assert kinds == ["level_high", "clipping", "level_high"]


def test_a_dead_microphone_is_reported_after_the_silence_lasts() -> None:
    w = watch()
    events = []
    for i in range(8):  # windows of 1 s every 0.5 s, all silent
        events += w.update(i * 8000, i * 8000 + 16000, -120.0, 0.0)
    assert [(e.kind, e.start) for e in events] == [("dead_microphone", 0)]
    assert events[0].value == 2.0
    assert w.update(8 * 8000, 9 * 8000, -30.0, 0.0) == []  # sound again re-arms
    assert not w.dead
