"""Real-world program shapes plan and check offline in both modes, as `pulumi preview` and
`pulumi up` would run them: data sources answer, computed outputs resolve (or stay unknown in
a preview), remote components hand out typed outputs and are reported as not expanded, reads
are not analyzed, manifests expand, and a program error names its file and line in every
report. Each program here failed on the offline plan before these fixes."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from pulumi.runtime.rpc import UNKNOWN
from typer.testing import CliRunner

from skyfleet.check.model import StackResult
from skyfleet.cli import app
from skyfleet.plan import Plan, PlannedResource, plan_stack
from tests.integration.plan.conftest import PROGRAMS
from tests.support.gate import SARIF_SCHEMA

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()
Planned = Callable[[str, bool], Plan]


def _resource(plan: Plan, typ: str, name: str) -> PlannedResource:
    found = [r for r in plan.resources if r.type == typ and r.name == name]
    assert found, f"{typ} {name!r} not planned; planned: {sorted((r.type, r.name) for r in plan.resources)}"
    return found[0]


# --- data sources --------------------------------------------------------------------------


@pytest.mark.parametrize("preview", [False, True])
def test_data_sources_are_answered_in_their_sdk_result_types(planned: Planned, preview: bool) -> None:
    plan = planned("data_sources", preview)
    out = plan.outputs
    # Invokes run in a preview too: the same, known answers in both modes.
    assert re.fullmatch(r"vpc-[0-9a-f]{17}", out["vpcId"])
    assert re.fullmatch(r"ami-[0-9a-f]{17}", out["amiId"])
    assert re.fullmatch(r"Z[0-9A-Z]{20}", out["zoneId"])
    assert out["recordName"] == "www.example.com"  # the query is echoed, as the data source does
    assert out["imageLink"].startswith("https://")
    server = _resource(plan, "aws:ec2/instance:Instance", "web")
    assert server.inputs["ami"] == out["amiId"]
    assert re.fullmatch(r"subnet-[0-9a-f]{17}", server.inputs["subnetId"])
    if not preview:
        assert planned("data_sources", True).outputs == out


# --- computed outputs ----------------------------------------------------------------------


def test_computed_outputs_resolve_to_values_of_their_declared_types(planned: Planned) -> None:
    out = planned("computed_outputs", False).outputs
    assert out["caPemStart"] == "-----BEGIN CERTIFICATE-----"
    kubeconfig = json.loads(out["kubeconfig"])
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]).startswith(b"-----BEGIN CERTIFICATE")
    assert cluster["server"] and "None" not in out["kubeconfig"]
    assert out["gkeCa"] and out["gkeCa"] != "None"
    assert re.fullmatch(r"/cloudsql/\S+", out["socket"]) and "None" not in out["socket"]
    namespace, _, release = out["release"].partition("/")
    assert namespace and release and "None" not in out["release"]
    assert ipaddress.ip_address(out["bastionIp"]).version == 4


def test_rules_see_computed_outputs_not_null(planned: Planned) -> None:
    plan = planned("computed_outputs", False)
    bastion = _resource(plan, "aws:ec2/instance:Instance", "bastion")
    # AnalyzeStack receives outputs: an instance with a null address would look private.
    assert ipaddress.ip_address(bastion.outputs["publicIp"])
    assert bastion.outputs["arn"].startswith("arn:aws:ec2:eu-central-1:")
    admin = _resource(plan, "aws:ec2/securityGroup:SecurityGroup", "admin")
    assert admin.inputs["ingress"][0]["cidrBlocks"] == [f"{bastion.outputs['publicIp']}/32"]


def test_preview_leaves_computed_outputs_unknown(planned: Planned) -> None:
    plan = planned("computed_outputs", True)
    for key in ("caPemStart", "gkeCa", "socket", "release", "bastionIp"):
        assert plan.outputs[key] == UNKNOWN, key
    bastion = _resource(plan, "aws:ec2/instance:Instance", "bastion")
    assert bastion.outputs["publicIp"] == UNKNOWN  # unknown to the rules too, as in a preview
    assert bastion.outputs["instanceType"] == "t3.micro"  # inputs stay known


# --- components ----------------------------------------------------------------------------


@pytest.mark.parametrize("preview", [False, True])
def test_remote_component_is_reported_and_its_outputs_are_typed(planned: Planned, preview: bool) -> None:
    plan = planned("components", preview)
    [unexpanded] = plan.unexpanded
    assert (unexpanded.type, unexpanded.name) == ("acme:network:Network", "core")
    assert "not planned and not checked" in unexpanded.reason
    assert set(unexpanded.children) == {"aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet"}
    # Its stand-in children are not part of the plan; the Python component expands as always.
    assert not [r for r in plan.resources if r.type in unexpanded.children]
    uploads = _resource(plan, "shop:storage:Uploads", "uploads")
    assert {r.type for r in plan.resources if r.parent == uploads.urn} == {
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    }
    if preview:
        assert plan.outputs["vpcId"] == UNKNOWN
    else:
        assert re.fullmatch(r"vpc-[0-9a-f]{17}", plan.outputs["vpcId"])
        assert re.fullmatch(r"subnet-[0-9a-f]{17}", plan.outputs["firstSubnet"])
        assert ipaddress.ip_address(plan.outputs["natIp"])
        sg = _resource(plan, "aws:ec2/securityGroup:SecurityGroup", "app")
        assert sg.inputs["vpcId"] == plan.outputs["vpcId"]


def test_every_report_names_the_components_that_were_not_expanded(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            "--program",
            str(PROGRAMS / "components"),
            "--stack",
            "dev",
            "--json",
            str(tmp_path / "r.json"),
            "--sarif",
            str(tmp_path / "r.sarif"),
            "--junit",
            str(tmp_path / "r.xml"),
        ],
    )
    assert result.exit_code in (0, 1), result.output
    assert "not expanded" in result.output and "acme:network:Network" in result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["unexpanded"] == 1
    assert doc["stacks"][0]["unexpanded"][0]["urn"].endswith("acme:network:Network::core")
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    jsonschema.validate(sarif, json.loads(SARIF_SCHEMA.read_text()))
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("acme:network:Network 'core' not expanded" in n["message"]["text"] for n in notes)
    junit = ET.parse(tmp_path / "r.xml").getroot()
    skipped = [c for c in junit.iter("testcase") if c.get("name") == "expand acme:network:Network core"]
    assert skipped and skipped[0].find("skipped") is not None


def test_awsx_vpc_outputs_have_the_shape_of_its_subnets(planned: Planned) -> None:
    pytest.importorskip("pulumi_awsx")
    plan = planned("awsx_vpc", False)
    assert len(plan.outputs["publicSubnets"]) == 3
    group = _resource(plan, "aws:rds/subnetGroup:SubnetGroup", "db")
    assert len(set(group.inputs["subnetIds"])) == 3
    assert plan.outputs["cidr"] and plan.unexpanded[0].type == "awsx:ec2:Vpc"


# --- reads -------------------------------------------------------------------------------


@pytest.mark.parametrize("preview", [False, True])
def test_reads_are_planned_but_not_analyzed(
    planned: Planned, checked: Callable[[Plan], StackResult], preview: bool
) -> None:
    plan = planned("reads", preview)
    reads = {r.urn for r in plan.resources if r.read}
    assert {u.rsplit("::", 1)[-1] for u in reads} == {"shared", "legacy"}
    # A read returns the resource's whole state, in a preview too.
    assert re.fullmatch(r"vpc-[0-9a-f]{17}", plan.outputs["sharedVpc"])
    result = checked(plan)
    assert result.reads == 2
    assert not [f for f in result.findings if f.urn in reads], "a read drew findings"
    rule = _resource(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "https-from-office")
    assert rule.inputs["securityGroupId"] == "sg-0123456789abcdef0"


# --- errors --------------------------------------------------------------------------------


def test_program_error_names_its_file_and_line_in_every_report(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            "--program",
            str(PROGRAMS / "broken"),
            "--stack",
            "dev",
            "--json",
            str(tmp_path / "r.json"),
            "--sarif",
            str(tmp_path / "r.sarif"),
            "--junit",
            str(tmp_path / "r.xml"),
        ],
    )
    assert result.exit_code == 2
    policy = PROGRAMS / "broken" / "policy.py"
    assert f"{policy}:10" in result.output and "IndexError" in result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["exitCode"] == 2 and "IndexError" in doc["summary"]["error"]
    assert (doc["error"]["file"], doc["error"]["line"]) == (str(policy), 10)
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    jsonschema.validate(sarif, json.loads(SARIF_SCHEMA.read_text()))
    invocation = sarif["runs"][0]["invocations"][0]
    assert not invocation["executionSuccessful"] and invocation["exitCode"] == 2
    [note] = invocation["toolExecutionNotifications"]
    location = note["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "policy.py" and location["region"]["startLine"] == 10
    junit = ET.parse(tmp_path / "r.xml").getroot()
    assert junit.get("errors") == "1"
    error = next(junit.iter("error"))
    assert f"{policy}:10" in (error.text or "")


def test_usage_errors_write_every_report_too(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["check", "--program", str(PROGRAMS / "reads"), "--json", str(out)])
    assert result.exit_code == 2
    assert json.loads(out.read_text())["error"]["message"] == "give exactly one of --stack NAME or --all"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "it is a JSON list, not an object of the stack's outputs"),
        ('{"resources": [], "outputs": 3}', "its outputs are a JSON int, not an object"),
        ("{not json", "not JSON"),
        (None, "cannot be read"),
    ],
)
def test_a_bad_references_file_is_named_with_what_is_wrong(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    """The edge stack reads the sites' outputs through StackReferences; a file given for one
    that is no outputs object stops the plan naming that file, not a line of the mocks."""
    refs = tmp_path / "refs"
    refs.mkdir()
    site = refs / "aws-prod.json"
    if content is None:
        site.mkdir()  # a folder where the file should be
    else:
        site.write_text(content)
    result = runner.invoke(app, ["plan", "--stack", "edge-prod", "--references", str(refs)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"{site}: {problem}" in output
    assert "mocks.py" not in output


def test_a_references_folder_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["check", "--stack", "edge-prod", "--references", str(missing)])
    assert result.exit_code == 2, result.output
    assert f"--references {missing}: not a folder" in " ".join(result.output.split())


# --- kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("preview", [False, True])
def test_manifests_expand_and_charts_are_reported(
    planned: Planned, checked: Callable[[Plan], StackResult], preview: bool
) -> None:
    plan = planned("kubernetes", preview)
    config_file = _resource(plan, "kubernetes:yaml:ConfigFile", "app")
    cart = _resource(plan, "kubernetes:apps/v1:Deployment", "shop/cart")
    assert cart.parent == config_file.urn
    assert {(u.type, u.name) for u in plan.unexpanded} == {
        ("kubernetes:helm.sh/v3:Chart", "ingress"),
        ("kubernetes:helm.sh/v4:Chart", "metrics"),
        ("kubernetes:yaml:ConfigFile", "crds"),
    }
    assert any("ingress-nginx" in u.reason for u in plan.unexpanded)
    # A yaml/v2 ConfigFile is a remote component whose provider only reads YAML: expanded here.
    workers = _resource(plan, "kubernetes:yaml/v2:ConfigFile", "workers")
    worker = _resource(plan, "kubernetes:apps/v1:Deployment", "workers-shop/worker")
    assert worker.parent == workers.urn
    if not preview:
        assert ipaddress.ip_address(plan.outputs["frontIp"])
        assert plan.outputs["cartReplicas"] == 2
        assert plan.outputs["workerObjects"] == 1
    # The manifests' objects reach the rules like any other resource.
    findings = checked(plan).findings
    assert any(f.rule == "k8s-no-privileged" and f.urn == cart.urn for f in findings)
    assert any(f.rule == "k8s-image-pinned" and f.urn == worker.urn for f in findings)


# --- config and determinism ---------------------------------------------------------------


def test_project_config_values_and_defaults_apply(planned: Planned) -> None:
    plan = planned("project_config", False)
    assert plan.outputs == {"region": "ap-southeast-2", "queues": 2}
    queue = _resource(plan, "aws:sqs/queue:Queue", "work-0")
    assert queue.inputs["tags"]["owner"] == "team-a" and queue.inputs["tags"]["cost-center"] == "gold"


@pytest.mark.parametrize("program", ["computed_outputs", "components", "data_sources"])
def test_the_same_program_gives_the_same_plan(planned: Planned, program: str) -> None:
    # The SDK registers from a thread pool: arrival order varies, the plan's order must not.
    again = json.dumps(plan_stack(PROGRAMS / program, "dev").to_json(), default=str)
    assert again == json.dumps(planned(program, False).to_json(), default=str)
