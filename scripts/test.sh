#!/usr/bin/env bash
# Set up a fresh machine and run every test tier: lint, types, import layers, unit,
# simulator, real sockets and interop with HashiCorp's serf agent.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -m "not slow and not realnet and not interop"   # the fast set only
#   COVERAGE=1 bash scripts/test.sh # also line coverage of serf_trio (terminal report, no
#                                   # threshold; agents run as child processes are not measured)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: serf (the reference agent for interop tests), systemd (systemd-analyze
# verifies the unit file), iproute2 and nftables (the fault tests' namespaces and rules).
need=""
command -v serf >/dev/null 2>&1 || need="$need serf"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v nft >/dev/null 2>&1 || need="$need nftables"
if [ -n "$need" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq $need >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
cov=()
if [ "${COVERAGE:-0}" = 1 ]; then
  cov=(--cov=serf_trio --cov-report=term --cov-fail-under=0)
fi
.venv/bin/pytest -q -p no:cacheprovider ${cov[@]+"${cov[@]}"} "$@"
