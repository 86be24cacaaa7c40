"""The coverage tables against checkov are complete, consistent with the rules, and current in
docs/policies.md."""

from __future__ import annotations

from policies.compliance.rules import ALL_RULES
from policies.coverage.not_implemented import REASONS
from policies.coverage.scope import KUBERNETES, TERRAFORM
from policies.coverage.table import DOCS, END, START, checkov_checks, implemented, markdown


def test_every_checkov_check_on_our_types_is_implemented_or_explained() -> None:
    checks = set(checkov_checks()["checks"])
    done = set(implemented())
    assert checks - done - set(REASONS) == set(), "checkov checks with neither a rule nor a reason"
    assert done & set(REASONS) == set(), "checks both implemented and explained away"
    assert set(REASONS) - checks == set(), "reasons for checks checkov does not run on our types"


def test_rules_name_only_checks_checkov_runs_on_our_types() -> None:
    checks = checkov_checks()["checks"]
    for rule in ALL_RULES:
        unknown = [c for c in rule.checkov if c not in checks]
        assert unknown == [], f"{rule.id} names {unknown}"


def test_every_type_the_rules_judge_is_in_scope() -> None:
    judged = {t for r in ALL_RULES for t in r.resource_types if "*" not in t}
    assert judged - set(TERRAFORM) - set(KUBERNETES) == set()


def test_docs_carry_the_current_tables() -> None:
    text = DOCS.read_text()
    block = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == markdown(), "run: python -m policies.coverage"
