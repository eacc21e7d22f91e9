#!/usr/bin/env bash
# The long job-fuzzing campaign (issue 15): ~10,000 structure-aware jobs through the
# envelope, the dispatcher, the manager and the executor against vppsim with injected
# VPP write failures and API connection resets. Prints the totals as JSON.
#   scripts/fuzz.sh                 # 2,000 scenarios (~10,000 jobs), a random seed
#   FUZZ_EXAMPLES=200 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/bootstrap.sh
summary="$(mktemp /tmp/fuzz-summary.XXXXXX.json)"
export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-2000}" FUZZ_SUMMARY="$summary" FUZZ_SEED=1
started=$(date +%s)
rc=0
.venv/bin/pytest -q -p no:cacheprovider -m fuzz tests/integration/test_fuzz.py || rc=$?
echo "== fuzz summary ($(( $(date +%s) - started )) s, pytest exit $rc)"
cat "$summary"
rm -f "$summary"
exit "$rc"
