"""Every shipped lab drill on the twin of the shipped stacks, and rollbacks after aborted drills.

The twin (aws-prod, gcp-prod, onprem-prod behind edge-prod, as their plans deploy them) serves
the whole package: every drill rolls its fault back, and the next one starts only when the twin
reports itself healthy again.

A drill whose targets the deployed design does not meet yet is an expected failure: it must miss
only targets listed for it below (anything else missed is a regression), and it fails the day it
meets them all, so the entry is removed. The figures are in docs/drills.md.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.drills.experiment import Drill, load_drill, validate_experiment
from skyfleet.drills.report import DrillReport
from skyfleet.drills.run import run_drill
from skyfleet.drills.target import LabTarget
from skyfleet.lab.state import LabState, load_state
from skyfleet.lab.status import process_state
from tests.support.twin import needs_root, wait_healthy

pytestmark = needs_root

DRILLS = Path(__file__).resolve().parents[2] / "drills"
LAB_DRILLS = [p for p in sorted(DRILLS.glob("*.yaml")) if load_drill(p).skyfleet.requires.target == "lab"]
# The twin's edge is edge-prod (failover); drills of an active-active edge run in
# test_active_active.py, on a twin behind edge-active.
FAILOVER_DRILLS = [
    p for p in LAB_DRILLS if load_drill(p).skyfleet.requires.edge_routing in (None, "failover")
]

# What the deployed design misses today, and why (docs/drills.md has the figures). Sessions,
# turns and tasks survive every drill now (the fleet: agent_app/fleet); what remains is the
# edge's time to move clients of the global name alone, which a DNS edge cannot bring to the
# drills' 0 failed requests and 3 s recovery (docs/fleet.md, "The edge"). Clients that know
# every site (agent_app.client) meet them: site-loss-fleet-client is held to every target.
EXPECTED_MISSES: dict[str, tuple[set[str], str]] = {
    "replica-loss": (
        {"failed_requests", "recovery_seconds"},
        "the ALB keeps a killed task in rotation until its health checks fail it",
    ),
    "broker-outage": (
        {"failed_requests", "recovery_seconds"},
        "readiness includes the queue: the whole site leaves the edge, and clients follow Route 53's "
        "health checks plus the TTL to the next site",
    ),
    "partition": (
        {"failed_requests", "recovery_seconds"},
        "Route 53 failover takes a health check plus the TTL (about 15-20 s) before clients move",
    ),
    "site-loss": (
        {"failed_requests", "recovery_seconds"},
        "Route 53 failover takes a health check plus the TTL (about 15-20 s) before clients move",
    ),
}

# Of the drills that miss targets, those whose design takes the fault out of service by itself,
# before the rollback undoes it: their misses are time and failed requests, never recovery.
RECOVERS_BEFORE_ROLLBACK = {
    "replica-loss": "its load balancer's health checks take the killed task out of rotation",
}


# Targets a run may meet or miss: the measured figure straddles the target, so neither outcome
# says anything about the code. Every other target of the drill is held strictly.
STRADDLING: dict[str, tuple[set[str], str]] = {
    "cache-primary-loss": (
        {"recovery_seconds"},
        "aws-prod's managed cache fails over 5 s after a lost primary (the lab's Sentinels: "
        "ElastiCache publishes no figure); writes come back 4.6-5.7 s after the fault, around the "
        "5 s target",
    ),
}


@pytest.fixture
def lab(twin: LabState) -> LabTarget:
    return LabTarget(state_dir=twin.state_dir)


def _explain(report: DrillReport) -> str:
    missed = [f"{t.metric}={t.value} (target ≤ {t.limit:g})" for t in report.targets if not t.met]
    m = report.measurements
    return (
        f"{report.drill}: status={report.status} deviated={report.deviated} aborted={report.aborted} "
        f"hypothesis={report.hypothesis.model_dump()} missed={missed} errors={m.errors_by_kind} "
        f"notes={report.notes}"
    )


# A failover drill is a timing experiment on a shared 2-core machine: one rerun, shown as RERUN
# in the output, separates a starved run from a real regression (which fails both times).
@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("path", FAILOVER_DRILLS, ids=[p.stem for p in FAILOVER_DRILLS])
def test_shipped_drill_on_the_twin(path: Path, lab: LabTarget, tmp_path: Path) -> None:
    drill = load_drill(path)
    report = run_drill(drill, lab, tmp_path / "report")  # waits for the twin to settle first
    for name in ("report.json", "report.md", "timeline.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert report.fault.at is not None and report.fault.restored_at is not None, _explain(report)
    assert report.measurements.total_requests > 0
    # The report says what it measured: the twin of these stacks, and how it differs from them.
    assert report.system["stacks"] == ["aws-prod", "gcp-prod", "onprem-prod"]
    assert "What these figures describe" in (tmp_path / "report" / "report.md").read_text()
    if drill.skyfleet.load.client == "fleet":  # it passed because the clients moved, not the edge
        assert report.measurements.by_regional_name.get("during"), _explain(report)
    missed = {t.metric for t in report.targets if not t.met}
    expected, why = EXPECTED_MISSES.get(path.stem, (set(), ""))
    if not expected:
        straddling, why = STRADDLING.get(path.stem, (set(), ""))
        if missed and missed <= straddling and not report.passed:
            # Its own error-rate limit may stop it: a cache failover fails nearly every request
            # for its ~5 s, so a 6 s window at 90 % trips when recovery runs a little long.
            assert report.aborted is None or report.aborted.startswith("error rate "), _explain(report)
            assert not report.deviated and not report.notes, _explain(report)  # every wait held
            assert all(t.met for t in report.targets if t.metric not in straddling), _explain(report)
            pytest.xfail(f"{path.stem} missed {sorted(missed)} this time: {why}")
        assert report.passed, _explain(report)
        return
    assert missed, f"{path.stem} now meets every target: remove it from EXPECTED_MISSES. {_explain(report)}"
    assert missed <= expected, f"{path.stem} missed more than expected: {_explain(report)}"
    if path.stem in RECOVERS_BEFORE_ROLLBACK:  # late, but by itself
        wait = report.hypothesis.after_method_wait
        assert wait is not None and wait.met, (
            f"{path.stem}: users not served again before the rollback, though "
            f"{RECOVERS_BEFORE_ROLLBACK[path.stem]}. {_explain(report)}"
        )
    # Only targets may fail: the drill rolled back, and ran to its end or was stopped by its own
    # error-rate limit (the design failing more than half its requests for a while is the same
    # finding as its missed targets; whether a short window crosses the limit is chance).
    assert report.fault.restored_at is not None, _explain(report)
    assert report.aborted is None or report.aborted.startswith("error rate "), _explain(report)
    pytest.xfail(f"{path.stem} misses {sorted(missed)}: {why}")


# --- aborted drills still roll back -----------------------------------------------------------


def _short_drill(
    tmp_path: Path, *, method: list[dict[str, Any]], rollbacks: list[dict[str, Any]], **ext: Any
) -> Drill:
    """A quick replica drill (20 req/s of turns, 1 s warm-up) built from replica-loss.yaml."""
    data = yaml.safe_load((DRILLS / "replica-loss.yaml").read_text())
    sky = data["extensions"][0]
    sky["load"] = {
        "rate": 20,
        "warmup_seconds": 1,
        "settle_seconds": 0.5,
        "max_seconds": 60,
        "drain_seconds": 10,
    }
    sky["targets"] = {"failed_requests": 100000}
    sky["requires"] = {"target": "lab"}
    for key, value in ext.items():
        sky[key] = value
    data["method"], data["rollbacks"] = method, rollbacks
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return validate_experiment(copy.deepcopy(data), path)


def _call(name: str, func: str, pause: float | None = None, **arguments: Any) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": "action",
        "name": name,
        "provider": {
            "type": "python",
            "module": "skyfleet.drills.activity",
            "func": func,
            "arguments": arguments,
        },
    }
    if pause:
        activity["pauses"] = {"after": pause}
    return activity


# The drill engine's own tests (aborts, signals, the safety net, `chaos run`) fault a replica of
# a site the load does not go through (the edge sends it to aws-prod): their drills hold their
# steady state at once, and the twin is settled again as soon as the replica restarts. How a
# lost replica costs the users is replica-loss's to measure.
ENGINE_SITE = "onprem-prod"


def _replica(lab: LabTarget, site: str = ENGINE_SITE, index: int = 0) -> str:
    return process_state(load_state(lab.state_dir).get(f"{site}/api-{index}/api"))


KILL = _call("kill-onprem-api-0", "replica_down", pause=40, site=ENGINE_SITE, index=0)
RESTART = _call("restart-onprem-api-0", "replica_up", site=ENGINE_SITE, index=0)


def test_rollback_runs_when_an_abort_condition_trips(lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab.state_dir)
    drill = _short_drill(tmp_path, method=[KILL], rollbacks=[RESTART], abort={"max_seconds": 15})
    report = run_drill(drill, lab, tmp_path / "report")
    assert report.fault.at is not None and report.fault.restored_at is not None
    # Without the abort the fault would have stayed for the whole 40 s pause.
    assert report.fault.restored_at - report.fault.at < 40, "the abort did not cut the pause short"
    assert report.aborted and "abort.max_seconds=15" in report.aborted
    assert report.status == "interrupted" and not report.passed
    assert {"name": "restart-onprem-api-0", "status": "succeeded"} in report.rollbacks
    assert report.fault.restored_at is not None
    assert _replica(lab) == "running"
    assert "aborted: " in (tmp_path / "report" / "report.md").read_text()


def test_rollback_runs_after_an_exception_mid_method(lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab.state_dir)
    # A site the lab lacks is refused before the run; a replica it lacks is found only when the
    # action runs.
    broken = _call("kill-a-replica-that-is-not-there", "replica_down", site=ENGINE_SITE, index=99)
    drill = _short_drill(
        tmp_path,
        method=[_call("kill", "replica_down", site=ENGINE_SITE, index=0), broken],
        rollbacks=[RESTART],
    )
    report = run_drill(drill, lab, tmp_path / "report")
    assert report.aborted and "'kill-a-replica-that-is-not-there' failed" in report.aborted
    assert "has no api replica 99" in report.aborted
    assert {"name": "restart-onprem-api-0", "status": "succeeded"} in report.rollbacks
    assert _replica(lab) == "running"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_rollback_runs_on_a_signal(signum: int, lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab.state_dir)
    drill = _short_drill(tmp_path, method=[KILL], rollbacks=[RESTART])
    # Late enough to land in the method's 40 s pause, after the warm-up.
    timer = threading.Timer(10.0, os.kill, args=(os.getpid(), signum))
    timer.start()
    try:
        report = run_drill(drill, lab, tmp_path / "report")
    finally:
        timer.cancel()
    assert report.fault.at is not None, "the signal arrived before the fault"
    assert report.status == "interrupted" and not report.passed
    assert {"name": "restart-onprem-api-0", "status": "succeeded"} in report.rollbacks
    assert _replica(lab) == "running"


def test_safety_net_undoes_a_fault_without_declared_rollback(lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab.state_dir)
    drill = _short_drill(
        tmp_path, method=[_call("kill", "replica_down", pause=1, site=ENGINE_SITE, index=1)], rollbacks=[]
    )
    report = run_drill(drill, lab, tmp_path / "report")
    assert {
        "name": "undo replica_down",
        "key": f"replica:{ENGINE_SITE}:1",
        "status": "succeeded",
    } in report.rollbacks
    assert _replica(lab, index=1) == "running"


def test_drill_runs_under_chaos_run(lab: LabTarget, tmp_path: Path) -> None:
    """The same drill file runs under the Chaos Toolkit CLI, with Skyfleet's control and report."""
    wait_healthy(lab.state_dir)
    drill = _short_drill(
        tmp_path,
        method=[_call("kill", "replica_down", pause=2, site=ENGINE_SITE, index=0)],
        rollbacks=[RESTART],
    )
    env = {**os.environ, "SKYFLEET_LAB_DIR": lab.state_dir, "SKYFLEET_REPORT_DIR": str(tmp_path / "report")}
    journal = tmp_path / "journal.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "chaos"),
            "--no-log-file",
            "run",
            "--journal-path",
            str(journal),
            "--rollback-strategy",
            "always",
            "--hypothesis-strategy",
            "continuously",
            "--hypothesis-frequency",
            "1",
            str(drill.path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(journal.read_text())["status"] == "completed"
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["fault"]["name"] == "replica_down" and report["total_requests"] > 0
    assert report["rollbacks"] == [{"name": "restart-onprem-api-0", "status": "succeeded"}]
    assert f"report in {tmp_path / 'report'}" in proc.stdout
    assert _replica(lab) == "running"
