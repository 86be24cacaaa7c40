"""The compliance gate for tests: one policy-pack process driven through the gate's own gRPC
path (the same ``check_stack`` the CLI uses), fed hand-made planned stacks."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.model import RuleInfo, StackResult
from skyfleet.check.runner import _rules, check_stack
from skyfleet.plan import Plan, PlannedResource

REPO = Path(__file__).resolve().parents[2]
# The OASIS SARIF 2.1.0 schema: the copy beside the checkout, or where SKYFLEET_SARIF_SCHEMA says.
SARIF_SCHEMA = Path(
    os.environ.get("SKYFLEET_SARIF_SCHEMA", REPO.parent / "shared" / "schemas" / "sarif-schema-2.1.0.json")
)
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


def sdk_class(token: str) -> type:
    """The Pulumi SDK class that registers the resource type ``token``."""
    package = token.split(":", 1)[0]
    pkg = importlib.import_module(f"pulumi_{package}")
    mods = json.loads(re.search(r"resource_modules=\"\"\"(.*?)\"\"\"", inspect.getsource(pkg), re.S).group(1))  # type: ignore[union-attr]
    for mod in mods:
        if token in mod["classes"]:
            return getattr(importlib.import_module(mod["fqn"]), mod["classes"][token])
    raise AssertionError(f"{token} is not registered by pulumi_{package}")
