#!/usr/bin/env bash
# The main job on an embedded default (as root): a lab in network namespaces,
# vppsim, the controller double and the agent; the controller pushes a peer and
# the live tunnel status is shown until Ctrl-C, then everything is removed.
# Extra arguments go to the demo (e.g. --loss 20, --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m agent.lab.demo "$@"
