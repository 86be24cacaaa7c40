#!/usr/bin/env bash
# The main job on the embedded default: install, plan every shipped stack offline, bring up the
# lab twin of the prod stacks (aws-prod, gcp-prod, onprem-prod behind edge-prod, each built from
# its plan), run the site-loss drill against it under load and print its report: what losing
# the serving site costs with the design the stacks deploy.
#
# The twin runs every site and pod in namespaces of its own, so the lab commands run as root
# (through sudo when you are not root). The twin stays up afterwards:
#   sudo .venv/bin/skyfleet lab status     names, addresses, what differs from the plans
#   sudo .venv/bin/skyfleet lab down       stop everything
#
# Exit status: 0 when the drill ran to its report (whatever its verdict: a missed target is a
# finding, printed with its figure), the drill's own code (2, 3) when it could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

as_root=()
[ "$(id -u)" = 0 ] || as_root=(sudo)
skyfleet=("${as_root[@]}" "$PWD/.venv/bin/skyfleet")

skyfleet plan --all --out out/plans
"${skyfleet[@]}" lab down >/dev/null 2>&1 || true   # a twin left by an earlier run
"${skyfleet[@]}" lab up
status=0
"${skyfleet[@]}" drill run drills/site-loss.yaml --target lab --report reports/site-loss || status=$?
echo
cat reports/site-loss/report.md
echo
echo "Timeline: reports/site-loss/timeline.png. The twin is still running:"
echo "  ${as_root[*]} skyfleet lab status    ${as_root[*]} skyfleet lab down"
if [ "$status" = 1 ]; then
  echo "The drill ran: the deployed design misses the targets marked **no** above (docs/drills.md)."
  exit 0
fi
exit "$status"
