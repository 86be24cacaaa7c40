"""Whole Pulumi programs the rules were not written against, through `skyfleet check --program`.

Each folder under programs/ is a realistic Pulumi Python project (AWS, GCP or Kubernetes) with
two stacks: `noncompliant`, which plants the violations listed in its planted.yaml, and
`compliant`, its twin configured the way a careful production engineer would. Every planted
violation must be caught by its specific rule on its resource, and the twin must produce no
finding at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from skyfleet.cli import app

PROGRAMS = Path(__file__).resolve().parent / "programs"
NAMES = sorted(p.name for p in PROGRAMS.iterdir() if (p / "Pulumi.yaml").exists())
runner = CliRunner()


def _check(program: str, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    out = tmp_path / f"{program}.json"
    result = runner.invoke(app, ["check", "--program", str(PROGRAMS / program), "--all", "--json", str(out)])
    assert result.exit_code in (0, 1), result.output
    return {s["stack"]: s["findings"] for s in json.loads(out.read_text())["stacks"]}


@pytest.mark.parametrize("program", NAMES)
def test_planted_violations_are_caught_and_the_twin_is_clean(program: str, tmp_path: Path) -> None:
    planted = yaml.safe_load((PROGRAMS / program / "planted.yaml").read_text())
    stacks = _check(program, tmp_path)
    caught = {(f["rule"], f["resource_name"]) for f in stacks["noncompliant"]}
    missed = [p for p in planted if (p["rule"], p["resource"]) not in caught]
    assert missed == [], f"{len(planted) - len(missed)}/{len(planted)} caught"
    twin = [(f["enforcement"], f["rule"], f["resource_name"], f["message"]) for f in stacks["compliant"]]
    assert twin == []


def test_every_program_plants_violations_across_rules() -> None:
    assert {n.split("-", 1)[0] for n in NAMES} == {"aws", "gcp", "k8s"}
    for name in NAMES:
        planted = yaml.safe_load((PROGRAMS / name / "planted.yaml").read_text())
        assert len(planted) >= 8, name
        assert len({p["rule"] for p in planted}) >= 7, name
