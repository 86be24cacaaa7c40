#!/usr/bin/env bash
# Lint: ruff, ruff format and pyright (the folders in pyproject.toml's [tool.pyright]: the
# packages, benchmarks and tests), with the tools of .venv (scripts/install.sh --dev).
#   scripts/lint.sh                 all three
#   scripts/lint.sh ruff|format|pyright ...   only those
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(ruff format pyright)
for step in "${steps[@]}"; do
  case "$step" in
    ruff) echo "== ruff check"; "$bin/ruff" check . ;;
    format) echo "== ruff format --check"; "$bin/ruff" format --check . ;;
    # The provider SDKs are large: pyright's default Node heap (about 4 GB) makes it drop its
    # type cache over and over (measured: 173 s instead of 73 s).
    pyright) echo "== pyright"; NODE_OPTIONS="--max-old-space-size=8192 ${NODE_OPTIONS:-}" "$bin/pyright" ;;
    *) echo "scripts/lint.sh: unknown step '$step' (ruff, format or pyright)" >&2; exit 2 ;;
  esac
done
