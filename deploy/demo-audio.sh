#!/usr/bin/env bash
# `make demo-audio`: a local Kafka broker, the audio worker and four microphones streaming in
# real time (looped): "lobby" real recorded speech (alsa-utils) with pauses, "plant" steady
# noise that now and then turns into a loud clipped tone, "desk" a quiet chord, "booth"
# silence. Alerts are printed live. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=demo-audio
source deploy/demo-lib.sh
# A shorter warm-up than the default, so the anomaly detector is ready within half a minute.
export STREAMWISE_AUDIO__ANOMALY_WINDOW=${STREAMWISE_AUDIO__ANOMALY_WINDOW:-20}
ASSETS="$STREAMWISE_HOME/assets"
MEDIA="$STREAMWISE_HOME/demo-audio"
mkdir -p "$MEDIA"

demo_require_assets silero_vad.onnx alsa-front-center.wav alsa-side-right.wav alsa-rear-left.wav \
  alsa-noise.wav synth-pink-noise.wav synth-clipped-tone.wav synth-chord.wav synth-silence.wav
# Two playlists made of the fetched media: speech with pauses, and noise with an incident.
.venv/bin/python - "$ASSETS" "$MEDIA" <<'PY'
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.audio.produce import load_audio

assets, media = Path(sys.argv[1]), Path(sys.argv[2])
pause = np.zeros(16000 * 2, np.float32)
speech = [load_audio(assets / f"alsa-{n}.wav") for n in ("front-center", "side-right", "rear-left")]
sf.write(media / "lobby.wav", np.concatenate([x for s in speech for x in (s, pause)]), 16000)
noise = np.tile(load_audio(assets / "synth-pink-noise.wav"), 10)  # 40 s of steady noise
incident = load_audio(assets / "synth-clipped-tone.wav")[: 16000 * 2]
sf.write(media / "plant.wav", np.concatenate([noise, incident]), 16000)
PY

demo_broker

echo "demo-audio: starting the audio worker (log: $STREAMWISE_HOME/demo-audio-worker.log)" >&2
$SW worker audio >"$STREAMWISE_HOME/demo-audio-worker.log" 2>&1 &
pids+=($!)

echo "demo-audio: streaming lobby (speech), plant (noise, a clipped tone every 42 s)," \
  "desk (chord), booth (silence) in real time, looped" >&2
$SW produce audio "$MEDIA/lobby.wav" "$MEDIA/plant.wav" "$ASSETS/synth-chord.wav" \
  "$ASSETS/synth-silence.wav" --realtime --loop >"$STREAMWISE_HOME/demo-audio-producer.log" 2>&1 &
pids+=($!)

echo "demo-audio: live alerts (speech segments at once; booth's dead microphone after 10 s;" \
  "plant's anomaly, level and clipping once the detector warmed up). Ctrl-C stops." >&2
$SW tail alerts &
pids+=($!)
wait "${pids[-1]}"
