#!/usr/bin/env bash
# The main job on an embedded default: start vppsim with a WAN interface and let
# the agent's VPP client connect to it and print what it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
workdir=$(mktemp -d /tmp/peering-demo.XXXXXX)
sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM
.venv/bin/vppsim --socket "$workdir/api.sock" \
    --interface GigabitEthernet0/3/0=192.168.1.10/24 \
    --ready-file "$workdir/ready" --log-level warning &
sim_pid=$!
for _ in $(seq 100); do [ -e "$workdir/ready" ] && break; sleep 0.1; done
[ -e "$workdir/ready" ] || { echo "vppsim did not start" >&2; exit 1; }
.venv/bin/peering-agent vpp-info --socket "$workdir/api.sock"
