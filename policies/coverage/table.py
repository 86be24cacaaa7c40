"""Render the coverage tables and keep docs/policies.md's copy current."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policies.compliance.rules import ALL_RULES
from policies.coverage.not_implemented import REASONS
from policies.coverage.scope import KUBERNETES, TERRAFORM

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[1] / "docs" / "policies.md"
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"


def checkov_checks() -> Mapping[str, Any]:
    return json.loads((HERE / "checkov_checks.json").read_text())


def implemented() -> dict[str, list[str]]:
    """checkov id -> the rules that implement it."""
    out: dict[str, list[str]] = {}
    for rule in ALL_RULES:
        for check in rule.checkov:
            out.setdefault(check, []).append(rule.id)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    snapshot = checkov_checks()
    checks = snapshot["checks"]
    done = implemented()
    checked = {t for c in checks.values() for t in c["on"]}
    scope = set(TERRAFORM.values()) | set(KUBERNETES.values())
    lines = [
        f"On the {len(scope)} Terraform resource types and Kubernetes kinds equivalent to the "
        "resource types in "
        f"scope (policies/coverage/scope.py), checkov {snapshot['checkov']} runs {len(checks)} checks (on "
        f"{len(checked)} of them): {sum(c in done for c in checks)} are implemented by a rule below, "
        f"{sum(c in REASONS for c in checks)} are not, each for the reason given.",
        "",
        "### Our rules and the checkov checks they implement",
        "",
        "| rule | group | default | checkov | CIS |",
        "|---|---|---|---|---|",
    ]
    for rule in sorted(ALL_RULES, key=lambda r: r.id):
        level = "advisory" if rule.enforcement.value == "advisory" else "mandatory"
        lines.append(
            f"| [`{rule.id}`](#{rule.id}) | {rule.group} | {level} | {', '.join(rule.checkov) or '—'} | "
            f"{', '.join(rule.controls.cis) or '—'} |"
        )
    lines += [
        "",
        "### checkov checks on our resource types that we do not implement",
        "",
        "| checkov | check | on | why not |",
        "|---|---|---|---|",
    ]
    for check_id, check in checks.items():
        if check_id in done:
            continue
        on = ", ".join(check["on"][:3]) + (" …" if len(check["on"]) > 3 else "")
        lines.append(f"| {check_id} | {_cell(check['name'])} | {on} | {_cell(REASONS.get(check_id, '?'))} |")
    return "\n".join(lines)


def update_docs(path: Path = DOCS) -> bool:
    """Rewrite the generated block of docs/policies.md; True when it changed."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{markdown()}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text
