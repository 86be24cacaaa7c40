#!/usr/bin/env bash
# Regenerate requirements-dev.lock, the dev environment scripts/install.sh --dev installs: the
# project's dependencies and its dev extras, pinned with hashes, for CPython 3.11 on x86_64 Linux
# (this project's machines and the CI runners). Run it after changing the dependencies in
# pyproject.toml; pins still allowed are kept. ARGS go to uv (e.g. --upgrade, --upgrade-package X).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q uv
"$tools/venv/bin/uv" pip compile pyproject.toml --extra dev --python-version 3.11 \
  --python-platform x86_64-unknown-linux-gnu --generate-hashes --native-tls \
  --custom-compile-command scripts/lock.sh -o requirements-dev.lock "$@"
