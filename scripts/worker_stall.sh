#!/usr/bin/env bash
# A worker stalled: one worker thread of the server is frozen for a while (as a descheduled
# thread or a run of page faults would stall it) while 1 000 healthy clients (500 TCP + 500 WS,
# the flood preset without its flood) stream at 50 Hz. The hub keeps building ticks meanwhile,
# so they wait in the worker's channel; the run shows whether catching up costs clients frames.
# Prints, per run, the healthy gaps and the server's own counters; exits 1 if any frame was lost.
#   scripts/worker_stall.sh [FREEZE_MS] [RUNS] [SERVER_BIN]    (defaults 300, 3, the release build)
# Needs root and the cgroup v1 freezer (/sys/fs/cgroup/freezer), which can freeze one thread.
set -u
cd "$(dirname "$0")/.."
freeze_ms=${1:-300}
runs=${2:-3}
server=${3:-target/release/aerobridge}
freezer=/sys/fs/cgroup/freezer
if [ ! -w "$freezer" ]; then
  echo "needs root and the cgroup v1 freezer at $freezer (to freeze one thread)" >&2
  exit 2
fi
cargo build --release --workspace >/dev/null 2>&1 || {
  echo "build failed" >&2
  exit 2
}
cgroup=$freezer/aerobridge-worker-stall
mkdir -p "$cgroup"
ports=(22345 22346 28765)
lost=0
for i in $(seq "$runs"); do
  "$server" --data-port ${ports[0]} --command-port ${ports[1]} --ws-port ${ports[2]} --bind 127.0.0.1 \
    --broadcast-ms 20 --max-lag 30s --log warn >target/worker-stall-server.log 2>&1 &
  server_pid=$!
  # The first worker thread (threads are named aerobridge-worker-N, cut to 15 characters).
  tid=""
  for _ in $(seq 100); do
    tid=$(for t in /proc/$server_pid/task/*; do
      [ "$(cat "$t/comm" 2>/dev/null)" = "aerobridge-work" ] && basename "$t"
    done | sort -n | head -1)
    [ -n "$tid" ] && curl -sf "http://127.0.0.1:${ports[2]}/healthz" >/dev/null && break
    sleep 0.1
  done
  # Freeze it 6 s into the run: after the connects and warm-up, inside the 10 s window.
  (
    sleep 6
    echo "$tid" >"$cgroup/tasks"
    echo FROZEN >"$cgroup/freezer.state"
    sleep "$(awk "BEGIN{print $freeze_ms/1000}")"
    echo THAWED >"$cgroup/freezer.state"
    echo "$tid" >"$freezer/tasks"
  ) &
  freeze_pid=$!
  ./target/release/loadtest --host 127.0.0.1 --tcp-port ${ports[0]} --ws-port ${ports[2]} \
    --command-port ${ports[1]} --scenario flood --flood 0 >target/worker-stall-run.log 2>&1
  wait $freeze_pid
  metrics=$(curl -s "http://127.0.0.1:${ports[2]}/metrics")
  kill -INT $server_pid
  wait $server_pid
  metric() { echo "$metrics" | awk -v n="$1" '$1 == n {print $2}'; }
  skipped=$(metric aerobridge_frames_skipped_total)
  count=$(metric aerobridge_tick_dispatch_delay_seconds_count)
  on_time=$(metric 'aerobridge_tick_dispatch_delay_seconds_bucket{le="0.1"}')
  late=$([ -n "$count" ] && echo $((count - on_time)) || echo "?")
  gaps=$(grep -oE 'gaps [0-9]+ \([0-9]+ frames\)' target/worker-stall-run.log)
  p99=$(awk '$2 == "all" {print $5; exit}' target/worker-stall-run.log)
  echo "run $i, worker thread $tid frozen ${freeze_ms} ms: healthy ${gaps:-?}, p99 ${p99:-?} ms; server: ${skipped:-?} frames skipped, $late ticks reached a worker over 100 ms late"
  [ "${skipped:-1}" = 0 ] || lost=$((lost + 1))
done
rmdir "$cgroup" 2>/dev/null
exit $((lost > 0))
