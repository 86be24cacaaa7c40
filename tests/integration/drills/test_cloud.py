"""Faults against deployed stacks: dry-run of every cloud action, AWS actions against moto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from typer.testing import CliRunner

from infra.outputs import EdgeOutputs, SiteOutputs
from skyfleet.drills import activity
from skyfleet.drills.actions import aws
from skyfleet.drills.activity import ACTIONS
from skyfleet.drills.cli import app
from tests.support.drills import SITES, ecs_service, no_credentials

EDGE = {
    "target": "edge",
    "environment": "dev",
    "fqdn": "agents.example.test",
    "routing": "failover",
    "healthCheckIds": {"aws": "hc-aws", "gcp": "hc-gcp"},
}
STACK_OF = {"aws": "aws-dev", "gcp": "gcp-prod", "kubernetes": "onprem-prod"}
# Resolved names each description must show (proof it read the outputs).
EXPECT = {
    "aws_service_scale_to_zero": "ECS update_service skyfleet-aws-dev/skyfleet-api desiredCount=0",
    "aws_security_group_cut": "modify_security_group_rules on sg-0123456789abcdef0: every ingress rule to "
    "tcp port 9",
    "aws_health_check_invert": "update_health_check hc-aws Inverted=true",
    "gcp_ingress_internal": "projects/skyfleet-prod/locations/europe-west1/services/skyfleet-api: "
    "ingress=INGRESS_TRAFFIC_INTERNAL_ONLY",
    "gcp_traffic_zero": "manual scaling to 0 instances",
    "k8s_scale_to_zero": "scale deployment skyfleet/skyfleet-api to 0 replicas",
    "k8s_deny_all": "NetworkPolicy skyfleet/skyfleet-drill-deny-all denying all ingress",
}
CLOUD_FAULTS = sorted(n for n, a in ACTIONS.items() if a.platform != "lab" and a.kind == "fault")


def test_every_cloud_fault_has_an_undo_and_an_expectation() -> None:
    assert set(CLOUD_FAULTS) == set(EXPECT)
    for name in CLOUD_FAULTS:
        undo = ACTIONS[name].undo
        assert undo in ACTIONS and ACTIONS[undo].kind == "rollback", name


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    """An offline plan folder: DIR/<stack>.json with the exports under "outputs"."""
    folder = tmp_path / "plan"
    folder.mkdir()
    for stack, outputs in {**SITES, "edge-dev": EDGE}.items():
        (folder / f"{stack}.json").write_text(json.dumps({"stack": stack, "outputs": outputs}))
    return folder


def _drill(tmp_path: Path, func: str) -> Path:
    args: dict[str, Any] = (
        {"site": "aws", "edge_stack": "edge-dev"} if func == "aws_health_check_invert" else {}
    )
    undo = ACTIONS[func].undo
    assert undo is not None
    drill = yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "drills" / "aws-service-loss.yaml").read_text()
    )
    drill["method"][0]["provider"].update(func=func, arguments=args)
    drill["rollbacks"][0]["provider"].update(func=undo, arguments=args)
    path = tmp_path / f"{func}.yaml"
    path.write_text(yaml.safe_dump(drill, sort_keys=False))
    return path


@pytest.mark.parametrize("func", CLOUD_FAULTS)
def test_dry_run_prints_action_and_rollback_without_credentials(
    func: str, tmp_path: Path, plan_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_credentials(monkeypatch)
    stack = STACK_OF[ACTIONS[func].platform]
    path = _drill(tmp_path, func)
    result = CliRunner().invoke(
        app, ["run", str(path), "--stack", stack, "--plan-dir", str(plan_dir), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert EXPECT[func] in out
    undo = ACTIONS[func].undo
    assert f"rollback → {undo}:" in out
    assert f"rollbacks[0] 'restore-api-count': {ACTIONS[str(undo)].platform}" in out
    assert "dry run: nothing was done" in out
    if SITES[stack]["environment"] == "prod":
        assert "pass --yes" in out


def test_prod_stack_is_refused_without_yes(
    tmp_path: Path, plan_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_credentials(monkeypatch)
    path = _drill(tmp_path, "gcp_ingress_internal")
    result = CliRunner().invoke(app, ["run", str(path), "--stack", "gcp-prod", "--plan-dir", str(plan_dir)])
    assert result.exit_code == 3
    assert "prod stack" in result.output and "--yes" in result.output


def test_outputs_file_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_credentials(monkeypatch)
    bad = tmp_path / "outputs.json"
    bad.write_text(json.dumps({**SITES["aws-dev"], "environment": "staging"}))
    path = _drill(tmp_path, "aws_service_scale_to_zero")
    result = CliRunner().invoke(app, ["run", str(path), "--stack", "aws-dev", "--outputs", str(bad)])
    assert result.exit_code == 3
    assert "stack 'aws-dev' outputs: environment" in result.output


# --- AWS actions against a real moto server ---------------------------------------------------


def _config(tmp_path: Path, stack: dict[str, Any], edge: dict[str, Any] | None = None) -> dict[str, Any]:
    outputs = tmp_path / "site.json"
    outputs.write_text(json.dumps(stack))
    plan = tmp_path / "plan"
    plan.mkdir(exist_ok=True)
    if edge is not None:
        (plan / "edge-dev.json").write_text(json.dumps({"outputs": edge}))
    return {
        "skyfleet_target": "stack:aws-dev",
        "skyfleet_outputs_file": str(outputs),
        "skyfleet_plan_dir": str(plan),
    }


def test_ecs_scale_to_zero_and_restore(aws_env: str, tmp_path: Path) -> None:
    count = ecs_service("drill-cluster", "drill-api", 3)
    stack = {**SITES["aws-dev"], "clusterName": "drill-cluster", "apiServiceName": "drill-api"}
    cfg = _config(tmp_path, stack)

    applied = activity.aws_service_scale_to_zero(service="api", configuration=cfg)
    assert applied["previous_desired_count"] == 3
    assert count() == 0
    restored = activity.aws_service_restore(service="api", configuration=cfg)
    assert restored["restored"] is True
    assert count() == 3
    # A second rollback (declared + safety net) is a harmless no-op.
    assert activity.aws_service_restore(service="api", configuration=cfg)["restored"] is False
    assert count() == 3


def test_ecs_scaling_is_suspended_during_the_fault_and_resumed(aws_env: str, tmp_path: Path) -> None:
    """The stacks' services have a scalable target whose policies would put the count back to
    its minimum partway through the fault: suspended for it, then resumed as it was."""
    count = ecs_service("drill-cluster", "drill-api", 3)
    scaling = boto3.client("application-autoscaling", region_name="us-east-1")
    target = {
        "ServiceNamespace": "ecs",
        "ResourceId": "service/drill-cluster/drill-api",
        "ScalableDimension": "ecs:service:DesiredCount",
    }
    scaling.register_scalable_target(**target, MinCapacity=2, MaxCapacity=10)

    def suspended() -> dict[str, bool]:
        (found,) = scaling.describe_scalable_targets(
            ServiceNamespace="ecs", ResourceIds=[target["ResourceId"]]
        )["ScalableTargets"]
        return {k: bool(v) for k, v in (found.get("SuspendedState") or {}).items()}

    stack = {**SITES["aws-dev"], "clusterName": "drill-cluster", "apiServiceName": "drill-api"}
    cfg = _config(tmp_path, stack)
    applied = activity.aws_service_scale_to_zero(service="api", configuration=cfg)
    assert count() == 0 and set(suspended().values()) == {True}, suspended()
    assert applied["previous_suspended_state"] == dict.fromkeys(aws.SUSPENDED_KEYS, False)
    assert activity.aws_service_restore(service="api", configuration=cfg)["restored"] is True
    assert count() == 3 and set(suspended().values()) == {False}, suspended()
    # Run on its own by another process (the fault's record lost with a crashed drill): the
    # declared minimum, and scaling running again.
    activity.aws_service_scale_to_zero(service="api", configuration=cfg)
    rollback = (
        "import json, sys; from skyfleet.drills import activity; cfg = json.loads(sys.argv[1]); "
        "print(json.dumps(activity.aws_service_restore(service='api', configuration=cfg)))"
    )
    done = subprocess.run([sys.executable, "-c", rollback, json.dumps(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["restored"] is True
    assert count() == 2 and set(suspended().values()) == {False}, suspended()
    # This process still holds that fault open: its own rollback closes it (the count it read).
    assert activity.aws_service_restore(service="api", configuration=cfg)["restored"] is True
    assert count() == 3


def test_security_group_cut_and_restore(aws_env: str, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="drill-tasks", Description="tasks", VpcId=vpc)["GroupId"]
    rules = [
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.40.1.0/24"}]},
        {"IpProtocol": "tcp", "FromPort": 9090, "ToPort": 9090, "IpRanges": [{"CidrIp": "10.40.2.0/24"}]},
    ]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=rules)
    cfg = _config(tmp_path, {**SITES["aws-dev"], "taskSecurityGroupId": group})

    def ports() -> dict[str, tuple[int, str]]:
        found = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
        return {
            r["SecurityGroupRuleId"]: (r["FromPort"], r["CidrIpv4"])
            for r in found["SecurityGroupRules"]
            if not r["IsEgress"]
        }

    before = ports()
    assert sorted(before.values()) == [(8080, "10.40.1.0/24"), (9090, "10.40.2.0/24")]
    applied = activity.aws_security_group_cut(configuration=cfg)
    assert applied["revoked_rules"] == 2
    # No rule admits the app's ports; each rule keeps its id (the stack's state names it).
    assert {rid: port for rid, (port, _) in ports().items()} == dict.fromkeys(before, aws.CUT_PORT)
    activity.aws_security_group_restore(configuration=cfg)
    assert ports() == before


def test_route53_health_check_invert_and_restore(aws_env: str, tmp_path: Path) -> None:
    r53 = boto3.client("route53")
    hc = r53.create_health_check(
        CallerReference="drill-aws",
        HealthCheckConfig={
            "Type": "HTTPS",
            "FullyQualifiedDomainName": "aws.example.test",
            "ResourcePath": "/readyz",
            "Port": 443,
            "RequestInterval": 10,
            "FailureThreshold": 3,
        },
    )["HealthCheck"]["Id"]
    edge = {**EDGE, "healthCheckIds": {"aws": hc}}
    cfg = _config(tmp_path, SITES["aws-dev"], edge)

    def inverted() -> bool:
        return bool(
            r53.get_health_check(HealthCheckId=hc)["HealthCheck"]["HealthCheckConfig"].get("Inverted")
        )

    assert inverted() is False
    applied = activity.aws_health_check_invert(site="aws", edge_stack="edge-dev", configuration=cfg)
    assert applied["health_check_id"] == hc and applied["previous_inverted"] is False
    assert inverted() is True
    # Detection polling reads the checkers' observations (moto's always report success): while
    # the check is inverted, Route 53 counts each success as a failure, and so does the drill.
    events = aws.health_check_events(EdgeOutputs.model_validate(edge), "aws")
    assert events and {e["state"] for e in events} == {"DOWN"}
    assert all(e["reason"].endswith("(the check is inverted)") for e in events)
    activity.aws_health_check_restore(site="aws", edge_stack="edge-dev", configuration=cfg)
    assert inverted() is False
    events = aws.health_check_events(EdgeOutputs.model_validate(edge), "aws")
    assert events and {e["state"] for e in events} == {"UP"}
    assert all(e["site"] == "aws" and e["time"] > 0 for e in events)


def test_outputs_models_accept_the_fixtures() -> None:
    for outputs in SITES.values():
        SiteOutputs.model_validate(outputs)
    EdgeOutputs.model_validate(EDGE)


def test_a_kube_context_the_kubeconfig_lacks_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's kubeContext missing from the kubeconfig is an error naming both, never a
    fall back to another cluster (the in-cluster config of the pod the drill runs in)."""
    from skyfleet.drills.actions import kubernetes

    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "other", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "other", "context": {"cluster": "other", "user": "u"}}],
                "current-context": "other",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # as inside a pod
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    site = SiteOutputs.model_validate(SITES["onprem-prod"])
    with pytest.raises(
        kubernetes.KubernetesFaultError, match=r"kube context 'dc1' \(the stack's kubeContext\)"
    ):
        kubernetes.scale(site, "api", 0)
