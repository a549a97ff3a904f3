#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is needed, lint, type-check, then every
# test tier (unit, then lab tests against real namespace labs; they need root on Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tasks/bootstrap.sh --test
export PATH="$PWD/.venv/bin:$PATH"
# One command per line: `set -e` ignores a failure inside an `a && b && c` list (except in c).
echo "== ruff"
ruff check orchestrator tests tasks
ruff format --check orchestrator tests tasks
echo "== mypy"
mypy
echo "== pytest"
exec python -m pytest -q -p no:cacheprovider "$@"
