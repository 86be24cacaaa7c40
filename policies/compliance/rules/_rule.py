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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
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


@lru_cache(maxsize=4096)
def type_matches(patterns: tuple[str, ...], resource_type: str) -> bool:
    """A type token against exact tokens and globs ("gcp:*IamMember:*"); cached, as every
    Analyze call asks every rule."""
    return any(resource_type == t or ("*" in t and fnmatch.fnmatchcase(resource_type, t)) for t in patterns)


@dataclass(frozen=True)
class Rule:
    """A compliance rule: metadata next to its check.

    `checkov` names the checkov checks this rule implements (on the Terraform or Kubernetes
    equivalent); docs/policies.md's coverage table is generated from it."""

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
    checkov: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "stack" if self.stack_check is not None else "resource"

    def applies_to(self, resource_type: str) -> bool:
        return type_matches(self.resource_types, resource_type)

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
    """The stack's resources, indexed the ways stack rules look them up, and the references
    between them (by value: an id, ARN, name, self link or URL; or by the engine's property
    dependencies, which hold even when a value is unknown)."""

    # Output properties other resources use to point at a resource.
    ID_KEYS = ("id", "arn", "name", "selfLink", "bucket", "url", "email", "uniqueId", "keyId")

    def __init__(self, resources: Sequence[PolicyResource], config: Mapping[str, Any]) -> None:
        self.resources = list(resources)
        self.config = config
        self.by_urn = {r.urn: r for r in self.resources}
        self._by_type: dict[str, list[PolicyResource]] = {}
        for r in self.resources:
            self._by_type.setdefault(r.resource_type, []).append(r)
        self._ids: dict[str, set[str]] = {}

    @property
    def skyfleet(self) -> bool:
        """The stack is a Skyfleet program (some of Skyfleet's own design choices apply)."""
        return any(t.startswith(SKYFLEET_TYPE_PREFIX) for t in self._by_type)

    def of_type(self, *types: str) -> list[PolicyResource]:
        if len(types) == 1:
            return list(self._by_type.get(types[0], ()))
        return [r for r in self.resources if r.resource_type in types]

    def has_type(self, *types: str) -> bool:
        return any(t in self._by_type for t in types)

    def with_prefix(self, prefix: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type.startswith(prefix)]

    def ids_of(self, resource: PolicyResource) -> set[str]:
        """Values other resources use to reference this one (id, ARN, name, self link, URL), with
        the last path segment of each (a companion may name what another holds as a path)."""
        found = self._ids.get(resource.urn)
        if found is None:
            found = set()
            for k in self.ID_KEYS:
                v = resource.props.get(k)
                if isinstance(v, str) and v:
                    found.add(v)
                    if "/" in v.rstrip("/"):
                        found.add(v.rstrip("/").rsplit("/", 1)[-1])
            self._ids[resource.urn] = found
        return found

    def referenced(self, value: Any, types: tuple[str, ...]) -> list[PolicyResource]:
        """Resources of `types` whose id/arn/name equals `value` (or any element of it)."""
        wanted = {str(v) for v in as_list(value) if v not in (None, "")}
        wanted |= {w.rstrip("/").rsplit("/", 1)[-1] for w in wanted if "/" in w}
        if not wanted:
            return []
        return [r for r in self.of_type(*types) if self.ids_of(r) & wanted]

    def refers(self, source: PolicyResource, key: str, types: tuple[str, ...]) -> list[PolicyResource]:
        """Resources of `types` that `source.props[key]` points at, by value or by the engine's
        property dependency on `key`."""
        found = {r.urn: r for r in self.referenced(source.props.get(key), types)}
        for dep in source.property_dependencies.get(key, []):
            if dep.resource_type in types:
                found.setdefault(dep.urn, dep)
        return list(found.values())

    def referrers(self, target: PolicyResource, types: tuple[str, ...], *keys: str) -> list[PolicyResource]:
        """Resources of `types` whose property (any of `keys`) points at `target`."""
        names = self.ids_of(target)
        out = []
        for r in self.of_type(*types):
            for key in keys:
                values = {str(v) for v in as_list(r.props.get(key)) if v not in (None, "")}
                values |= {v.rstrip("/").rsplit("/", 1)[-1] for v in values if "/" in v}
                deps = {d.urn for d in r.property_dependencies.get(key, [])}
                if values & names or target.urn in deps:
                    out.append(r)
                    break
        return out


# Small readers shared by the rule modules. They read through the proxy, so unknowns propagate.


def get_path(props: Any, *path: str | int) -> Any:
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


def norm(value: Any) -> str:
    """A string value compared case-insensitively (enums, protocols, regions)."""
    return str(value).strip().lower() if value is not None else ""


def is_false(value: Any) -> bool:
    """Explicitly false (a provider default does not count)."""
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def findings(*pairs: tuple[bool, str]) -> Iterator[str]:
    """The messages whose condition holds."""
    for bad, message in pairs:
        if bad:
            yield message


def num(value: Any) -> str:
    """A number as a person writes it (struct values arrive as floats: 8080.0 -> 8080)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
