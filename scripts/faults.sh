#!/usr/bin/env bash
# Fault matrix (issue 15): VPP killed, VPP API dropped with VPP alive, agent SIGKILL,
# disk full, corrupt store, random VPP write failures, a websocket drop mid-job (the
# whole agent and a controller double), each at several points of a
# 200-peer apply; prints trials, converged, seconds to converge, leaks. Exit 1 if any
# trial did not converge, leaked or could not re-apply.
#   scripts/faults.sh              # 200 peers, 5 trials per fault
#   scripts/faults.sh --short      # CI form: 40 peers, 2 trials
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh
if [ "${1:-}" = "--short" ]; then
    shift
    set -- --peers 40 --trials 2 "$@"
fi
exec .venv/bin/python scripts/faults.py "$@"
