"""A drill killed outright (SIGKILL: no safety net runs) leaves its faults applied and on record
in its ledger file; ``skyfleet drill rollback REPORT_DIR`` undoes exactly what they changed.

The drill is the real CLI in its own process, against a stack whose faults act on moto's ECS,
Application Auto Scaling and EC2, with its load going to a real agent app.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml

from skyfleet.drills.actions import aws
from skyfleet.drills.rollback import LEDGER_FILE, Ledger, read_ledger
from skyfleet.drills.target import OutputsSource, StackTarget
from skyfleet.testing.servers import wait_until
from tests.support.drills import SITES, AgentSite, ecs_service

DRILLS = Path(__file__).resolve().parents[3] / "drills"


def skyfleet(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "skyfleet.cli", *map(str, args)]
    wide = {**(env or os.environ), "COLUMNS": "400"}  # rich's table: one line per fault
    return subprocess.run(argv, capture_output=True, text=True, env=wide, timeout=120)


def security_group(cidr: str) -> tuple[str, Callable[[], dict[str, tuple[int, str]]]]:
    """A task security group with two ingress rules on moto, and a reader of its rules by id."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="killed-tasks", Description="tasks", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "IpRanges": [{"CidrIp": f"{cidr}.1.0/24"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 8443,
                "ToPort": 8443,
                "IpRanges": [{"CidrIp": f"{cidr}.2.0/24"}],
            },
        ],
    )

    def rules() -> dict[str, tuple[int, str]]:
        found = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
        return {
            r["SecurityGroupRuleId"]: (r["FromPort"], r["CidrIpv4"])
            for r in found["SecurityGroupRules"]
            if not r["IsEgress"]
        }

    return group, rules


def scaling(cluster: str, service: str, minimum: int) -> Callable[[], dict[str, bool]]:
    """A scalable target for the service (its declared minimum); returns a reader of its suspension."""
    client = boto3.client("application-autoscaling", region_name="us-east-1")
    rid = f"service/{cluster}/{service}"
    client.register_scalable_target(
        ServiceNamespace="ecs",
        ResourceId=rid,
        ScalableDimension=aws.ECS_DIMENSION,
        MinCapacity=minimum,
        MaxCapacity=10,
    )

    def suspended() -> dict[str, bool]:
        (found,) = client.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])[
            "ScalableTargets"
        ]
        return {k: bool(v) for k, v in (found.get("SuspendedState") or {}).items()}

    return suspended


def drill_file(tmp_path: Path) -> Path:
    data: dict[str, Any] = yaml.safe_load((DRILLS / "aws-service-loss.yaml").read_text())
    sky = data["extensions"][0]
    sky["load"] = {"rate": 5, "warmup_seconds": 1, "settle_seconds": 0.5, "max_seconds": 600}
    data["steady-state-hypothesis"]["probes"][0]["provider"]["arguments"] = {"window_seconds": 2}
    scale, restore = data["method"][0], data["rollbacks"][0]
    cut = {
        "type": "action",
        "name": "cut-task-ingress",
        "provider": {
            "type": "python",
            "module": "skyfleet.drills.activity",
            "func": "aws_security_group_cut",
        },
        "pauses": {"after": 300},  # the drill is killed long before this ends
    }
    scale.pop("pauses", None)
    data["method"] = [scale, cut]
    uncut = {
        "type": "action",
        "name": "restore-task-ingress",
        "provider": {
            "type": "python",
            "module": "skyfleet.drills.activity",
            "func": "aws_security_group_restore",
        },
    }
    data["rollbacks"] = [restore, uncut]
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_drill_killed_outright_is_undone_by_drill_rollback(
    agent_site: AgentSite, aws_env: str, tmp_path: Path
) -> None:
    count = ecs_service("killed-cluster", "killed-api", 3)
    suspended = scaling("killed-cluster", "killed-api", minimum=2)
    group, rules = security_group("10.61")
    before = rules()
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                **SITES["aws-dev"],
                "clusterName": "killed-cluster",
                "apiServiceName": "killed-api",
                "taskSecurityGroupId": group,
            }
        )
    )
    report = tmp_path / "report"
    ledger = report / LEDGER_FILE
    env = {**os.environ, "SKYFLEET_API_KEY": agent_site.api_key}
    argv = [
        sys.executable,
        "-m",
        "skyfleet.cli",
        "drill",
        "run",
        str(drill_file(tmp_path)),
        "--stack",
        "aws-dev",
    ]
    argv += ["--outputs", str(outputs), "--load-url", agent_site.url, "--report", str(report)]
    drill = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_until(
            lambda: ledger.exists() and [f.state for f in read_ledger(ledger)] == ["applied", "applied"],
            timeout=90,
            interval=0.2,
            what="both faults applied and on record",
        )
        assert count() == 0 and set(suspended().values()) == {True}
        assert {port for port, _ in rules().values()} == {aws.CUT_PORT}

        # While its drill runs, nothing undoes its faults behind its back.
        held = skyfleet("drill", "rollback", report, env=env)
        assert held.returncode == 3 and "still running" in held.stderr, held.stderr
        assert count() == 0
    finally:
        os.killpg(drill.pid, signal.SIGKILL)  # the drill and its load process: no safety net runs
        drill.wait(timeout=30)

    # The kill left both faults in place, and on record.
    assert count() == 0 and {port for port, _ in rules().values()} == {aws.CUT_PORT}
    assert [(f.action, f.state) for f in read_ledger(ledger)] == [
        ("aws_service_scale_to_zero", "applied"),
        ("aws_security_group_cut", "applied"),
    ]
    dry = skyfleet("drill", "rollback", report, "--dry-run", env=env)
    assert dry.returncode == 0 and dry.stderr.count("would undo") == 2, dry.stderr
    assert count() == 0

    done = skyfleet("drill", "rollback", report, env=env)
    assert done.returncode == 0, done.stderr
    # Exactly what the faults changed: the count read at the fault (not the scaling minimum, 2),
    # the scaling running again, each rule as it was under its own id.
    assert count() == 3 and set(suspended().values()) == {False}, suspended()
    assert rules() == before
    assert {(f.state, f.entry) for f in read_ledger(ledger)} == {("restored", 1), ("restored", 2)}
    again = skyfleet("drill", "rollback", report, env=env)
    assert again.returncode == 0 and "nothing to undo" in again.stderr, again.stderr


def test_a_fault_killed_before_it_was_on_record_as_applied_is_undone_as_the_stack_declares(
    aws_env: str, tmp_path: Path
) -> None:
    """Killed between "applying" and "applied": the rollback restores what the stack declares
    (the scaling minimum, scaling running), and a fault nothing can undo from here says so."""
    count = ecs_service("applying-cluster", "applying-api", 3)
    suspended = scaling("applying-cluster", "applying-api", minimum=2)
    group, rules = security_group("10.62")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                **SITES["aws-dev"],
                "clusterName": "applying-cluster",
                "apiServiceName": "applying-api",
                "taskSecurityGroupId": group,
            }
        )
    )
    stack = StackTarget(stack="aws-dev", source=OutputsSource(outputs_file=outputs))
    report = tmp_path / "report"
    ledger = Ledger(
        report / LEDGER_FILE,
        target={"skyfleet_target": "stack:aws-dev", "skyfleet_outputs_file": str(outputs)},
    )
    ledger.hold()
    ledger.applying("ecs:api", "aws_service_scale_to_zero", {"service": "api"})
    aws.scale_to_zero(stack.site(), "api")
    ledger.applying("sg-ingress", "aws_security_group_cut", {})
    aws.cut_security_group(stack.site())
    ledger.release()  # the process that held it is gone
    assert count() == 0

    done = skyfleet("drill", "rollback", report)
    assert done.returncode == 1, done.stderr  # one fault could not be undone from here
    assert count() == 2 and set(suspended().values()) == {False}, suspended()
    assert {port for port, _ in rules().values()} == {aws.CUT_PORT}
    assert "cannot" in done.stderr and "killed before the fault was on record" in done.stderr
    states = {f.action: f.state for f in read_ledger(report / LEDGER_FILE)}
    assert states == {"aws_service_scale_to_zero": "restored", "aws_security_group_cut": "applying"}
    # Its operator puts it right by hand (`pulumi refresh`, `pulumi up`), then closes it on record.
    wrong = skyfleet("drill", "rollback", report, "--forget", "1")
    assert wrong.returncode == 3 and "no open fault 1 (open: [2])" in wrong.stderr, wrong.stderr
    forgotten = skyfleet("drill", "rollback", report, "--forget", "2")
    assert forgotten.returncode == 0 and "forgotten: fault 2 (aws_security_group_cut" in forgotten.stderr
    assert {port for port, _ in rules().values()} == {aws.CUT_PORT}  # forgetting undoes nothing
    again = skyfleet("drill", "rollback", report)
    assert again.returncode == 0 and "nothing to undo" in again.stderr, again.stderr
