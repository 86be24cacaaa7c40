"""Fixtures for every tier: offline plans of the shipped stacks, run once per session (per
xdist worker), and copies of the project with a stack file of a test's own. A plugin of the
root conftest, so the program's tests and the policy pack's deployability tests share them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from skyfleet.plan import Plan, Project
from skyfleet.plan.cli import plan_all, site_stacks_first

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def project() -> Project:
    return Project.load(ROOT)


@pytest.fixture(scope="session")
def plans(project: Project) -> dict[str, Plan]:
    """Every shipped stack, planned once per test session (sites before the edge)."""
    return {p.stack: p for p, _ in plan_all(ROOT, site_stacks_first(project))}


@pytest.fixture(scope="session")
def previews(project: Project) -> dict[str, Plan]:
    """Every shipped stack in preview mode (computed outputs unknown)."""
    return {p.stack: p for p, _ in plan_all(ROOT, site_stacks_first(project), preview=True)}


@pytest.fixture
def temp_project(tmp_path: Path) -> Callable[[str, str], Path]:
    """A copy of the project with one extra stack file: ``make(stack, yaml_text)``."""

    def make(stack: str, text: str) -> Path:
        shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
        (tmp_path / "infra").symlink_to(ROOT / "infra")
        (tmp_path / "stacks").mkdir()
        for f in (ROOT / "stacks").glob("Pulumi.*.yaml"):
            shutil.copy(f, tmp_path / "stacks" / f.name)
        shutil.copytree(ROOT / "stacks" / "environments", tmp_path / "stacks" / "environments")
        (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").write_text(text)
        return tmp_path

    return make


def minimal_aws_spec(**fields: object) -> dict[str, object]:
    """The least an aws site's ``skyfleet:`` config needs (a dev site unless ``environment``)."""
    return {
        "target": "aws",
        "environment": "dev",
        "region": "eu-west-1",
        "accountId": "123456789012",
        "app": {"image": "r.example.com/a@sha256:" + "a" * 64},
        "domain": {"name": "a.example.com", "zoneId": "Z0EXAMPLE"},
        "tags": {"owner": "o", "costCenter": "c"},
        "apiKeys": "client-key-0123456789",
        **fields,
    }
