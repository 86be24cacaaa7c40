"""The offline plan: every shipped stack plans, with the shape policies and drills rely on."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pulumi.runtime.rpc import UNKNOWN

from infra.capabilities import CAPABILITIES, COMPONENTS, EVIDENCE, Evidence, matching, missing_capabilities
from infra.outputs import EdgeOutputs, SiteOutputs
from skyfleet.plan import Plan, PlannedResource, plan_stack

ROOT = Path(__file__).resolve().parents[3]
SITES = ("aws", "gcp", "onprem")
REQUIRED_STACKS = {"aws-prod", "gcp-prod", "onprem-prod", "edge-prod", "aws-dev"}


def test_required_stacks_are_shipped(plans: dict[str, Plan]) -> None:
    assert set(plans) >= REQUIRED_STACKS


@pytest.mark.parametrize("target", SITES)
def test_parity_every_site_provides_every_capability(plans: dict[str, Plan], target: str) -> None:
    plan = plans[f"{target}-prod"]
    assert set(CAPABILITIES) == set(EVIDENCE) and all(set(per) == set(SITES) for per in EVIDENCE.values())
    missing = missing_capabilities(target, plan.resources)
    assert not missing, f"{target}-prod lacks {missing}"
    components = {r.type for r in plan.resources if not r.custom}
    absent = [c for c in COMPONENTS if f"skyfleet:{target}:{c}" not in components]
    assert not absent, f"{target}-prod lacks components {absent}"


def _without(plan: Plan, evidence: Evidence, target: str) -> list[PlannedResource]:
    """The plan's resources with ``evidence`` taken out: the input it names unset, or (when it
    names none) every resource that matches it removed."""
    hit = {r.urn for r in matching(evidence, target, plan.resources)}
    if not evidence.path:
        return [r for r in plan.resources if r.urn not in hit]
    out = []
    for r in plan.resources:
        if r.urn in hit:
            inputs = copy.deepcopy(r.inputs)
            holder = inputs
            for key in evidence.path[:-1]:
                holder = holder[key]
            del holder[evidence.path[-1]]
            r = dataclasses.replace(r, inputs=inputs)
        out.append(r)
    return out


@pytest.mark.parametrize("target", SITES)
def test_parity_fails_when_any_piece_of_a_capability_is_missing(plans: dict[str, Plan], target: str) -> None:
    """Resources of the same type serve different capabilities (the DLQ and the task queue, the
    cache's StatefulSet and the broker's, Cloud Run's service and its autoscaling): the parity
    check tells them apart, so taking one away is reported as that capability missing."""
    plan = plans[f"{target}-prod"]
    for capability, per in EVIDENCE.items():
        for evidence in per[target]:
            assert matching(evidence, target, plan.resources), (capability, evidence)
            missing = missing_capabilities(target, _without(plan, evidence, target))
            assert capability in missing, (capability, evidence, missing)


@pytest.mark.parametrize("target", SITES)
def test_every_capability_is_shown_by_something_no_other_capability_is(
    plans: dict[str, Plan], target: str
) -> None:
    plan = plans[f"{target}-prod"]
    shown = {
        capability: {(r.urn, e.path) for e in per[target] for r in matching(e, target, plan.resources)}
        for capability, per in EVIDENCE.items()
    }
    for capability, keys in shown.items():
        others = set().union(*(k for c, k in shown.items() if c != capability))
        assert keys - others, f"{target}: {capability} is shown only by what other capabilities are"


def test_every_resource_is_parented_to_a_component(plans: dict[str, Plan]) -> None:
    for plan in plans.values():
        stack_urn_suffix = "pulumi:pulumi:Stack::"
        for r in plan.resources:
            if (
                r.custom
                and r.type != "pulumi:pulumi:StackReference"
                and not r.type.startswith("pulumi:providers:")
            ):
                assert r.parent and stack_urn_suffix not in r.parent.split("$")[-1], (
                    f"{plan.stack}: {r.urn} is not inside a capability component"
                )


def test_components_register_their_outputs(plans: dict[str, Plan]) -> None:
    # Every component has at least one child: it is a real grouping, not an empty shell.
    for plan in plans.values():
        parents = {r.parent for r in plan.resources}
        for r in plan.resources:
            if not r.custom:
                assert r.urn in parents, f"{plan.stack}: component {r.urn} has no children"


def test_stack_outputs_follow_the_contract(plans: dict[str, Plan]) -> None:
    for plan in plans.values():
        if plan.stack.startswith("edge"):
            EdgeOutputs.model_validate(plan.outputs)
        else:
            outputs = SiteOutputs.model_validate(plan.outputs)
            assert outputs.endpoint.startswith("https://")


def test_preview_leaves_computed_outputs_unknown(previews: dict[str, Plan]) -> None:
    unknown = 0
    for plan in previews.values():
        assert plan.preview
        unknown += json.dumps([r.inputs for r in plan.resources]).count(UNKNOWN)
    assert unknown > 0, "a preview must carry unknowns where inputs depend on computed outputs"


def test_cli_plans_all_stacks(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skyfleet.cli", "plan", "--all", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    written = {p.stem for p in tmp_path.glob("*.json")}
    assert written >= REQUIRED_STACKS
    doc = json.loads((tmp_path / "aws-prod.json").read_text())
    assert set(doc) >= {"stack", "resources", "outputs"}
    keys = {"type", "name", "urn", "parent", "provider", "inputs", "outputs", "dependencies"}
    assert all(keys <= set(r) for r in doc["resources"])
    assert "service" in result.stdout and "load balancer" in result.stdout


def test_plans_inside_a_host_that_left_no_event_loop() -> None:
    # asyncio.run() ends by unsetting the thread's loop, as async test runners and apps do;
    # planning must still work afterwards.
    async def nothing() -> None:
        return None

    asyncio.run(nothing())
    plan = plan_stack(ROOT, "aws-dev")
    assert plan.resources
