"""Run the gate: plan each stack under mocks, then drive one policy-pack process through the
engine's sequence per stack (ConfigureStack, Configure, Analyze per resource, AnalyzeStack)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi.runtime.proto import analyzer_pb2

from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.model import (
    AppliedExclusion,
    Finding,
    Report,
    RuleInfo,
    StackResult,
    UnexpandedComponent,
)
from skyfleet.check.policy_config import (
    LEVEL_NAMES,
    configure_request,
    pack_config_document,
    read_settings,
    reconcile,
)
from skyfleet.check.wire import (
    UNKNOWN,
    WireResource,
    analyze_request,
    analyzer_resource,
    default_provider,
    stack_urn,
    urn_name,
)
from skyfleet.plan import Plan

DEFAULT_PACK = Path(__file__).resolve().parents[2] / "policies" / "compliance"
_SEVERITY = {0: "unspecified", 1: "low", 2: "medium", 3: "high", 4: "critical"}
_PREVIEW_MARKER = "during preview"


@dataclass
class StackInput:
    """A planned stack, as the engine would hold it after running the program."""

    plan: Plan

    def wire_resources(self) -> tuple[list[WireResource], dict[str, WireResource]]:
        """Resources in registration order (root stack first, default providers where first
        used) and the provider of each resource URN."""
        plan = self.plan
        root = WireResource(
            "pulumi:pulumi:Stack",
            f"{plan.project}-{plan.stack}",
            stack_urn(plan.stack, plan.project),
            {},
            dict(plan.outputs),
        )
        ordered: list[WireResource] = [root]
        by_urn: dict[str, WireResource] = {}
        providers: dict[str, WireResource] = {}
        defaults: dict[str, WireResource] = {}
        for r in plan.resources:
            if r.read:
                continue  # as the engine: only registered resources are analyzed, never reads
            w = WireResource(
                r.type,
                urn_name(r.urn),
                r.urn,
                dict(r.inputs),
                dict(r.outputs or r.inputs),
                parent=r.parent or root.urn,
                dependencies=list(r.dependencies),
                property_dependencies=dict(r.property_dependencies),
                protect=r.protect,
            )
            by_urn[r.urn] = w
            if r.custom and not r.type.startswith("pulumi:providers:"):
                if r.provider:
                    provider = by_urn.get(r.provider.rsplit("::", 1)[0])
                else:
                    package = r.type.split(":", 1)[0]
                    if package not in defaults:
                        defaults[package] = default_provider(package, plan.stack, plan.project, plan.config)
                        ordered.append(defaults[package])
                    provider = defaults[package]
                if provider is not None:
                    providers[r.urn] = provider
            ordered.append(w)
        return ordered, providers


def _rules(info: Any) -> list[RuleInfo]:
    return [
        RuleInfo(
            id=p.name,
            description=p.description,
            kind="stack" if p.policy_type == 2 else "resource",
            severity=_SEVERITY.get(p.severity, "unspecified"),
            enforcement=LEVEL_NAMES[p.enforcementLevel],
            remediation=p.remediation_steps,
            controls=list(p.tags),
            url=p.url,
        )
        for p in info.policies
    ]


def _stack_config(config: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The config the engine hands ConfigureStack: strings, objects JSON-encoded, as in
    PULUMI_CONFIG (secrets stay encrypted here: there are no keys offline)."""
    values, secret_keys = {}, []
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.append(key)
            continue
        values[key] = value if isinstance(value, str) else json.dumps(value)
    return values, secret_keys


def check_stack(
    pack: PolicyPackProcess,
    info: Any,
    rules: dict[str, RuleInfo],
    plan: Plan,
    on_resource: Callable[[], None] | None = None,
) -> StackResult:
    settings, environment = read_settings(plan.config, plan.config_file)
    config = reconcile(info, pack_config_document(settings, environment, info, plan.config_file))
    config_values, secret_keys = _stack_config(plan.config)
    stack_request = analyzer_pb2.AnalyzerStackConfigureRequest(
        stack=plan.stack,
        project=plan.project,
        organization="organization",
        dry_run=plan.preview,
        config_secret_keys=secret_keys,
        tags={"pulumi:project": plan.project, "pulumi:runtime": "python"},
    )
    stack_request.config.update(config_values)
    pack.optional_call("ConfigureStack", stack_request)
    pack.call("Configure", configure_request(config))

    resources, providers = StackInput(plan).wire_resources()
    by_urn = {r.urn: r for r in resources}
    result = StackResult(
        stack=plan.stack,
        project=plan.project,
        stack_file=str(plan.config_file),
        environment=environment,
        profile=settings.profile,
        preview=plan.preview,
        resources=len(resources),
        policy_config={k: {"enforcementLevel": lvl, **props} for k, (lvl, props) in config.items()},
        rule_levels={k: lvl for k, (lvl, _) in config.items()},
        reads=sum(r.read for r in plan.resources),
        unexpanded=[
            UnexpandedComponent(
                stack=plan.stack, type=u.type, name=u.name, urn=u.urn, reason=u.reason, children=u.children
            )
            for u in plan.unexpanded
        ],
        unanswered=list(plan.unanswered),
    )
    root = resources[0].urn

    def collect(response: Any, default_urn: str) -> None:
        for d in response.diagnostics:
            # As the engine: a diagnostic without a known URN belongs to the root stack.
            urn = d.urn if d.urn in by_urn else default_urn
            rule = rules.get(d.policyName)
            target = by_urn.get(urn)
            result.findings.append(
                Finding(
                    stack=plan.stack,
                    rule=d.policyName,
                    enforcement=LEVEL_NAMES[d.enforcementLevel],
                    severity=rule.severity if rule else _SEVERITY.get(d.severity, "unspecified"),
                    urn=urn,
                    resource_type=target.type if target else "",
                    resource_name=target.name if target else "",
                    message=d.message,
                    remediation=rule.remediation if rule else "",
                    preview_unknown=_PREVIEW_MARKER in d.message and "can't run policy" in d.message,
                )
            )
        for na in response.not_applicable:
            if na.reason.startswith("excluded"):
                result.exclusions.append(
                    AppliedExclusion(stack=plan.stack, rule=na.policy_name, urn=default_urn, reason=na.reason)
                )

    for r in resources:
        collect(pack.call("Analyze", analyze_request(r, providers.get(r.urn))), r.urn)
        if on_resource:
            on_resource()
    stack_request = analyzer_pb2.AnalyzeStackRequest(
        resources=[analyzer_resource(r, providers.get(r.urn)) for r in resources]
    )
    collect(pack.call("AnalyzeStack", stack_request), root)
    return result


def run(
    plans: Sequence[Plan],
    pack_dir: Path = DEFAULT_PACK,
    *,
    timeout: float = 60.0,
    on_stack: Callable[[str], None] | None = None,
    on_resource: Callable[[], None] | None = None,
) -> Report:
    """Check planned stacks with one pack process for the whole run."""
    started = time.perf_counter()
    with PolicyPackProcess(pack_dir, timeout=timeout) as pack:
        pack.handshake()
        info = pack.info()
        rules = _rules(info)
        by_id = {r.id: r for r in rules}
        results = []
        for plan in plans:
            if on_stack:
                on_stack(plan.stack)
            results.append(check_stack(pack, info, by_id, plan, on_resource))
    return Report(
        pack=info.name,
        pack_version=info.version,
        rules=rules,
        stacks=results,
        seconds=time.perf_counter() - started,
    )


__all__ = ["DEFAULT_PACK", "UNKNOWN", "StackInput", "check_stack", "run"]
