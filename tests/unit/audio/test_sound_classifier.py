"""The pluggable ONNX sound classifier, with a small model built here from the onnx API.

The model averages a log-mel patch over time and weighs low against high mel bands, so a
low tone must score as ``low`` and a high tone as ``high`` once the real log-mel front end
and the audio step run in front of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from models.assets import AssetError, sha256_of
from models.silero_vad import SileroVad
from models.sound_classifier import OnnxSoundClassifier
from pipelines.audio.step import AnalyzeAudio
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.steps import run_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.audio.analyzer import AudioAnalyzer
from processors.audio.codec import AudioChunk, encode_chunk
from processors.audio.features import LogMel
from tests.audio_media import vad_path
from tests.pipelines.fakes import FakeEvent, FakeMessage


def band_model(path: Path, rank: int = 3) -> Path:
    """``[N, 96, 64]`` (or ``[N, 1, 96, 64]``) log-mels -> softmax over (low, high)."""
    weights = np.zeros((64, 2), dtype=np.float32)
    weights[:20, 0], weights[44:, 0] = 1.0, -1.0
    weights[:20, 1], weights[44:, 1] = -1.0, 1.0
    shape = ["N", 96, 64] if rank == 3 else ["N", 1, 96, 64]
    axes = [1] if rank == 3 else [1, 2]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["patches"], ["bands"], axes=axes, keepdims=0),
            helper.make_node("MatMul", ["bands", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        ],
        "bands",
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [64, 2], weights.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tone(freq: float, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("low\nhigh\n")
    return path


@pytest.mark.parametrize("rank", [3, 4])
def test_scores_follow_the_spectrum(tmp_path: Path, classes: Path, rank: int) -> None:
    model = band_model(tmp_path / "bands.onnx", rank)
    clf = OnnxSoundClassifier(model, classes, sha256_of(model))
    assert clf.classes == ["low", "high"]
    assert clf.version.startswith("bands@")
    logmel = LogMel()
    patches = logmel(np.stack([tone(300)[:15360], tone(6000)[:15360]]))
    scores = clf.predict_batch(patches)
    assert scores.shape == (2, 2)
    assert scores[0, 0] > 0.9
    assert scores[1, 1] > 0.9


def test_a_wrong_checksum_or_missing_class_map_is_refused(tmp_path: Path, classes: Path) -> None:
    model = band_model(tmp_path / "bands.onnx")
    with pytest.raises(AssetError, match="sha256"):
        OnnxSoundClassifier(model, classes, "0" * 64)
    with pytest.raises(AssetError, match="missing"):
        OnnxSoundClassifier(model, tmp_path / "nope.txt")


def test_a_class_map_of_the_wrong_length_fails_the_batch(tmp_path: Path) -> None:
    model = band_model(tmp_path / "bands.onnx")
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    clf = OnnxSoundClassifier(model, three)
    with pytest.raises(ValueError, match="3 classes"):
        clf.predict_batch(LogMel()(tone(300)[None, :15360]))


def test_the_audio_step_labels_each_window_with_its_top_classes(
    tmp_path: Path, classes: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    model = band_model(tmp_path / "bands.onnx")
    analyzer = AudioAnalyzer(
        settings.audio, SileroVad(vad_path()), OnnxSoundClassifier(model, classes)
    )
    outputs = RecordingOutputs()
    step = AnalyzeAudio(settings, analyzer, outputs, StepMetrics())
    events = []
    for sid, samples in (("low", tone(300)), ("high", tone(6000))):
        pcm = (samples * 32767).astype(np.int16)
        for i in range(0, len(pcm) // 1600):
            part = pcm[i * 1600 : (i + 1) * 1600].tobytes()
            chunk = AudioChunk(sid, i, 16000, 1, "int16", 10**18 + i * 10**8, part)
            events.append(
                FakeEvent(
                    FakeMessage("audio-chunks", 0, len(events), sid.encode(), encode_chunk(chunk))
                )
            )
    asyncio.run(run_batch(step, events))
    preds = [orjson.loads(s.value) for s in outputs.on(settings.topics.predictions)]
    assert preds
    assert {p["model_versions"]["classifier"] for p in preds} == {analyzer.classifier.version}  # type: ignore[union-attr]
    for p in preds:
        stream = p["entity"].split(":")[-1]
        other = "high" if stream == "low" else "low"
        assert p["features"][f"class:{stream}"] > p["features"][f"class:{other}"], p
