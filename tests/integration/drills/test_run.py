"""Whole drills without the lab: a stack target whose fault acts on moto's ECS, and whose load
goes to a real agent app, run by chaoslib with Skyfleet's control.

The steady-state hypothesis adds ``tests.integration.drills.probes.steady_unless``: the system takes a
while to hold its steady state again after the fault and after the rollback, as a slow machine
does. The verdict must come from waiting for it (bounded), not from when the check happens.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.drills.experiment import Drill, validate_experiment
from skyfleet.drills.run import run_drill
from skyfleet.drills.target import OutputsSource, StackTarget
from tests.support.drills import SITES, AgentSite, ecs_service

DRILLS = Path(__file__).resolve().parents[3] / "drills"


@pytest.fixture
def api_count(aws_env: str) -> Callable[[], int]:
    """The stack's api service, 2 tasks on moto's ECS, for the fault to scale to 0 and back."""
    return ecs_service("run-cluster", "run-api", 2)


def _target(tmp_path: Path, agent: AgentSite) -> StackTarget:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps({**SITES["aws-dev"], "clusterName": "run-cluster", "apiServiceName": "run-api"})
    )
    return StackTarget(
        stack="aws-dev", source=OutputsSource(outputs_file=outputs), load_url=agent.url, api_key=agent.api_key
    )


def _drill(tmp_path: Path, *, after_fault: float, after_rollback: float, timeout: float) -> Drill:
    data: dict[str, Any] = yaml.safe_load((DRILLS / "aws-service-loss.yaml").read_text())
    sky = data["extensions"][0]
    sky["load"] = {
        "rate": 20,
        "warmup_seconds": 1,
        "settle_seconds": 0.5,
        "max_seconds": 60,
        "drain_seconds": 10,
    }
    sky["targets"] = {"failed_requests": 0, "sessions_lost": 0, "turns_lost": 0, "tasks_lost": 0}
    sky["abort"] = {"max_seconds": 90}
    sky["recovery_timeout_seconds"] = timeout
    data["steady-state-hypothesis"]["probes"][0]["provider"]["arguments"] = {"window_seconds": 2}
    data["steady-state-hypothesis"]["probes"].append(
        {
            "type": "probe",
            "name": "system-steady",
            "tolerance": True,
            "provider": {
                "type": "python",
                "module": "tests.integration.drills.probes",
                "func": "steady_unless",
                "arguments": {"after_fault": after_fault, "after_rollback": after_rollback},
            },
        }
    )
    data["method"][0]["pauses"] = {"after": 1}
    path = tmp_path / "slow-recovery.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return validate_experiment(copy.deepcopy(data), path)


def test_the_verdict_waits_for_a_slow_failover_and_a_slow_restart(
    agent_site: AgentSite, api_count: Callable[[], int], tmp_path: Path
) -> None:
    """Steady again 3 s after the fault (2 s past the pause) and 2 s after the rollback: a
    check at a fixed moment fails this drill; waiting for it, bounded, passes it and says how
    long each took."""
    drill = _drill(tmp_path, after_fault=3, after_rollback=2, timeout=20)
    report = run_drill(drill, _target(tmp_path, agent_site), tmp_path / "report")
    h = report.hypothesis
    missed = [t for t in report.targets if not t.met]
    assert report.passed, (report.status, report.deviated, h.model_dump(), report.notes, missed)
    assert h.before is True and h.after is True and not report.deviated
    assert h.after_method_wait is not None and h.after_method_wait.met
    assert h.after_method_wait.seconds >= 1.0 and h.after_method_wait.checks >= 2
    assert h.after_rollback_wait is not None and h.after_rollback_wait.met
    assert h.after_rollback_wait.checks >= 2
    recovered = report.measurements.recovered_after_rollback_seconds
    assert recovered is not None and recovered >= 1.0
    assert api_count() == 2  # the rollback restored the count
    body = json.loads((tmp_path / "report" / "report.json").read_text())
    assert body["recovered_after_rollback_seconds"] == recovered
    assert body["hypothesis"]["after_rollback_wait"]["met"] is True
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| recovered after the rollback (rollbacks done → steady state holds) |" in md


def test_a_drill_whose_steady_state_never_returns_fails_saying_so(
    agent_site: AgentSite, api_count: Callable[[], int], tmp_path: Path
) -> None:
    drill = _drill(tmp_path, after_fault=0, after_rollback=-1, timeout=3)
    report = run_drill(drill, _target(tmp_path, agent_site), tmp_path / "report")
    wait = report.hypothesis.after_rollback_wait
    assert wait is not None and not wait.met and wait.checks >= 2
    assert not report.passed
    # Everything else held: it is the steady state after the rollback that failed the drill.
    assert report.status == "completed" and not report.deviated and all(t.met for t in report.targets)
    assert report.measurements.recovered_after_rollback_seconds is None
    why = "the steady state did not hold within 3 s after the rollback"
    assert any(n.startswith(why) and "'system-steady' returned False" in n for n in report.notes), (
        report.notes
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**FAILED**" in md and why in md and "**not within 3 s**" in md
    assert api_count() == 2


def test_a_run_whose_load_generator_was_starved_is_invalid(
    agent_site: AgentSite, api_count: Callable[[], int], tmp_path: Path
) -> None:
    """A load generator that cannot keep its schedule makes requests time out in the client:
    the figures are the machine's, so the drill must not pass on them or fail on them silently."""
    drill = _drill(tmp_path, after_fault=0, after_rollback=0, timeout=20)
    data = copy.deepcopy(drill.experiment)
    data["method"].append(
        {
            "type": "probe",
            "name": "starve-the-load",
            "provider": {
                "type": "python",
                "module": "tests.integration.drills.probes",
                "func": "starve_load",
                "arguments": {"seconds": 8},
            },
        }
    )
    drill = validate_experiment(data, drill.path)
    report = run_drill(drill, _target(tmp_path, agent_site), tmp_path / "report")
    assert not report.passed
    lag = report.measurements.send_lag_ms.p50
    assert lag is not None and lag > 250
    assert any(n.startswith("invalid run: the load generator sent its requests") for n in report.notes)
    assert "invalid run" in (tmp_path / "report" / "report.md").read_text()
