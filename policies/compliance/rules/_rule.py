"""The rule model of the compliance pack.

A rule is data (id, description, severity, control mapping, remediation, default enforcement)
next to a small check function. The check sees property values through the policy SDK's
unknown-checking proxy and never catches `UnknownValueError`, so during a preview the policy
server reports exactly what the real engine reports ("can't run policy ... during preview").

The shared behaviour lives here once: the `environment` gate for prod-only rules and the
exclusions (a resource-name glob plus a written justification, passed as policy config), which
turn into the protocol's `not_applicable` answer carrying the justification.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    PolicyProviderResource,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

DOCS_URL = "docs/policies.md"
NIST_URL = "https://csrc.nist.gov/pubs/sp/800/53/r5/upd1/final"

# Config properties every policy accepts (JSON schema, validated by the engine before Configure).
COMMON_SCHEMA: dict[str, dict[str, Any]] = {
    "environment": {
        "type": "string",
        "enum": ["dev", "prod"],
        "default": "prod",
        "description": "the stack's environment; prod-only rules skip dev stacks",
    },
    "exclusions": {
        "type": "array",
        "default": [],
        "description": "resources this rule does not apply to, each with a written justification",
        "items": {
            "type": "object",
            "properties": {
                "resource": {"type": "string", "minLength": 1},
                "justification": {"type": "string", "minLength": 10},
            },
            "required": ["resource", "justification"],
        },
    },
}


@dataclass(frozen=True)
class Controls:
    """The control ids a rule maps to, per framework."""

    cis: tuple[str, ...] = ()
    nist: tuple[str, ...] = ()
    soc2: tuple[str, ...] = ()
    pci: tuple[str, ...] = ()

    def as_tags(self) -> list[str]:
        """Encode as policy tags so the mapping travels over the analyzer protocol."""
        tags: list[str] = []
        for prefix, ids in (
            ("CIS", self.cis),
            ("NIST-800-53", self.nist),
            ("SOC2", self.soc2),
            ("PCI-DSS", self.pci),
        ):
            tags.extend(f"{prefix}:{i}" for i in ids)
        return tags


@dataclass(frozen=True)
class Subject:
    """One resource as a resource check sees it."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    provider: PolicyProviderResource | None
    config: Mapping[str, Any]
    protect: bool = False

    @property
    def prod(self) -> bool:
        return self.config.get("environment", "prod") == "prod"


# Rule groups. "general" rules apply to any Pulumi program; "skyfleet" rules encode Skyfleet's own
# design (its app's contract, site parity) and apply only to resources of a Skyfleet program:
# one whose components are typed ``skyfleet:<target>:<Capability>`` (infra/component.py).
GENERAL = "general"
SKYFLEET = "skyfleet"
SKYFLEET_TYPE_PREFIX = "skyfleet:"


def in_skyfleet_program(urn: str) -> bool:
    """A resource URN's type chain (parents first) names a Skyfleet component."""
    parts = urn.split("::")
    return len(parts) >= 3 and any(t.startswith(SKYFLEET_TYPE_PREFIX) for t in parts[2].split("$"))


ResourceCheck = Callable[[Subject], Iterable[str]]
StackCheck = Callable[["StackView"], Iterable[tuple[str, str | None]]]


@dataclass(frozen=True)
class Rule:
    """A compliance rule: metadata next to its check."""

    id: str
    description: str
    severity: Severity
    controls: Controls
    remediation: str
    resource_types: tuple[str, ...] = ()
    check: ResourceCheck | None = None
    stack_check: StackCheck | None = None
    enforcement: EnforcementLevel = EnforcementLevel.MANDATORY
    prod_only: bool = False
    config: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    group: str = GENERAL

    @property
    def kind(self) -> str:
        return "stack" if self.stack_check is not None else "resource"

    def applies_to(self, resource_type: str) -> bool:
        return any(
            resource_type == t or (t.endswith("*") and resource_type.startswith(t[:-1]))
            for t in self.resource_types
        )

    def _metadata(self) -> dict[str, Any]:
        framework = None
        if self.controls.nist:
            framework = PolicyComplianceFramework(
                name="NIST SP 800-53",
                version="Rev. 5",
                reference=NIST_URL,
                specification=", ".join(self.controls.nist),
            )
        return {
            "enforcement_level": self.enforcement,
            "config_schema": PolicyConfigSchema({**COMMON_SCHEMA, **self.config}),
            "display_name": self.id,
            "severity": self.severity,
            "framework": framework,
            "tags": [f"group:{self.group}", *self.controls.as_tags()],
            "remediation_steps": self.remediation,
            "url": f"{DOCS_URL}#{self.id}",
        }

    def to_policy(self) -> ResourceValidationPolicy | StackValidationPolicy:
        if self.stack_check is not None:
            return StackValidationPolicy(
                name=self.id, description=self.description, validate=self._validate_stack, **self._metadata()
            )
        return ResourceValidationPolicy(
            name=self.id, description=self.description, validate=self._validate_resource, **self._metadata()
        )

    def _validate_resource(self, args: ResourceValidationArgs, report: ReportViolation) -> None:
        if not self.applies_to(args.resource_type) or self.check is None:
            return
        config = args.get_config() or {}
        if self.group == SKYFLEET and not in_skyfleet_program(args.urn):
            args.not_applicable("a Skyfleet rule: the resource is not part of a Skyfleet program")
        if self.prod_only and config.get("environment", "prod") != "prod":
            args.not_applicable("applies to prod stacks only")
        excluded = exclusion_for(config, args.name)
        if excluded is not None:
            args.not_applicable(excluded)
        subject = Subject(
            args.resource_type,
            args.name,
            args.urn,
            args.props,
            args.provider,
            config,
            bool(args.opts.protect),
        )
        for message in self.check(subject):
            report(message, None)

    def _validate_stack(self, args: StackValidationArgs, report: ReportViolation) -> None:
        if self.stack_check is None:
            return
        config = args.get_config() or {}
        if self.group == SKYFLEET and not any(
            r.resource_type.startswith(SKYFLEET_TYPE_PREFIX) for r in args.resources
        ):
            args.not_applicable("a Skyfleet rule: the stack is not a Skyfleet program")
        if self.prod_only and config.get("environment", "prod") != "prod":
            args.not_applicable("applies to prod stacks only")
        view = StackView(args.resources, config)
        for message, urn in self.stack_check(view):
            if urn is not None and exclusion_for(config, urn_name(urn)) is not None:
                continue
            report(message, urn)


def exclusion_for(config: Mapping[str, Any], resource_name: str) -> str | None:
    """The not-applicable reason if an exclusion's glob matches this resource name."""
    for entry in config.get("exclusions") or []:
        if fnmatch.fnmatchcase(resource_name, str(entry.get("resource", ""))):
            return f"excluded ({entry.get('resource')}): {entry.get('justification')}"
    return None


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class StackView:
    """The stack's resources, indexed the ways stack rules look them up."""

    def __init__(self, resources: Sequence[PolicyResource], config: Mapping[str, Any]) -> None:
        self.resources = list(resources)
        self.config = config
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, *types: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type in types]

    def has_type(self, *types: str) -> bool:
        return any(r.resource_type in types for r in self.resources)

    def with_prefix(self, prefix: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type.startswith(prefix)]

    def ids_of(self, resource: PolicyResource) -> set[str]:
        """Values other resources use to reference this one (id, arn, name, self link)."""
        keys = ("id", "arn", "name", "selfLink", "bucket")
        return {str(v) for k in keys if isinstance(v := resource.props.get(k), str) and v}

    def referenced(self, value: Any, types: tuple[str, ...]) -> list[PolicyResource]:
        """Resources of `types` whose id/arn/name equals `value` (or any element of it)."""
        wanted = {str(v) for v in value} if isinstance(value, list | tuple) else {str(value)}
        return [r for r in self.of_type(*types) if self.ids_of(r) & wanted]


# Small readers shared by the rule modules. They read through the proxy, so unknowns propagate.


def get_path(props: Mapping[str, Any] | None, *path: str | int) -> Any:
    """Read a nested value; None when any step is missing."""
    cur: Any = props
    for step in path:
        if cur is None:
            return None
        if isinstance(step, int):
            if not isinstance(cur, Sequence) or isinstance(cur, str) or step >= len(cur):
                return None
            cur = cur[step]
        else:
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(step)
    return cur


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [value[i] for i in range(len(value))]
    return [value]


def truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
