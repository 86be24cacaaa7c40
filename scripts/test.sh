#!/usr/bin/env bash
# Install everything, then run the whole test suite, lint, types and the compliance gate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== compliance gate over every shipped stack (offline, through the Analyzer gRPC protocol)"
mkdir -p reports
skyfleet check --all --sarif reports/policy.sarif --junit reports/policy.xml --json reports/policy.json
echo "== pytest"
pytest -q -p no:cacheprovider "$@"
