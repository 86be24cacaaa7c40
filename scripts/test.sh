#!/usr/bin/env bash
# Install everything, then run the whole test suite, lint, types and the compliance gate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== pytest"
pytest -q -p no:cacheprovider "$@"
