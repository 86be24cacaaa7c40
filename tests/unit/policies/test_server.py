"""The pack's type-indexed servicer (rules/_server.py) answers exactly what the SDK's own
servicer answers, while offering each resource only the rules for its type."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime.proto import analyzer_pb2
from pulumi_policy import EnforcementLevel

from policies.compliance.rules import ALL_RULES, _server
from skyfleet.check.runner import StackInput
from skyfleet.check.wire import analyze_request, analyzer_resource
from skyfleet.plan import Plan
from tests.support.gate import PROJECT, REPO
from tests.support.policies.fixtures import BASELINES, CASES


def _requests() -> list[tuple[list[Any], Any]]:
    stacks = [site() for site in BASELINES.values()] + [c.resources() for c in CASES[::12]]
    out = []
    for resources in stacks:
        plan = Plan(
            stack="fixture",
            project=PROJECT,
            program_dir=REPO,
            config_file=REPO / "Pulumi.fixture.yaml",
            config={"aws:region": "eu-west-1", "gcp:region": "europe-west1"},
            preview=False,
            resources=resources,
            outputs={},
        )
        wire, providers = StackInput(plan).wire_resources()
        out.append(
            (
                [analyze_request(r, providers.get(r.urn)) for r in wire],
                analyzer_pb2.AnalyzeStackRequest(
                    resources=[analyzer_resource(r, providers.get(r.urn)) for r in wire]
                ),
            )
        )
    return out


def _answers(servicer: Any, requests: list[tuple[list[Any], Any]]) -> list[tuple[str, str, str]]:
    found = []
    for analyze, stack in requests:
        for request in analyze:
            found += [
                (d.policyName, request.urn, d.message) for d in servicer.Analyze(request, None).diagnostics
            ]
        found += [(d.policyName, d.urn, d.message) for d in servicer.AnalyzeStack(stack, None).diagnostics]
    return found


def test_type_indexed_servicer_gives_the_sdks_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi_policy.policy as sdk

    for name in ("_PolicyAnalyzerServicer", "json_format", "deserialize_properties"):
        monkeypatch.setattr(sdk, name, getattr(sdk, name))  # restored after the test
    requests = _requests()
    plain = sdk._PolicyAnalyzerServicer(
        "p", "1", [r.to_policy() for r in ALL_RULES], EnforcementLevel.MANDATORY
    )
    expected = _answers(plain, requests)

    assert _server.install(ALL_RULES)
    indexed = sdk._PolicyAnalyzerServicer(
        "p", "1", [r.to_policy() for r in ALL_RULES], EnforcementLevel.MANDATORY
    )
    assert _answers(indexed, requests) == expected
    assert len(expected) > 20  # the cases break rules: the comparison covers real findings
    offered = indexed._for_type("kubernetes:apps/v1:Deployment")  # pyright: ignore[reportAttributeAccessIssue]
    assert 0 < len(offered) < len(ALL_RULES) / 3


def test_an_sdk_that_keeps_its_policies_elsewhere_keeps_its_own_servicer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The index stands in for the servicer's private list of policies: an SDK release that
    renames that list must keep the SDK's servicer, not one that fails in Analyze."""
    import pulumi_policy.policy as sdk

    class Renamed(sdk._PolicyAnalyzerServicer):  # type: ignore[misc, name-defined]
        def __init__(self, policies: list[Any]) -> None:
            self.__rules = policies

        def Analyze(self, request: Any, context: Any) -> Any:
            return self.__rules

    monkeypatch.setattr(sdk, "_PolicyAnalyzerServicer", Renamed)
    assert not _server.install(ALL_RULES)
    assert sdk._PolicyAnalyzerServicer is Renamed
