# Sourced by the demo scripts (not run): the streamwise command, the state folder, a stop
# handler for everything a demo starts, and the broker and topics. Set DEMO (the script's
# name, for messages) before sourcing; add the pid of each background process to `pids`.
SW=.venv/bin/streamwise
export STREAMWISE_HOME=${STREAMWISE_HOME:-.streamwise}
mkdir -p "$STREAMWISE_HOME"
pids=()
started_broker=0

demo_cleanup() {
  trap - INT TERM EXIT
  echo
  echo "$DEMO: stopping..." >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_broker" = 1 ]; then $SW broker stop >&2; fi
}
trap 'demo_cleanup; exit 0' INT TERM
trap demo_cleanup EXIT

# Fail early, naming the missing file, when `make assets` has not fetched one.
demo_require_assets() {
  local f
  for f in "$@"; do
    [ -f "$STREAMWISE_HOME/assets/$f" ] || {
      echo "$DEMO: $STREAMWISE_HOME/assets/$f is missing: run make assets" >&2
      exit 1
    }
  done
}

# The local broker unless STREAMWISE_BROKER names one (started here, so stopped at the end
# too), then every topic.
demo_broker() {
  if [ -z "${STREAMWISE_BROKER:-}" ] && ! $SW broker status >/dev/null 2>&1; then
    echo "$DEMO: starting Apache Kafka (the first start fetches it with Maven)..." >&2
    $SW broker start >&2
    started_broker=1
  fi
  $SW topics create >&2
}
