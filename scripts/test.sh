#!/usr/bin/env bash
# The test command (the README's, and CI's through .ci/run): install with the dev tools from the
# lockfile, then lint, the compliance gate and the three test tiers.
#
#   scripts/test.sh            everything: lint, gate, the unit and integration tiers on parallel
#                              workers, and the lab tier (tests/lab, needs root) as a pytest
#                              process of its own, serial
#   scripts/test.sh --fast     the unit tier only, on the installed .venv (under a minute)
#   scripts/test.sh ARGS...    ARGS go to every pytest run (-x, -k EXPR, ...)
#
# SKYFLEET_TEST_WORKERS  xdist workers for the unit and integration tiers (default: the core
#                        count; beside the lab tier they run at a lower CPU priority, so they take
#                        what its drills leave idle)
# SKYFLEET_LAB           when the lab tier runs: "alongside" (default: from the start, beside the
#                        other steps, which run at a lower CPU priority so the drills' timing
#                        keeps the machine first; the integration tier's timing tests raise theirs
#                        back), "after" (alone, once the rest is done) or "skip"
#
# Reports (JUnit XML per tier, the gate's SARIF, JUnit and JSON, the lab tier's log) go to reports/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit

fast=""
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
lab_mode="${SKYFLEET_LAB:-alongside}"
workers="${SKYFLEET_TEST_WORKERS:-$(nproc)}"
case "$lab_mode" in alongside | after | skip) ;; *)
  echo "SKYFLEET_LAB must be alongside, after or skip (given: $lab_mode)" >&2
  exit 2
  ;;
esac
pytest_args=(-q -p no:cacheprovider "$@")
selecting=$# # the caller's ARGS may select no test of a tier

if [ -n "$fast" ]; then
  [ -x .venv/bin/pytest ] || bash scripts/install.sh --dev || exit
  exec .venv/bin/pytest tests/unit -m unit -n "$workers" --dist loadfile "${pytest_args[@]}"
fi

bash scripts/install.sh --dev || exit
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p reports
rm -f reports/tests-*.xml

declare -a names=() results=() seconds=()
failed=0
record() { # name, exit code, start time
  names+=("$1")
  results+=("$2")
  seconds+=("$(($(date +%s) - $3))")
  [ "$2" = 0 ] || failed=1
}

# pytest's exit code 5 (no test collected) fails the run, unless the caller's ARGS selected no test.
pytest_status() {
  if [ "$1" = 5 ] && [ "$selecting" -gt 0 ]; then echo 0; else echo "$1"; fi
}

lab_pid=""
lab_started=0
lab_log=reports/lab-tier.log
start_lab() {
  echo "== lab tier (tests/lab, serial) started; its output: $lab_log"
  lab_started=$(date +%s)
  # Job control on, so the background pytest takes SIGINT (a script's background jobs ignore it).
  set -m
  pytest tests/lab -m lab --junitxml reports/tests-lab.xml "${pytest_args[@]}" >"$lab_log" 2>&1 &
  lab_pid=$!
  set +m
}
finish_lab() {
  local code
  wait "$lab_pid"
  code=$(pytest_status $?)
  lab_pid=""
  echo "== lab tier output"
  cat "$lab_log"
  record "lab tier" "$code" "$lab_started"
}
# shellcheck disable=SC2317  # the INT/TERM trap runs it
stop_lab() { # interrupted: let the lab tier tear its twin down (SIGINT runs pytest's teardown)
  if [ -n "$lab_pid" ]; then
    kill -INT "$lab_pid" 2>/dev/null
    wait "$lab_pid"
  fi
  exit 130
}
trap stop_lab INT TERM

nice_cmd=()
if [ "$lab_mode" = alongside ]; then
  start_lab
  nice_cmd=(nice -n 10)
fi

t=$(date +%s)
"${nice_cmd[@]}" bash scripts/lint.sh
record lint $? "$t"

echo "== compliance gate over every shipped stack (offline, through the Analyzer gRPC protocol)"
t=$(date +%s)
"${nice_cmd[@]}" skyfleet check --all --sarif reports/policy.sarif --junit reports/policy.xml \
  --json reports/policy.json
record "compliance gate" $? "$t"

echo "== unit and integration tiers ($workers workers)"
t=$(date +%s)
"${nice_cmd[@]}" pytest tests/unit tests/integration -m "unit or integration" -n "$workers" \
  --dist loadfile --junitxml reports/tests-unit-integration.xml "${pytest_args[@]}"
record "unit + integration tiers" "$(pytest_status $?)" "$t"

case "$lab_mode" in
  alongside) finish_lab ;;
  after)
    start_lab
    finish_lab
    ;;
  skip) echo "== lab tier skipped (SKYFLEET_LAB=skip)" ;;
esac
trap - INT TERM

echo "== summary"
for i in "${!names[@]}"; do
  if [ "${results[$i]}" = 0 ]; then status=ok; else status="FAILED (exit ${results[$i]})"; fi
  printf '  %-26s %-16s %5s s\n' "${names[$i]}" "$status" "${seconds[$i]}"
done
# Every tier's tests in one closing line, from the JUnit reports.
shopt -s nullglob
junit_reports=(reports/tests-*.xml)
[ ${#junit_reports[@]} -eq 0 ] || python - "${junit_reports[@]}" <<'PY'
import sys
import xml.etree.ElementTree as ET

n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in n:
            n[key] += int(suite.get(key, 0))
failed = n["failures"] + n["errors"]
print(f"tests: {n['tests'] - failed - n['skipped']} passed, {failed} failed, {n['skipped']} skipped")
PY
exit "$failed"
