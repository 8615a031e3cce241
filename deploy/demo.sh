#!/usr/bin/env bash
# `make demo`: a local Kafka broker, the transactions worker and the simulator at a
# watchable rate, with alerts printed live. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
SW=.venv/bin/streamwise
RATE=${DEMO_RATE:-1000}
export STREAMWISE_HOME=${STREAMWISE_HOME:-.streamwise}
mkdir -p "$STREAMWISE_HOME"
pids=()
started_broker=0

cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping..." >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_broker" = 1 ]; then $SW broker stop >&2; fi
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

if [ -z "${STREAMWISE_BROKER:-}" ] && ! $SW broker status >/dev/null 2>&1; then
  echo "demo: starting Apache Kafka (the first start fetches it with Maven)..." >&2
  $SW broker start >&2
  started_broker=1
fi
$SW topics create >&2

echo "demo: starting the transactions worker (log: $STREAMWISE_HOME/demo-worker.log)" >&2
$SW worker transactions >"$STREAMWISE_HOME/demo-worker.log" 2>&1 &
pids+=($!)

echo "demo: simulating 5,000 customers over 30 days at $RATE transactions/s" >&2
$SW produce transactions --simulate --customers 5000 --terminals 10000 --days 30 \
  --rate "$RATE" >"$STREAMWISE_HOME/demo-producer.log" 2>&1 &
pids+=($!)

echo "demo: live alerts (amount rule: score = amount / 440, alert at >= 0.5). Ctrl-C stops." >&2
$SW tail alerts &
pids+=($!)
wait "${pids[-1]}"
