#!/usr/bin/env bash
# The main job on the embedded default: install, bring the local lab up (three sites behind a
# health-checked front door), run the site-loss drill against it and print its report.
# The lab stays up afterwards for you to use; `.venv/bin/skyfleet lab down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

skyfleet plan --all --out out/plans
skyfleet lab up
skyfleet drill run drills/site-loss.yaml --target lab --report reports/site-loss
cat reports/site-loss/report.md
echo
echo "The lab is still running: 'skyfleet lab status' shows its URL and API key; 'skyfleet lab down' stops it."
