#!/usr/bin/env bash
# The main job on the embedded default: install, plan every stack offline, bring the local lab
# up (three sites behind a health-checked front door), run the site-loss drill against it under
# load and print its report. The lab stays up afterwards for you to use:
#   .venv/bin/skyfleet lab status     front door URL, API key file, health
#   .venv/bin/skyfleet lab down       stop everything
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

skyfleet plan --all --out out/plans
skyfleet lab down >/dev/null 2>&1 || true   # a lab left by an earlier run
lab_flags=()
[ "$(id -u)" = 0 ] && lab_flags+=(--netns)  # as root: each site in its own network namespace
skyfleet lab up --health-interval 1s "${lab_flags[@]}"
status=0
skyfleet drill run drills/site-loss.yaml --target lab --report reports/site-loss || status=$?
echo
cat reports/site-loss/report.md
echo
echo "Timeline: reports/site-loss/timeline.png. The lab is still running:"
echo "  skyfleet lab status   (URL and API key)    skyfleet lab down   (stop it)"
exit "$status"
