"""The gate end to end: metadata, unknowns in preview, profiles, overrides, exclusions, reports,
exit codes, the non-compliant example program and the shipped stacks."""

from __future__ import annotations

import inspect
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner, Result

from policies.compliance.rules import ALL_RULES
from skyfleet.check.model import Report
from skyfleet.check.policy_config import PolicyConfigError
from skyfleet.check.reports import junit, sarif
from skyfleet.check.wire import UNKNOWN
from skyfleet.cli import app
from tests.support.gate import REPO, SARIF_SCHEMA, Gate, sdk_class
from tests.support.policies.fixtures import CASES, aws_site, res

NONCOMPLIANT = REPO / "examples" / "noncompliant"
runner = CliRunner()


def test_metadata_is_complete_and_ids_unique(gate: Gate) -> None:
    ids = [p.name for p in gate.info.policies]
    assert len(ids) == len(set(ids)) == len(ALL_RULES)
    assert sum(p.policy_type == 1 for p in gate.info.policies) >= 50
    assert any(p.policy_type == 2 for p in gate.info.policies)
    for p in gate.info.policies:
        assert p.description and p.remediation_steps, p.name
        assert p.severity != 0, p.name
        assert any(t.startswith(("NIST-800-53:", "CIS:")) for t in p.tags), p.name
        assert "environment" in p.configSchema.properties and "exclusions" in p.configSchema.properties


def test_resource_type_tokens_are_the_sdks_registered_types() -> None:
    tokens = sorted({t for r in ALL_RULES for t in r.resource_types if not t.endswith("*")})
    for token in tokens:
        cls = sdk_class(token)
        assert f"'{token}'" in inspect.getsource(cls), f"{cls.__name__} does not register {token}"


def test_unknowns_in_preview_give_the_engines_advisory_message(gate: Gate) -> None:
    queue = res(
        "aws:sqs/queue:Queue",
        "tasks",
        {
            "sqsManagedSseEnabled": UNKNOWN,
            "redrivePolicy": UNKNOWN,
            "tags": {"owner": "a", "environment": "prod", "cost-center": "c", "app": "x"},
        },
    )
    result = gate.check([queue], preview=True)
    unknown = [f for f in result.findings if f.rule == "aws-sqs-encrypted"]
    assert len(unknown) == 1 and not unknown[0].mandatory and unknown[0].preview_unknown
    assert unknown[0].message.startswith(
        "can't run policy 'aws-sqs-encrypted' from policy pack 'skyfleet-compliance"
    )
    assert "string value at .sqsManagedSseEnabled can't be known during preview" in unknown[0].message
    # The same queue with the value known is a mandatory violation: unknown never passes silently.
    known = gate.check([res("aws:sqs/queue:Queue", "tasks", {"sqsManagedSseEnabled": False})])
    assert any(f.rule == "aws-sqs-encrypted" and f.mandatory for f in known.findings)


def _case(rule: str):
    return next(c for c in CASES if c.rule == rule)


def test_dev_profile_makes_violations_advisory(gate: Gate) -> None:
    result = gate.check(_case("aws-sqs-encrypted").resources(), environment="dev", policy={"profile": "dev"})
    assert {f.rule for f in result.findings} == {"aws-sqs-encrypted"}
    assert not any(f.mandatory for f in result.findings)


def test_overrides_change_one_rule(gate: Gate) -> None:
    resources = _case("aws-sqs-encrypted").resources()
    disabled = gate.check(resources, policy={"overrides": {"aws-sqs-encrypted": "disabled"}})
    assert disabled.findings == []
    mandatory = gate.check(
        resources,
        environment="dev",
        policy={"profile": "dev", "overrides": {"aws-sqs-encrypted": "mandatory"}},
    )
    assert [f.rule for f in mandatory.findings if f.mandatory] == ["aws-sqs-encrypted"]


def test_exclusion_needs_a_justification_and_is_reported(gate: Gate) -> None:
    resources = _case("aws-sqs-encrypted").resources()
    with pytest.raises(PolicyConfigError, match="justification"):
        gate.check(resources, policy={"exclusions": [{"rule": "aws-sqs-encrypted", "resource": "tasks"}]})
    with pytest.raises(PolicyConfigError, match="does not have"):
        gate.check(resources, policy={"overrides": {"no-such-rule": "advisory"}})
    why = "legacy queue drained by a vendor that cannot use SSE; ticket SEC-42"
    result = gate.check(
        resources,
        policy={"exclusions": [{"rule": "aws-sqs-encrypted", "resource": "task*", "justification": why}]},
    )
    assert result.findings == []
    # The glob matches both queues of the baseline (tasks, tasks-dlq); each exclusion is reported.
    assert sorted(e.urn.rsplit("::", 1)[1] for e in result.exclusions) == ["tasks", "tasks-dlq"]
    assert why in result.exclusions[0].reason


def test_exclusion_of_a_stack_rule_filters_that_resource(gate: Gate) -> None:
    resources = _case("k8s-prod-replicas").resources()
    assert any(f.rule == "k8s-prod-replicas" for f in gate.check(resources).findings)
    excluded = gate.check(
        resources,
        policy={
            "exclusions": [
                {
                    "rule": "k8s-prod-replicas",
                    "resource": "api",
                    "justification": "single-replica canary, by design",
                }
            ]
        },
    )
    assert not any(f.rule == "k8s-prod-replicas" for f in excluded.findings)


def _report(gate: Gate) -> Report:
    from skyfleet.check.runner import _rules

    results = [
        gate.check(aws_site()),
        gate.check(_case("k8s-no-privileged").resources()),
        gate.check(
            _case("aws-sqs-encrypted").resources(),
            policy={
                "exclusions": [
                    {
                        "rule": "aws-sqs-encrypted",
                        "resource": "tasks",
                        "justification": "reviewed exception SEC-1",
                    }
                ]
            },
        ),
    ]
    return Report(
        pack=gate.info.name, pack_version=gate.info.version, rules=_rules(gate.info), stacks=results
    )


def test_sarif_is_valid_and_fingerprints_are_stable(gate: Gate) -> None:
    report = _report(gate)
    doc = sarif(report, REPO)
    jsonschema.validate(doc, json.loads(SARIF_SCHEMA.read_text()))
    results = doc["runs"][0]["results"]
    assert any(r["level"] == "error" and r["ruleId"] == "k8s-no-privileged" for r in results)
    assert any(r.get("suppressions") for r in results)
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "Pulumi.fixture.yaml"
        for r in results
    )
    again = sarif(_report(gate), REPO)["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in results] == [r["partialFingerprints"] for r in again]
    assert len(doc["runs"][0]["tool"]["driver"]["rules"]) == len(ALL_RULES)


def test_junit_has_one_case_per_rule_and_stack(gate: Gate) -> None:
    report = _report(gate)
    root = ET.fromstring(ET.tostring(junit(report)))
    suites = root.findall("testsuite")
    assert len(suites) == 3 and all(len(s.findall("testcase")) == len(ALL_RULES) for s in suites)
    failed = [c.get("name") for c in suites[1].findall("testcase") if c.find("failure") is not None]
    assert "k8s-no-privileged" in failed and suites[0].get("failures") == "0"


def test_noncompliant_example_fails_with_the_expected_rules(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "check",
            "--program",
            str(NONCOMPLIANT),
            "--stack",
            "dev",
            "--json",
            str(out),
            "--sarif",
            str(tmp_path / "r.sarif"),
            "--junit",
            str(tmp_path / "r.xml"),
        ],
    )
    assert result.exit_code == 1, result.output
    doc = json.loads(out.read_text())
    rules = {f["rule"] for s in doc["stacks"] for f in s["findings"] if f["enforcement"] == "mandatory"}
    assert {
        "aws-sqs-encrypted",
        "aws-sqs-dead-letter-queue",
        "aws-network-alb-only-public-ingress",
        "aws-iam-no-wildcard-actions",
        "aws-s3-bucket-public-access-blocked",
        "k8s-no-privileged",
        "k8s-image-pinned",
        "k8s-no-default-namespace",
        "aws-required-tags",
    } <= rules
    assert doc["summary"]["exitCode"] == 1 and doc["stacks"][0]["profile"] == "prod"
    ET.parse(tmp_path / "r.xml")
    jsonschema.validate(json.loads((tmp_path / "r.sarif").read_text()), json.loads(SARIF_SCHEMA.read_text()))


def test_usage_and_pack_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["check"]).exit_code == 2
    missing = runner.invoke(
        app, ["check", "--program", str(NONCOMPLIANT), "--stack", "dev", "--policy-pack", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "PulumiPolicy.yaml" in missing.output

    def run_pack(name: str, main: str, timeout: str) -> Result:
        """`skyfleet check` with a pack whose __main__.py is ``main``."""
        pack = tmp_path / name
        pack.mkdir()
        (pack / "PulumiPolicy.yaml").write_text("runtime: python\n")
        (pack / "__main__.py").write_text(main)
        argv = ["check", "--program", str(NONCOMPLIANT), "--stack", "dev", "--policy-pack", str(pack)]
        return runner.invoke(app, [*argv, "--timeout", timeout])

    crashed = run_pack("crash", "raise RuntimeError('rule module failed to import')\n", "20")
    assert crashed.exit_code == 2 and "failed to start" in crashed.output
    hung = run_pack("hang", "import time\ntime.sleep(60)\n", "2")
    assert hung.exit_code == 2 and "timed out" in hung.output


@pytest.mark.parametrize(
    ("manifest", "main", "problem"),
    [
        ("runtime: [python\n", True, "PulumiPolicy.yaml: not valid YAML at line 2"),
        ("- python\n", True, "PulumiPolicy.yaml: a YAML list, not a mapping"),
        ("runtime: python\n", False, "no __main__.py"),
    ],
)
def test_a_broken_pack_manifest_is_named_with_what_is_wrong(
    tmp_path: Path, manifest: str, main: bool, problem: str
) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "PulumiPolicy.yaml").write_text(manifest)
    if main:
        (pack / "__main__.py").write_text("raise SystemExit('never started')\n")
    result = runner.invoke(app, ["check", "--list-rules", "--policy-pack", str(pack)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"{pack}/{problem}" in output or f"{pack}: {problem}" in output
    assert "Traceback" not in output


def test_missing_stack_is_a_usage_error() -> None:
    result = runner.invoke(app, ["check", "--program", str(NONCOMPLIANT), "--stack", "nope"])
    assert result.exit_code == 2


def test_shipped_stacks_have_no_mandatory_violations(tmp_path: Path) -> None:
    from skyfleet.check.runner import run
    from skyfleet.plan import PlanError
    from skyfleet.plan.cli import plan_all, site_stacks_first
    from skyfleet.plan.runner import Project

    project = Project.load(REPO)
    try:
        plans = [p for p, _ in plan_all(REPO, site_stacks_first(project))]
    except PlanError as exc:  # the infra is built in parallel; a stack that cannot plan is not ours to judge
        pytest.skip(f"shipped stacks do not plan yet: {str(exc).splitlines()[0]}")
    report = run(plans)
    mandatory = [(f.stack, f.rule, f.urn) for s in report.stacks for f in s.findings if f.mandatory]
    assert mandatory == []


def test_crashing_rule_inside_a_running_pack_is_an_error(tmp_path: Path) -> None:
    pack = tmp_path / "broken"
    pack.mkdir()
    (pack / "PulumiPolicy.yaml").write_text("runtime: python\n")
    (pack / "__main__.py").write_text(
        "from pulumi_policy import PolicyPack, ResourceValidationPolicy\n"
        "def boom(args, report):\n    raise ZeroDivisionError('rule bug')\n"
        "PolicyPack('broken', [ResourceValidationPolicy('boom', 'always crashes', boom)])\n"
    )
    result = runner.invoke(
        app, ["check", "--program", str(NONCOMPLIANT), "--stack", "dev", "--policy-pack", str(pack)]
    )
    assert result.exit_code == 2 and "Analyze" in result.output
    assert sys.executable
