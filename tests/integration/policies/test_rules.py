"""Every rule against a compliant baseline and a one-property flip, through the analyzer protocol."""

from __future__ import annotations

import pytest

from policies.compliance.rules import ALL_RULES
from tests.integration.policies.test_deployability import DEPLOYABILITY
from tests.support.gate import Gate
from tests.support.policies.fixtures import BASELINES, CASES, Case

RULE_IDS = {r.id for r in ALL_RULES}


@pytest.mark.parametrize("site", sorted(BASELINES))
def test_baseline_is_fully_compliant(gate: Gate, site: str) -> None:
    result = gate.check(BASELINES[site]())
    assert [(f.rule, f.urn, f.message) for f in result.findings] == []


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}:{c.label}" for c in CASES])
def test_flip_breaks_the_rule(gate: Gate, case: Case) -> None:
    result = gate.check(case.resources())
    fired = {f.rule for f in result.findings if f.mandatory}
    assert case.rule in fired or case.rule in {f.rule for f in result.findings}, (
        f"{case.rule} did not fire; got {sorted(fired)}"
    )
    expected = gate.rules[case.rule].enforcement == "mandatory"
    assert any(f.rule == case.rule and f.mandatory == expected for f in result.findings)


def test_every_rule_has_a_compliant_and_a_violating_fixture() -> None:
    # The deployability rules' violating cases are planted in copies of the shipped stacks.
    violated = {c.rule for c in CASES} | DEPLOYABILITY
    assert RULE_IDS - violated == set(), "rules without a violating case"
    covered: set[str] = set()
    for site in BASELINES.values():
        types = {r.type for r in site()}
        covered |= {r.id for r in ALL_RULES if r.kind == "stack" or any(r.applies_to(t) for t in types)}
    assert RULE_IDS - covered == set(), "rules whose baseline has nothing to check"


def test_skyfleet_rules_skip_programs_that_are_not_skyfleets(gate: Gate) -> None:
    case = next(c for c in CASES if c.rule == "site-parity")
    # The same violating resources, outside any Skyfleet component: someone else's program.
    plain = [r for r in case.resources() if not r.type.startswith("skyfleet:")]
    for r in plain:
        r.urn = f"urn:pulumi:fixture::fixture::{r.type}::{r.name}"
        r.parent = None
    assert "site-parity" in {f.rule for f in gate.check(case.resources()).findings}
    assert "site-parity" not in {f.rule for f in gate.check(plain).findings}


def test_prod_only_rules_are_not_applied_to_dev(gate: Gate) -> None:
    case = next(c for c in CASES if c.rule == "aws-elasticache-automatic-failover")
    result = gate.check(case.resources(), environment="dev", policy={"profile": "dev"})
    assert "aws-elasticache-automatic-failover" not in {f.rule for f in result.findings}
