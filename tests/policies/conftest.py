"""One policy-pack process for the whole test session, driven through the gate's own gRPC path
(the same `check_stack` the CLI uses), fed hand-made planned stacks."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.model import RuleInfo, StackResult
from skyfleet.check.runner import DEFAULT_PACK, _rules, check_stack
from skyfleet.plan import Plan, PlannedResource

REPO = Path(__file__).resolve().parents[2]
PROJECT = "fixture"


class Gate:
    """The running pack plus helpers to check a list of planned resources as one stack."""

    def __init__(self, pack: PolicyPackProcess) -> None:
        self.pack = pack
        self.info = pack.info()
        self.rules: dict[str, RuleInfo] = {r.id: r for r in _rules(self.info)}

    def check(
        self,
        resources: list[PlannedResource],
        *,
        environment: str = "prod",
        policy: dict[str, Any] | None = None,
        preview: bool = False,
        extra_config: dict[str, Any] | None = None,
    ) -> StackResult:
        config: dict[str, Any] = {
            "skyfleet:environment": environment,
            "aws:region": "eu-west-1",
            "gcp:region": "europe-west1",
            "gcp:project": "skyfleet-prod",
            **(extra_config or {}),
        }
        if policy is not None:
            config["skyfleet:policy"] = policy
        plan = Plan(
            stack="fixture",
            project=PROJECT,
            program_dir=REPO,
            config_file=REPO / "Pulumi.fixture.yaml",
            config=config,
            preview=preview,
            resources=copy.deepcopy(resources),
            outputs={},
        )
        return check_stack(self.pack, self.info, self.rules, plan)


@pytest.fixture(scope="session")
def gate() -> Iterator[Gate]:
    # SKYFLEET_TEST_POLICY_PACK runs the same tests against another pack (e.g. an older version).
    with PolicyPackProcess(
        Path(os.environ.get("SKYFLEET_TEST_POLICY_PACK", DEFAULT_PACK)), timeout=60
    ) as pack:
        yield Gate(pack)
