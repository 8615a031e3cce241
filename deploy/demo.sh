#!/usr/bin/env bash
# `make demo`: a local Kafka broker, the transactions worker and the simulator at a
# watchable rate, with alerts printed live. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${DEMO_RATE:-1000}
DEMO=demo
source deploy/demo-lib.sh

demo_broker

echo "demo: starting the transactions worker (log: $STREAMWISE_HOME/demo-worker.log)" >&2
$SW worker transactions >"$STREAMWISE_HOME/demo-worker.log" 2>&1 &
pids+=($!)

echo "demo: simulating 5,000 customers over 30 days at $RATE transactions/s" >&2
$SW produce transactions --simulate --customers 5000 --terminals 10000 --days 30 \
  --rate "$RATE" >"$STREAMWISE_HOME/demo-producer.log" 2>&1 &
pids+=($!)

echo "demo: live fraud alerts (ONNX + River scores, alert at >= 0.5). Ctrl-C stops." >&2
$SW tail alerts &
pids+=($!)
wait "${pids[-1]}"
