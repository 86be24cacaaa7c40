"""The run context, the action declarations and the ledger, without a lab.

Faults act on moto's ECS (a real AWS API emulator) where one is needed.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skyfleet.drills import activity, context
from skyfleet.drills.actions.registry import ACTIONS, Applied, LabFault
from skyfleet.drills.context import RunContext
from skyfleet.drills.experiment import LoadSpec
from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.drills.load import LoadProcess
from skyfleet.drills.target import LabTarget, OutputsSource, StackTarget
from skyfleet.testing.servers import wait_until
from tests.support.drills import SITES, AgentSite, ecs_service

ROOT = Path(__file__).resolve().parents[3]
DRILLS_PKG = ROOT / "skyfleet" / "drills"
ORCHESTRATION = {"skyfleet.drills.run", "skyfleet.drills.control", "skyfleet.drills.cli"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize(
    "module",
    [
        "context.py",
        "activity.py",
        "hypothesis.py",
        *(f"actions/{p.name}" for p in (DRILLS_PKG / "actions").glob("*.py")),
    ],
)
def test_actions_and_probes_never_import_the_orchestrator(module: str) -> None:
    assert not (_imports(DRILLS_PKG / module) & ORCHESTRATION)


def test_importing_the_actions_loads_no_orchestrator_and_no_sdk() -> None:
    """Drill validation and dry runs import every action: no run loop, no cloud SDK, no lab."""
    code = (
        "import sys, json, skyfleet.drills.activity, skyfleet.drills.hypothesis\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {
        "skyfleet.drills.run",
        "skyfleet.drills.control",
        "chaoslib",
        "boto3",
        "kubernetes",
        "skyfleet.lab.faults",
    }
    assert not (loaded & heavy)
    assert "google.cloud.run_v2" not in loaded


def test_every_fault_is_declared_with_its_rollback_and_exported() -> None:
    faults = {n: a for n, a in ACTIONS.items() if a.kind == "fault"}
    assert len(faults) == 15
    for name, info in faults.items():
        assert info.undo is not None and ACTIONS[info.undo].kind == "rollback", name
        assert ACTIONS[info.undo].platform == info.platform, name
    rollbacks = {n for n, a in ACTIONS.items() if a.kind == "rollback"}
    assert rollbacks == {a.undo for a in faults.values()}
    # Drill files name every action through skyfleet.drills.activity.
    assert set(activity.__all__) - {"ACTIONS", "ActionInfo"} == set(ACTIONS)
    for name in ACTIONS:
        fn = getattr(activity, name)
        assert inspect.isfunction(fn) and fn.__name__ == name  # what chaoslib looks up
        assert "configuration" in inspect.signature(fn).parameters


def test_fault_and_rollback_signatures_come_from_the_declaration() -> None:
    assert str(inspect.signature(activity.replica_down)) == (
        "(site: 'str', index: 'int' = 0, configuration: 'Configuration' = None)"
    )
    assert str(inspect.signature(activity.replica_up)) == str(inspect.signature(activity.replica_down))
    assert list(inspect.signature(activity.aws_service_restore).parameters) == [
        "service",
        "count",
        "configuration",
    ]
    assert list(inspect.signature(activity.cache_restore).parameters) == ["site", "configuration"]
    assert activity.site_down.__module__ == "skyfleet.drills.actions.lab"
    with pytest.raises(TypeError, match="unexpected keyword argument 'zone'"):
        activity.site_down(site="aws", zone="a")


def test_a_key_over_an_argument_the_rollback_lacks_is_refused() -> None:
    class Broken(LabFault):
        fault, rollback, key = "broken_down", "broken_up", "broken:{site}:{index}"

        def apply(self, lab: LabTarget, site: str, index: int = 0) -> Applied:
            raise AssertionError("never applied")

        def restore(self, lab: LabTarget, site: str) -> None:
            return None

    with pytest.raises(TypeError, match=r"key 'broken:\{site\}:\{index\}' uses \['index'\]"):
        Broken.functions()
    assert "broken_down" not in ACTIONS and "broken_up" not in ACTIONS


def test_an_action_refuses_the_wrong_kind_of_target(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="acts on the lab, but the drill targets stack aws-dev"):
        activity.site_down(site="aws", configuration={"skyfleet_target": "stack:aws-dev"})
    lab = {"skyfleet_target": "lab", "skyfleet_lab_dir": str(tmp_path)}
    with pytest.raises(RuntimeError, match=r"acts on a deployed stack, but the drill targets lab \("):
        activity.aws_service_scale_to_zero(configuration=lab)


# --- the context and the ledger, with a fault on moto's ECS -------------------------------------


@pytest.fixture
def api_count(aws_env: str) -> Callable[[], int]:
    """The stack's api service, 4 tasks on moto's ECS: its desired count."""
    return ecs_service("ctx-cluster", "ctx-api", 4)


@pytest.fixture
def stack(api_count: Callable[[], int], tmp_path: Path) -> StackTarget:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps({**SITES["aws-dev"], "clusterName": "ctx-cluster", "apiServiceName": "ctx-api"})
    )
    return StackTarget(stack="aws-dev", source=OutputsSource(outputs_file=outputs))


@pytest.fixture
def run_context(stack: StackTarget) -> Any:
    said: list[str] = []
    ctx = RunContext(stack, fault_site="aws", say=said.append)
    context.activate(ctx)
    try:
        yield ctx, said
    finally:
        context.activate(None)


def test_a_fault_is_in_the_ledger_and_the_context_before_its_rollback(
    run_context: Any, api_count: Callable[[], int]
) -> None:
    ctx, said = run_context
    applied = activity.aws_service_scale_to_zero(service="api")
    assert api_count() == 0 and applied["previous_desired_count"] == 4
    # The drill knows when and where, and can undo it, whatever happens next.
    assert ctx.fault.name == "aws_service_scale_to_zero" and ctx.fault.site == "aws"
    assert ctx.fault.at == applied["time"] and ctx.fault.restored_at is None
    [open_fault] = ctx.ledger.pending()
    assert (open_fault.key, open_fault.action) == ("ecs:api", "aws_service_scale_to_zero")
    assert open_fault.description == "ECS api scaled 0 (was 4)"
    restored = activity.aws_service_restore(service="api")
    assert restored["restored"] is True and api_count() == 4
    assert ctx.ledger.pending() == [] and ctx.fault.restored_at == restored["time"]
    assert said == ["fault applied: aws_service_scale_to_zero (aws)", "fault rolled back"]
    # Declared rollback, then the safety net: the second finds nothing open and changes nothing.
    assert activity.aws_service_restore(service="api")["restored"] is False
    assert ctx.ledger.restore_all("end of drill") == [] and api_count() == 4


def test_the_safety_net_undoes_what_no_rollback_did(run_context: Any, api_count: Callable[[], int]) -> None:
    ctx, _ = run_context
    activity.aws_service_scale_to_zero(service="api")
    assert api_count() == 0
    done = ctx.ledger.restore_all("drill ended with the fault still applied")
    assert done == [{"name": "undo aws_service_scale_to_zero", "key": "ecs:api", "status": "succeeded"}]
    assert api_count() == 4 and ctx.ledger.pending() == []


def test_outside_a_drill_faults_go_to_the_standalone_ledger(
    stack: StackTarget, api_count: Callable[[], int]
) -> None:
    assert context.current() is None
    cfg = {"skyfleet_target": "stack:aws-dev", "skyfleet_outputs_file": str(stack.source.outputs_file)}
    activity.aws_service_scale_to_zero(service="api", configuration=cfg)
    assert api_count() == 0
    assert [f.key for f in context.ledger().pending()] == ["ecs:api"]
    assert activity.aws_service_restore(service="api", configuration=cfg)["restored"] is True
    assert api_count() == 4 and context.ledger().pending() == []


def test_load_probes_need_a_load(stack: StackTarget) -> None:
    from skyfleet.drills.context import NoLoadError
    from skyfleet.drills.hypothesis import success_rate

    with pytest.raises(NoLoadError, match="no drill is running"):
        success_rate()
    context.activate(RunContext(stack))
    try:
        with pytest.raises(NoLoadError, match="no drill load is running"):
            success_rate()
    finally:
        context.activate(None)


def test_success_rate_counts_requests_left_hanging_as_failures(
    stack: StackTarget, agent_site: AgentSite
) -> None:
    """A record is made when an answer comes: requests to a site that answers nothing leave no
    trace until their timeout. The load streams each send, so the probe sees them overdue."""
    from skyfleet.drills.hypothesis import success_rate

    spec = LoadSpec(rate=20, max_seconds=60, warmup_seconds=0, request_timeout_seconds=15)
    load = LoadProcess(FrontDoor(agent_site.url, (agent_site.api_key,)), spec)
    ctx = RunContext(stack)
    context.activate(ctx)
    load.start()
    ctx.load = load.recording
    try:
        wait_until(lambda: success_rate() == 1.0 and len(ctx.load_window(2)) >= 20, timeout=20, what="steady")
        os.kill(agent_site.api.proc.pid, signal.SIGSTOP)  # the site takes requests and answers nothing
        try:
            wait_until(lambda: success_rate() < 0.5, timeout=10, what="the hanging requests to count")
        finally:
            os.kill(agent_site.api.proc.pid, signal.SIGCONT)
        # Answered at last (within their timeout): served again.
        wait_until(lambda: success_rate() == 1.0, timeout=20, what="the steady state again")
    finally:
        context.activate(None)
        load.stop(5)


def test_success_rate_waits_for_requests_slow_by_design(stack: StackTarget) -> None:
    """Requests slower than the window are not overdue while the window's answers take as long."""
    from skyfleet.drills.hypothesis import success_rate
    from skyfleet.drills.records import LoadRecording, RequestRecord

    ctx = RunContext(stack)
    now = time.time()
    recording = LoadRecording(started_at=now - 60)
    ctx.load = recording
    for i in range(40):  # turns of 3 s: sent 4.5 s to 3.0 s ago, answered in the last 1.5 s
        sent = now - 4.5 + i * 0.0375
        recording.note_sent(sent)
        recording.add(RequestRecord("message", sent, sent, 3000.0, 200, "aws-prod"))
    for i in range(60):  # and those sent since, still running
        recording.note_sent(now - 3.0 + i * 0.05)
    context.activate(ctx)
    try:
        assert recording.overdue(2.0) > 0 and success_rate() == 1.0  # grace: 1.5 × their p99
        recording.add(RequestRecord("message", now - 1.9, now - 1.9, 1800.0, 503, "aws-prod"))
        assert success_rate() == round(40 / 41, 4)
    finally:
        context.activate(None)
