#!/usr/bin/env bash
# A local three-agent serf-trio cluster on 127.0.0.1: sets up a virtualenv if needed, starts
# three `serf-trio agent` processes (gossip on ports BASE..BASE+2, default 7946), joins them
# with `serf-trio join`, prints `serf-trio members`, then keeps running until Ctrl-C, when the
# agents leave gracefully; a second Ctrl-C aborts their leave.
#
# The agents run in process groups of their own (`set -m` while they start), so the
# terminal's Ctrl-C, which goes to the whole foreground process group, reaches this script
# only, and the script forwards it to each agent exactly once.  (Were the agents in the
# script's group, each would count two SIGINTs, the terminal's and the forwarded one, and
# take the second as "abort the leave".)
#
# Environment: DEMO_BASE_PORT (first gossip port), DEMO_SECONDS (stop by itself after that
# long), DEMO_DIR (keep the agents' sockets and logs there instead of a temporary directory
# that is removed at exit), SERF_TRIO (the serf-trio command; default: this checkout's venv).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${DEMO_BASE_PORT:-7946}

st=${SERF_TRIO:-.venv/bin/serf-trio}
if [ -z "${SERF_TRIO:-}" ] && [ ! -x "$st" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
if [ -n "${DEMO_DIR:-}" ]; then
  dir=$DEMO_DIR
  mkdir -p "$dir"
  keep=1
else
  dir=$(mktemp -d "${TMPDIR:-/tmp}/serf-trio-demo.XXXXXX")
  keep=0
fi
pids=()
stops=0      # stop requests forwarded so far (Ctrl-C, SIGTERM, DEMO_SECONDS)
sleeper=""

stop_agents() {
  # SIGINT = graceful leave, as under systemd (KillSignal=SIGINT); a second one aborts it.
  stops=$((stops + 1))
  if [ "$stops" -eq 1 ]; then
    echo "Stopping: each agent leaves the cluster gracefully (Ctrl-C again to abort the leave)."
  else
    echo "Second Ctrl-C: aborting the graceful leave; the agents stop now."
  fi
  if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
}
wait_agents() {
  # `wait` returns early when a trapped signal arrives; wait again until each agent is gone.
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do wait "$p" 2>/dev/null || true; done
  done
}
cleanup() {
  trap - EXIT
  if [ "$stops" -eq 0 ] && [ "${#pids[@]}" -gt 0 ]; then stop_agents; fi
  wait_agents
  if [ "$keep" -eq 0 ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
trap stop_agents INT TERM

set -m  # each agent in a process group of its own (see the top of this file)
for i in 0 1 2; do
  "$st" agent --node "demo$((i + 1))" --bind "127.0.0.1:$((base + i))" \
    --rpc-socket "$dir/demo$((i + 1)).sock" --tag role=demo --profile local \
    >"$dir/demo$((i + 1)).log" 2>&1 </dev/null &
  pids+=("$!")
done
set +m
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
if [ -n "${DEMO_SECONDS:-}" ] && [ "$stops" -eq 0 ]; then
  sleep "$DEMO_SECONDS" &
  sleeper=$!
  wait "$sleeper" 2>/dev/null || true
  sleeper=""
  if [ "$stops" -eq 0 ]; then stop_agents; fi
fi
wait_agents
exit 0
