"""Report writers: terminal (rich), JSON, SARIF 2.1.0 and JUnit XML, all from one `Report`."""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from skyfleet.check.model import Finding, Report

SEVERITY_ORDER = ["critical", "high", "medium", "low", "unspecified"]
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "unspecified": "1.0"}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def print_terminal(report: Report, console: Console) -> None:
    for stack in report.stacks:
        title = (
            f"[bold]{stack.stack}[/] ({stack.environment}, profile {stack.profile}"
            f"{', preview' if stack.preview else ''}) — {stack.resources} resources"
        )
        if not stack.findings:
            console.print(f"{title}: [green]no violations[/]")
        else:
            console.print(title)
        for severity in SEVERITY_ORDER:
            group = [f for f in stack.findings if f.severity == severity]
            if not group:
                continue
            table = Table(
                title=f"{severity} ({len(group)})", title_justify="left", show_lines=True, expand=True
            )
            for col in ("level", "rule", "resource", "message", "remediation"):
                table.add_column(col, overflow="fold")
            for f in sorted(group, key=lambda f: (not f.mandatory, f.rule, f.urn)):
                level = "[red]mandatory[/]" if f.mandatory else "[yellow]advisory[/]"
                table.add_row(level, f.rule, f.urn, f.message, f.remediation)
            console.print(table)
        for e in stack.exclusions:
            console.print(f"  [dim]excluded[/] {e.rule} on {e.urn}: {e.reason}", highlight=False)
    verdict = "[red]FAIL[/]" if report.mandatory else "[green]PASS[/]"
    console.print(
        f"{verdict} {len(report.stacks)} stack(s), {len(report.rules)} rules, "
        f"{report.mandatory} mandatory and "
        f"{report.advisory} advisory violation(s), "
        f"{sum(len(s.exclusions) for s in report.stacks)} exclusion(s) applied, {report.seconds:.2f} s",
        highlight=False,
    )


def write_json(report: Report, path: Path) -> None:
    doc = report.model_dump(mode="json")
    doc["summary"] = {
        "mandatory": report.mandatory,
        "advisory": report.advisory,
        "exitCode": report.exit_code(),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def fingerprint(f: Finding) -> str:
    """Stable across runs: stack, rule, resource and message, not line numbers or timing."""
    return hashlib.sha256(f"{f.stack}|{f.rule}|{f.urn}|{f.message}".encode()).hexdigest()


def _artifact(stack_file: str, root: Path) -> str:
    path = Path(stack_file).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_uri()


def sarif(report: Report, root: Path) -> dict[str, Any]:
    rule_index = {r.id: i for i, r in enumerate(report.rules)}
    rules = [
        {
            "id": r.id,
            "name": r.id,
            "shortDescription": {"text": r.description},
            "fullDescription": {"text": r.description},
            "help": {
                "text": r.remediation or r.description,
                "markdown": f"**Remediation:** {r.remediation}\n\n**Controls:** "
                f"{', '.join(r.controls) or 'none'}",
            },
            **({"helpUri": r.url} if r.url.startswith("http") else {}),
            "defaultConfiguration": {"level": "error" if r.enforcement == "mandatory" else "warning"},
            "properties": {
                "tags": ["security", "compliance", *r.controls],
                "security-severity": _SECURITY_SEVERITY.get(r.severity, "1.0"),
                "kind": r.kind,
                "precision": "high",
            },
        }
        for r in report.rules
    ]
    results: list[dict[str, Any]] = []
    for stack in report.stacks:
        uri = _artifact(stack.stack_file, root)
        location = {
            "physicalLocation": {
                "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
                "region": {"startLine": 1},
            }
        }
        for f in stack.findings:
            results.append(
                {
                    "ruleId": f.rule,
                    **({"ruleIndex": rule_index[f.rule]} if f.rule in rule_index else {}),
                    "level": "error" if f.mandatory else "warning",
                    "message": {"text": f"[{stack.stack}] {f.urn}: {f.message}"},
                    "locations": [
                        {
                            **location,
                            "logicalLocations": [
                                {
                                    "fullyQualifiedName": f.urn,
                                    "name": f.resource_name or f.urn,
                                    "kind": "resource",
                                }
                            ],
                        }
                    ],
                    "partialFingerprints": {"skyfleetFinding/v1": fingerprint(f)},
                    "properties": {
                        "stack": stack.stack,
                        "enforcement": f.enforcement,
                        "severity": f.severity,
                    },
                }
            )
        for e in stack.exclusions:
            results.append(
                {
                    "ruleId": e.rule,
                    **({"ruleIndex": rule_index[e.rule]} if e.rule in rule_index else {}),
                    "level": "note",
                    "message": {"text": f"[{stack.stack}] {e.urn}: rule not applied ({e.reason})"},
                    "locations": [
                        {**location, "logicalLocations": [{"fullyQualifiedName": e.urn, "kind": "resource"}]}
                    ],
                    "partialFingerprints": {
                        "skyfleetFinding/v1": hashlib.sha256(
                            f"{stack.stack}|{e.rule}|{e.urn}|excluded".encode()
                        ).hexdigest()
                    },
                    "suppressions": [{"kind": "external", "justification": e.reason}],
                }
            )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "skyfleet-check",
                        "version": report.pack_version,
                        "informationUri": "https://www.pulumi.com/docs/iac/using-pulumi/crossguard/",
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.resolve().as_uri() + "/"}},
                "results": results,
                "invocations": [{"executionSuccessful": True, "exitCode": report.exit_code()}],
            }
        ],
    }


def write_sarif(report: Report, path: Path, root: Path | None = None) -> None:
    path.write_text(json.dumps(sarif(report, root or Path(os.getcwd())), indent=2) + "\n")


def junit(report: Report) -> ET.Element:
    """One testsuite per stack, one testcase per rule: failure on mandatory violations."""
    suites = ET.Element(
        "testsuites", name="skyfleet check", tests="0", failures="0", time=f"{report.seconds:.3f}"
    )
    total = failures = 0
    for stack in report.stacks:
        suite = ET.SubElement(suites, "testsuite", name=stack.stack)
        s_fail = s_skip = 0
        for rule in report.rules:
            case = ET.SubElement(suite, "testcase", name=rule.id, classname=f"skyfleet.check.{stack.stack}")
            found = [f for f in stack.findings if f.rule == rule.id]
            mandatory = [f for f in found if f.mandatory]
            level = stack.rule_levels.get(rule.id, rule.enforcement)
            if mandatory:
                s_fail += 1
                failure = ET.SubElement(
                    case, "failure", type="mandatory", message=f"{len(mandatory)} mandatory violation(s)"
                )
                failure.text = "\n".join(f"{f.urn}: {f.message}" for f in mandatory)
            elif level == "disabled":
                s_skip += 1
                ET.SubElement(case, "skipped", message="disabled for this stack")
            if found and not mandatory:
                ET.SubElement(case, "system-out").text = "\n".join(
                    f"advisory {f.urn}: {f.message}" for f in found
                )
        suite.set("tests", str(len(report.rules)))
        suite.set("failures", str(s_fail))
        suite.set("skipped", str(s_skip))
        suite.set("errors", "0")
        total += len(report.rules)
        failures += s_fail
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    return suites


def write_junit(report: Report, path: Path) -> None:
    tree = ET.ElementTree(junit(report))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
