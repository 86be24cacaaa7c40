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
    if report.error is not None:
        where = f" ({report.error.file}:{report.error.line})" if report.error.file else ""
        console.print(f"[red]ERROR[/] no verdict{where}: {report.error.message}", highlight=False)
        return
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
        for u in stack.unexpanded:
            children = f" (children seen only as stand-ins: {', '.join(sorted(set(u.children)))})"
            console.print(
                f"  [yellow]not expanded[/] {u.type} {u.name!r}: {u.reason}{children if u.children else ''}",
                highlight=False,
            )
        if stack.reads:
            console.print(f"  [dim]{stack.reads} read resource(s) (Resource.get) not analyzed[/]")
        for token in stack.unanswered:
            console.print(f"  [dim]no answer offline for {token}: the program got an empty result[/]")
    verdict = "[red]FAIL[/]" if report.mandatory else "[green]PASS[/]"
    console.print(
        f"{verdict} {len(report.stacks)} stack(s), {len(report.rules)} rules, "
        f"{report.mandatory} mandatory and "
        f"{report.advisory} advisory violation(s), "
        f"{sum(len(s.exclusions) for s in report.stacks)} exclusion(s) applied, {report.seconds:.2f} s",
        highlight=False,
    )
    if report.unexpanded:
        console.print(
            f"[yellow]WARNING[/] {len(report.unexpanded)} component(s) not expanded offline: "
            "their child resources were not checked",
            highlight=False,
        )


def write_json(report: Report, path: Path) -> None:
    doc = report.model_dump(mode="json")
    doc["summary"] = {
        "mandatory": report.mandatory,
        "advisory": report.advisory,
        "unexpanded": len(report.unexpanded),
        "exitCode": report.exit_code(),
        "error": report.error.message if report.error else None,
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
    invocation: dict[str, Any] = {
        "executionSuccessful": report.error is None,
        "exitCode": report.exit_code(),
    }
    notifications = _notifications(report, root)
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
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
                "invocations": [invocation],
            }
        ],
    }


def _notifications(report: Report, root: Path) -> list[dict[str, Any]]:
    """The tool's own messages: the error that stopped it, and every component whose children
    it could not check (a partial verdict must say so where CI shows it)."""
    out: list[dict[str, Any]] = []
    if report.error is not None:
        note: dict[str, Any] = {"level": "error", "message": {"text": report.error.message}}
        if report.error.file:
            note["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": _artifact(report.error.file, root),
                            "uriBaseId": "%SRCROOT%",
                        },
                        "region": {"startLine": report.error.line or 1},
                    }
                }
            ]
        out.append(note)
    for stack in report.stacks:
        for u in stack.unexpanded:
            out.append(
                {
                    "level": "warning",
                    "descriptor": {"id": "skyfleet-unexpanded-component"},
                    "message": {"text": f"[{stack.stack}] {u.type} {u.name!r} not expanded: {u.reason}"},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {
                                    "uri": _artifact(stack.stack_file, root),
                                    "uriBaseId": "%SRCROOT%",
                                },
                                "region": {"startLine": 1},
                            },
                            "logicalLocations": [{"fullyQualifiedName": u.urn, "kind": "resource"}],
                        }
                    ],
                }
            )
    return out


def write_sarif(report: Report, path: Path, root: Path | None = None) -> None:
    path.write_text(json.dumps(sarif(report, root or Path(os.getcwd())), indent=2) + "\n")


def junit(report: Report) -> ET.Element:
    """One testsuite per stack, one testcase per rule: failure on mandatory violations."""
    suites = ET.Element(
        "testsuites", name="skyfleet check", tests="0", failures="0", time=f"{report.seconds:.3f}"
    )
    total = failures = errors = 0
    if report.error is not None:
        suite = ET.SubElement(suites, "testsuite", name="skyfleet check", tests="1", failures="0")
        suite.set("errors", "1")
        suite.set("skipped", "0")
        case = ET.SubElement(suite, "testcase", name="plan and analyze", classname="skyfleet.check")
        where = f"{report.error.file}:{report.error.line}: " if report.error.file else ""
        error = ET.SubElement(case, "error", type="tool-error", message=report.error.message.splitlines()[0])
        error.text = where + report.error.message
        total, errors = 1, 1
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
        for u in stack.unexpanded:
            # A skipped case per component whose children no rule saw, so CI shows the gap.
            case = ET.SubElement(
                suite, "testcase", name=f"expand {u.type} {u.name}", classname=f"skyfleet.check.{stack.stack}"
            )
            ET.SubElement(case, "skipped", message=f"not expanded offline: {u.reason}")
            s_skip += 1
        tests = len(report.rules) + len(stack.unexpanded)
        suite.set("tests", str(tests))
        suite.set("failures", str(s_fail))
        suite.set("skipped", str(s_skip))
        suite.set("errors", "0")
        total += tests
        failures += s_fail
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", str(errors))
    return suites


def write_junit(report: Report, path: Path) -> None:
    tree = ET.ElementTree(junit(report))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
