"""The rule catalogue in Markdown, generated from the pack's own GetAnalyzerInfo answer (so the
docs cannot drift from the rules)."""

from __future__ import annotations

from typing import Any

from skyfleet.check.policy_config import LEVEL_NAMES

_SEVERITY = {0: "unspecified", 1: "low", 2: "medium", 3: "high", 4: "critical"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_catalogue(info: Any) -> str:
    policies = sorted(info.policies, key=lambda p: (p.policy_type, p.name))
    lines = [
        f"Pack `{info.name}`: {sum(p.policy_type == 1 for p in policies)} resource rules and "
        f"{sum(p.policy_type == 2 for p in policies)} stack rules.",
        "",
        "| id | kind | severity | default | description | controls | remediation |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in policies:
        kind = "stack" if p.policy_type == 2 else "resource"
        lines.append(
            f'| <a id="{p.name}"></a>`{p.name}` | {kind} | {_SEVERITY.get(p.severity, "?")} | '
            f"{LEVEL_NAMES[p.enforcementLevel]} | {_cell(p.description)} | {_cell(', '.join(p.tags))} | "
            f"{_cell(p.remediation_steps)} |"
        )
    return "\n".join(lines)
