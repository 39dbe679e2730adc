#!/usr/bin/env bash
# A local three-agent serf-trio cluster on 127.0.0.1: sets up a virtualenv if needed, starts
# three `serf-trio agent` processes (gossip on ports BASE..BASE+2, default 7946), joins them
# with `serf-trio join`, prints `serf-trio members`, then keeps running until Ctrl-C, when the
# agents leave gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${DEMO_BASE_PORT:-7946}

if [ ! -x .venv/bin/serf-trio ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
st=.venv/bin/serf-trio
dir=$(mktemp -d "${TMPDIR:-/tmp}/serf-trio-demo.XXXXXX")
pids=()
cleanup() {
  # SIGINT = graceful leave, as under systemd (KillSignal=SIGINT).
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for i in 0 1 2; do
  "$st" agent --node "demo$((i + 1))" --bind "127.0.0.1:$((base + i))" \
    --rpc-socket "$dir/demo$((i + 1)).sock" --tag role=demo --profile local \
    >"$dir/demo$((i + 1)).log" 2>&1 &
  pids+=("$!")
done
for i in 1 2 3; do
  for _ in $(seq 100); do [ -S "$dir/demo$i.sock" ] && break; sleep 0.1; done
  [ -S "$dir/demo$i.sock" ] || { echo "demo$i did not start:"; cat "$dir/demo$i.log"; exit 1; }
done

"$st" join --rpc-socket "$dir/demo2.sock" "127.0.0.1:$base"
"$st" join --rpc-socket "$dir/demo3.sock" "127.0.0.1:$base"
sleep 1
echo
echo "\$ serf-trio members   (as demo1 sees the cluster)"
"$st" members --rpc-socket "$dir/demo1.sock"
echo
echo "Agents' JSON logs: $dir/demo*.log"
echo "Try: $st members --rpc-socket $dir/demo2.sock --format json"
echo "Ctrl-C stops the cluster (each agent leaves gracefully)."
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait; fi
