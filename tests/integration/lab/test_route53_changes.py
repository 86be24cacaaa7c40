"""Changing a deployed edge: the steps ``pulumi up`` takes from one edge plan to the next,
replayed on Route 53's rules (skyfleet.lab.route53_changes), for the layout changes an operator
makes: priorities reordered, a site dropped or added, a weight changed, the routing changed."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from skyfleet.cli import app
from skyfleet.lab.route53 import HEALTH_CHECK_TYPE, RECORD_TYPE, EdgePlanError
from skyfleet.lab.route53_changes import replay
from skyfleet.testing.edge import EDGE_STACK, edge_plan, site_outputs

runner = CliRunner()


@functools.cache
def planned(variant: str) -> tuple[dict[str, Any], ...]:
    return tuple(dataclasses.asdict(r) for r in edge_plan(variant).resources)


def plan(variant: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(planned(variant)))


def records_written(steps: list[str]) -> list[str]:
    return [s for s in steps if re.match(r"(create|update|delete) (failover|weighted|multivalue)-", s)]


@pytest.mark.parametrize(("old", "new"), [("shipped", "reordered"), ("reordered", "shipped")])
def test_reordered_priorities_update_the_failover_records_in_place(old: str, new: str) -> None:
    """A site moving up or down the failover order changes what a record answers, not which
    record it is: two atomic updates, nothing created beside a PRIMARY."""
    assert replay(plan(old), plan(new)) == ["update failover-0-primary", "update failover-1-primary"]


def test_a_dropped_site_leaves_its_tier_after_the_alias_stops_pointing_at_it() -> None:
    steps = replay(plan("shipped"), plan("two-sites"))
    assert records_written(steps) == [
        "update failover-0-secondary",  # the alias to tier 1 becomes the second site's CNAME
        "delete failover-1-secondary",
        "delete failover-1-primary",
    ]
    assert steps[-1] == "delete hc-onprem-prod"  # after the records that named it


def test_an_added_site_gets_its_tier_before_the_alias_points_at_it() -> None:
    steps = replay(plan("two-sites"), plan("shipped"))
    assert steps.index("create hc-onprem-prod") < steps.index("create failover-1-secondary")
    assert records_written(steps)[-1] == "update failover-0-secondary"
    assert {"create failover-1-primary", "create failover-1-secondary"} < set(steps)


def test_a_changed_weight_is_an_update() -> None:
    assert replay(plan("weighted"), plan("weighted-zero")) == ["update weighted-onprem-prod"]


def test_a_changed_routing_is_refused_at_its_first_step() -> None:
    """Route 53 holds one routing policy per name: the weighted records would be created while
    the failover ones still exist. docs/fleet.md ("Limits") says to take the edge down first."""
    with pytest.raises(
        EdgePlanError,
        match=r"step 1, create weighted-\S+: Route 53 refuses it: .*mixes failover and weighted routing",
    ):
        replay(plan("shipped"), plan("weighted"))


# --- records named by the site they answer with --------------------------------------------------


def named_by_site(
    resources: list[dict[str, Any]], *, delete_before_replace: bool = False
) -> list[dict[str, Any]]:
    """The plan with its failover records named and identified by site (``primary-<site>``,
    ``secondary-<site>``, ``secondary-tier-N``), as a naming that does not survive a change."""
    sites = {
        r["outputs"]["id"]: r["inputs"]["tags"]["site"] for r in resources if r["type"] == HEALTH_CHECK_TYPE
    }
    for r in resources:
        policies = r["inputs"].get("failoverRoutingPolicies") if r["type"] == RECORD_TYPE else None
        if not policies:
            continue
        if r["inputs"].get("aliases"):
            tier = re.match(r"failover-(\d+)\.", r["inputs"]["aliases"][0]["name"])
            assert tier is not None
            name = set_id = f"tier-{tier[1]}"
            name = f"secondary-{name}"
        else:
            set_id = sites[r["inputs"]["healthCheckId"]]
            name = f"{policies[0]['type'].lower()}-{set_id}"
        r["inputs"]["setIdentifier"] = set_id
        r["urn"] = r["urn"].rsplit("::", 1)[0] + f"::{name}"
        r["name"] = name
        r["options"]["deleteBeforeReplace"] = delete_before_replace
    return resources


@pytest.mark.parametrize("delete_before_replace", [False, True])
def test_records_named_by_site_cannot_be_reordered(delete_before_replace: bool) -> None:
    """The check fails what Route 53 would refuse: with records named by site, the new PRIMARY
    of the global name is created while the old one still holds it, whether the moved record is
    created before its old self is deleted or after."""
    old = named_by_site(plan("shipped"), delete_before_replace=delete_before_replace)
    new = named_by_site(plan("reordered"), delete_before_replace=delete_before_replace)
    with pytest.raises(EdgePlanError, match=r"Route 53 refuses it: .*has two PRIMARY records"):
        replay(old, new)
    # Unchanged, the same naming replays as nothing to do.
    assert replay(old, copy.deepcopy(old)) == []


# --- skyfleet plan --deployed ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prod sites' outputs, as ``skyfleet plan --references`` reads them."""
    refs = tmp_path_factory.mktemp("references")
    for stack, outputs in site_outputs().items():
        (refs / f"{stack}.json").write_text(json.dumps(outputs))
    return refs


def deployed(tmp_path: Path, variant: str) -> Path:
    path = tmp_path / f"deployed-{variant}.json"
    path.write_text(json.dumps({"resources": plan(variant)}))
    return path


def plan_edge(references: Path, *args: str) -> Result:
    return runner.invoke(app, ["plan", "--stack", EDGE_STACK, "--references", str(references), *args])


def test_plan_replays_the_update_from_the_deployed_plan(tmp_path: Path, references: Path) -> None:
    result = plan_edge(references, "--deployed", str(deployed(tmp_path, "reordered")))
    assert result.exit_code == 0, result.output
    assert "Route 53 accepts each of its 2 step(s)" in result.output
    refused = plan_edge(references, "--deployed", str(deployed(tmp_path, "weighted")))
    assert refused.exit_code == 1, refused.output
    assert re.search(
        r"the update from \S+deployed-weighted\.json: step 1, create failover-\S+: Route 53 refuses it: .*"
        r"mixes weighted and failover routing",
        " ".join(refused.output.split()),
    ), refused.output


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot read the plan: Expecting property name"),
        ('{"resources": {}}', "resources: expected a plan JSON with a list of resources"),
        (None, "cannot read the plan: [Errno 21] Is a directory"),
    ],
)
def test_a_bad_deployed_plan_is_named(
    tmp_path: Path, references: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "deployed.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    result = plan_edge(references, "--deployed", str(path))
    assert result.exit_code == 2, result.output
    assert f"--deployed {path}: {problem}" in " ".join(result.output.split())


def test_deployed_goes_with_one_stack() -> None:
    result = runner.invoke(app, ["plan", "--all", "--deployed", "x.json"])
    assert result.exit_code == 2
    assert "--deployed is the plan of one stack" in result.output
