"""A plan defect fails the twin as it would fail production, before any `pulumi up`.

Each test plants one defect, in a stack's config or in a plan, and brings the twin of that stack
up: ``lab up`` must fail, say which stack, resource and container, in the app's own words where
the app is what refuses, and leave nothing running.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.state import load_state
from skyfleet.plan.cli import plan_all
from tests.support.twin import ROOT, namespaces, needs_root, twin_config

pytestmark = needs_root


def project_with(tmp_path: Path, stack: str, based_on: str, change: dict[str, object]) -> Path:
    """A copy of the project with one more stack file: ``based_on``'s, some keys replaced, as a
    site on its own (no fleet: its name is not the fleet's; client keys of its own)."""
    program = tmp_path / "program"
    program.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", program / "Pulumi.yaml")
    for shared in ("infra", "agent_app"):
        (program / shared).symlink_to(ROOT / shared)
    shutil.copytree(ROOT / "stacks", program / "stacks")
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{based_on}.yaml").read_text())
    doc.pop("environment", None)
    doc["config"]["skyfleet:apiKeys"] = {"secure": "v1:c3RhbmRhbG9uZQ==:placeholder"}
    doc["config"].update({f"skyfleet:{k}": v for k, v in change.items()})
    (program / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return program


def assert_left_nothing(state_dir: Path) -> None:
    state = load_state(state_dir)
    assert state.phase == "failed"
    assert marked_pids(str(state_dir.resolve())) == []
    assert namespaces(state.lab_id) == []


def test_an_env_value_the_app_rejects_fails_lab_up_in_the_apps_words(tmp_path: Path) -> None:
    """The spec accepts any value for a variable the app reads; the app refuses 30 s session
    TTLs (at least 60). On ECS the tasks would exit at start and the service never stabilise."""
    app = yaml.safe_load((ROOT / "stacks" / "Pulumi.aws-prod.yaml").read_text())["config"]["skyfleet:app"]
    app["env"] = {**app.get("env", {}), "AGENT_SESSION_TTL_SECONDS": "30"}
    program = project_with(tmp_path, "aws-short-ttl", "aws-prod", {"app": app, "site": "aws-short-ttl"})
    state_dir = tmp_path / "lab"
    with pytest.raises(LabError) as caught:
        up(twin_config(state_dir, program=program, stacks=["aws-short-ttl"], edge=None))
    message = str(caught.value)
    assert "aws-short-ttl: aws:ecs/taskDefinition:TaskDefinition 'service-" in message
    assert "container 'api'" in message or "container 'worker'" in message
    assert "AGENT_SESSION_TTL_SECONDS" in message and "60" in message  # the app's own message
    assert_left_nothing(state_dir)


def test_a_site_whose_certificate_lacks_the_global_name_fails_lab_up(tmp_path: Path) -> None:
    """A program bug leaves the global name off the ACM certificate while the site still says it
    serves it: Route 53's health checks do not verify certificates, so the edge would route
    every client to a site whose certificate they reject."""
    site, edge = (p for p, _ in plan_all(ROOT, ["aws-prod", "edge-prod"]))
    (cert,) = [r for r in site.resources if r.type == "aws:acm/certificate:Certificate"]
    names = cert.inputs["subjectAlternativeNames"]
    assert "api.agents.example.com" in names
    cert.inputs["subjectAlternativeNames"] = [n for n in names if n != "api.agents.example.com"]
    state_dir = tmp_path / "lab"
    with pytest.raises(LabError) as caught:
        up(twin_config(state_dir, stacks=["aws-prod"], edge="edge-prod"), planned=([site], edge))
    message = str(caught.value)
    assert "aws-prod" in message and f"aws:acm/certificate:Certificate {cert.name!r}" in message
    assert "not the global name api.agents.example.com" in message
    assert_left_nothing(state_dir)
