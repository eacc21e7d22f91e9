#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, type check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check agent tests scripts
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
nargs=$#
set +e
.venv/bin/pytest -q -rs -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
[ "$rc" = 0 ] || exit "$rc"
# The whole suite only (not a selection of tests): the fault matrix's short form,
# ~20 s; each of its trials has a deadline, so it cannot hang.
if [ "$nargs" = 0 ]; then
    echo "== fault matrix (short)"
    bash scripts/faults.sh --short
fi
