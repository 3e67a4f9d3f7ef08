#!/usr/bin/env bash
# The regression gate on this machine: N unchanged runs against the committed baseline (each
# must pass, or be inconclusive on a busy host), then a deliberate slowdown (the debug build of
# the server) that must fail. Prints one line per run and a summary; exits non-zero when the
# gate got either wrong. About 2.5 minutes per run (--scenario ci: 5 interleaved pairs).
#   scripts/gate_demo.sh [RUNS]    (default 10)
set -u
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release --workspace >/dev/null 2>&1 && cargo build >/dev/null 2>&1 || {
  echo "build failed" >&2
  exit 2
}
gate() {
  ./target/release/loadtest --spawn-server --scenario ci --baseline loadtest/baseline/ci.json --quiet "$@" \
    >target/gate-run.log 2>&1
  echo $?
}
wrong=0
for i in $(seq "$runs"); do
  code=$(gate)
  case $code in
    0) verdict="passed" ;;
    3) verdict="inconclusive (busy host)" ;;
    *) verdict="FAILED: $(grep -E 'REGRESSION|FAILED' target/gate-run.log | head -1)"; wrong=$((wrong + 1)) ;;
  esac
  echo "unchanged run $i: exit $code, $verdict"
done
code=$(gate --server-bin target/debug/aerobridge)
if [ "$code" = 1 ]; then
  echo "slowdown (debug build): exit 1, failed as it must: $(grep -E 'REGRESSION' target/gate-run.log | head -1)"
else
  echo "slowdown (debug build): exit $code, NOT caught"
  wrong=$((wrong + 1))
fi
exit $((wrong > 0))
