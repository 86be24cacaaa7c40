"""Every shipped drill in a real lab, and rollbacks after aborted drills.

One three-site lab (2 api replicas per site, 1 s health checks; one network namespace per site
when root, as CI is) serves the whole module: every drill rolls its fault back, and the next
one starts only when the lab reports itself healthy again.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.drills.experiment import Drill, load_drill, validate_experiment
from skyfleet.drills.report import DrillReport
from skyfleet.drills.run import DrillSkipped, run_drill
from skyfleet.drills.target import LabTarget
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.state import load_state
from skyfleet.lab.status import lab_status, process_state
from tests.lab.conftest import free_base_port

DRILLS = Path(__file__).resolve().parents[2] / "drills"
LAB_DRILLS = [p for p in sorted(DRILLS.glob("*.yaml")) if load_drill(p).skyfleet.requires.target == "lab"]
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabTarget]:
    state_dir = tmp_path_factory.mktemp("drill-lab")
    config = LabConfig.model_validate(
        {
            "sites": ["aws", "gcp", "onprem"],
            "state_dir": state_dir,
            "base_port": free_base_port(),
            "health_interval": "1s",
            "netns": IS_ROOT,
        }
    )
    up(config)
    try:
        yield LabTarget(state_dir=str(state_dir))
    finally:
        down(str(state_dir))
        assert marked_pids(str(state_dir)) == []


def wait_healthy(lab: LabTarget, timeout: float = 60.0) -> None:
    """Every process running and every front door server UP (a previous drill's rollback done)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = lab_status(lab.state_dir)
            if last["healthy"]:
                return
        except LabError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"lab not healthy after {timeout:g} s: {last}")


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
@pytest.mark.parametrize("path", LAB_DRILLS, ids=[p.stem for p in LAB_DRILLS])
def test_shipped_drill_passes_in_the_lab(path: Path, lab: LabTarget, tmp_path: Path) -> None:
    drill = load_drill(path)
    if drill.skyfleet.requires.root and not IS_ROOT:
        with pytest.raises(DrillSkipped, match="needs root"):
            run_drill(drill, lab, tmp_path)
        pytest.skip(f"{path.stem} needs root (network namespaces, tc netem)")
    wait_healthy(lab)
    report = run_drill(drill, lab, tmp_path / "report")
    for name in ("report.json", "report.md", "timeline.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert report.fault.at is not None and report.fault.restored_at is not None
    assert report.measurements.total_requests > 0
    assert report.passed, _explain(report)


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


def _replica(lab: LabTarget, site: str = "aws", index: int = 0) -> str:
    return process_state(load_state(lab.state_dir).get(f"{site}-api-{index}"))


KILL = _call("kill-aws-api-0", "replica_down", pause=40, site="aws", index=0)
RESTART = _call("restart-aws-api-0", "replica_up", site="aws", index=0)


def test_rollback_runs_when_an_abort_condition_trips(lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab)
    drill = _short_drill(tmp_path, method=[KILL], rollbacks=[RESTART], abort={"max_seconds": 15})
    report = run_drill(drill, lab, tmp_path / "report")
    assert report.fault.at is not None and report.fault.restored_at is not None
    # Without the abort the fault would have stayed for the whole 40 s pause.
    assert report.fault.restored_at - report.fault.at < 40, "the abort did not cut the pause short"
    assert report.aborted and "abort.max_seconds=15" in report.aborted
    assert report.status == "interrupted" and not report.passed
    assert {"name": "restart-aws-api-0", "status": "succeeded"} in report.rollbacks
    assert report.fault.restored_at is not None
    assert _replica(lab) == "running"
    assert "aborted: " in (tmp_path / "report" / "report.md").read_text()


def test_rollback_runs_after_an_exception_mid_method(lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab)
    broken = _call("kill-a-replica-of-no-site", "replica_down", site="nosuchsite", index=0)
    drill = _short_drill(
        tmp_path, method=[_call("kill", "replica_down", site="aws", index=0), broken], rollbacks=[RESTART]
    )
    report = run_drill(drill, lab, tmp_path / "report")
    assert report.aborted and "'kill-a-replica-of-no-site' failed" in report.aborted
    assert "nosuchsite" in report.aborted
    assert {"name": "restart-aws-api-0", "status": "succeeded"} in report.rollbacks
    assert _replica(lab) == "running"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_rollback_runs_on_a_signal(signum: int, lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab)
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
    assert {"name": "restart-aws-api-0", "status": "succeeded"} in report.rollbacks
    assert _replica(lab) == "running"


def test_safety_net_undoes_a_fault_without_declared_rollback(lab: LabTarget, tmp_path: Path) -> None:
    wait_healthy(lab)
    drill = _short_drill(
        tmp_path, method=[_call("kill", "replica_down", pause=1, site="aws", index=1)], rollbacks=[]
    )
    report = run_drill(drill, lab, tmp_path / "report")
    assert {"name": "undo replica_down", "key": "replica:aws:1", "status": "succeeded"} in report.rollbacks
    assert _replica(lab, index=1) == "running"


def test_drill_runs_under_chaos_run(lab: LabTarget, tmp_path: Path) -> None:
    """The same drill file runs under the Chaos Toolkit CLI, with Skyfleet's control and report."""
    wait_healthy(lab)
    drill = _short_drill(
        tmp_path, method=[_call("kill", "replica_down", pause=2, site="aws", index=0)], rollbacks=[RESTART]
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
    assert report["rollbacks"] == [{"name": "restart-aws-api-0", "status": "succeeded"}]
    assert f"report in {tmp_path / 'report'}" in proc.stdout
    assert _replica(lab) == "running"
