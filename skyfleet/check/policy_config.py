"""From a stack's ``skyfleet:policy`` key to the per-policy config the engine sends in Configure.

Two steps, kept apart on purpose. First the stack key becomes a policy-pack config document,
the same JSON a user passes to ``pulumi preview --policy-pack-config`` (so the real CLI can be
given the identical file). Then that document is reconciled with the pack's GetAnalyzerInfo
exactly as the engine reconciles it: schema defaults, then the pack's initial config, then the
document ("all" first, then per policy), then JSON-schema validation of every policy's config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jsonschema
from google.protobuf import json_format
from pulumi.runtime.proto import analyzer_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

POLICY_KEY = "skyfleet:policy"
ENVIRONMENT_KEY = "skyfleet:environment"
Level = Literal["advisory", "mandatory", "remediate", "disabled"]
LEVELS: dict[str, int] = {
    "advisory": analyzer_pb2.ADVISORY,
    "mandatory": analyzer_pb2.MANDATORY,
    "remediate": analyzer_pb2.REMEDIATE,
    "disabled": analyzer_pb2.DISABLED,
}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}


class PolicyConfigError(Exception):
    """The stack's policy settings are invalid (exit code 2)."""


class Exclusion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: str = Field(min_length=1)
    resource: str = Field(min_length=1, description="glob over resource names")
    justification: str = Field(min_length=10, description="why this resource may break the rule")


class PolicySettings(BaseModel):
    """The ``skyfleet:policy`` stack key. Absent, a stack gets the strict prod profile."""

    model_config = ConfigDict(extra="forbid")
    profile: Literal["prod", "dev"] = "prod"
    overrides: dict[str, Literal["advisory", "mandatory", "disabled"]] = Field(default_factory=dict)
    exclusions: list[Exclusion] = Field(default_factory=list)


def _decode(value: Any) -> Any:
    """Config values reach programs as strings; objects are JSON-encoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_settings(config: Mapping[str, Any], stack_file: Path) -> tuple[PolicySettings, str]:
    """The stack's policy settings and environment (prod unless the stack says dev)."""
    raw = _decode(config.get(POLICY_KEY)) if POLICY_KEY in config else {}
    try:
        settings = PolicySettings.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{POLICY_KEY}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (given {e.get('input')!r})"
            for e in exc.errors()
        )
        raise PolicyConfigError(f"{stack_file}: {problems}") from None
    environment = str(_decode(config.get(ENVIRONMENT_KEY)) or "prod")
    if environment not in ("dev", "prod"):
        raise PolicyConfigError(f"{stack_file}: {ENVIRONMENT_KEY} is {environment!r}; expected dev or prod")
    return settings, environment


def pack_config_document(
    settings: PolicySettings, environment: str, info: Any, stack_file: Path
) -> dict[str, Any]:
    """The --policy-pack-config document equivalent to the stack's settings."""
    names = {p.name for p in info.policies}
    unknown = [f"overrides.{r}" for r in settings.overrides if r not in names]
    unknown += [
        f"exclusions[{i}].rule={e.rule}" for i, e in enumerate(settings.exclusions) if e.rule not in names
    ]
    if unknown:
        raise PolicyConfigError(
            f"{stack_file}: {POLICY_KEY} names rules the pack {info.name!r} does not have: "
            + ", ".join(unknown)
        )
    doc: dict[str, Any] = {}
    if settings.profile == "dev":
        doc["all"] = "advisory"
    for policy in info.policies:
        schema = json_format.MessageToDict(policy.configSchema.properties)
        entry: dict[str, Any] = {}
        if policy.name in settings.overrides:
            entry["enforcementLevel"] = settings.overrides[policy.name]
        if "environment" in schema:
            entry["environment"] = environment
        excl = [
            {"resource": e.resource, "justification": e.justification}
            for e in settings.exclusions
            if e.rule == policy.name
        ]
        if excl and "exclusions" in schema:
            entry["exclusions"] = excl
        if entry:
            doc[policy.name] = entry
    return doc


def _split(value: Any) -> tuple[str | None, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    props = dict(value)
    return props.pop("enforcementLevel", None), props


def reconcile(info: Any, document: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The engine's ReconcilePolicyPackConfig: policy name -> (enforcement level, properties)."""
    result: dict[str, tuple[str, dict[str, Any]]] = {}
    for policy in info.policies:
        schema = json_format.MessageToDict(policy.configSchema.properties)
        defaults = {k: v["default"] for k, v in schema.items() if isinstance(v, dict) and "default" in v}
        result[policy.name] = (LEVEL_NAMES[policy.enforcementLevel], defaults)
    # As the engine: an initial-config entry always carries a level (0 decodes as advisory).
    initial = {
        k: (LEVEL_NAMES[v.enforcementLevel], json_format.MessageToDict(v.properties))
        for k, v in info.initialConfig.items()
    }
    for layer in (initial, {k: _split(v) for k, v in document.items()}):
        all_level = layer.get("all", (None, {}))[0]
        if all_level:
            result = {k: (all_level, props) for k, (_, props) in result.items()}
        for name, (level, props) in layer.items():
            old_level, old_props = result.get(name, ("advisory", {}))
            result[name] = (level or old_level, {**old_props, **props})
    errors = []
    for policy in info.policies:
        schema = json_format.MessageToDict(policy.configSchema)
        full = {
            "type": "object",
            **({"properties": schema["properties"]} if schema.get("properties") else {}),
            **({"required": schema["required"]} if schema.get("required") else {}),
        }
        validator = jsonschema.Draft7Validator(full)
        errors += [f"{policy.name}: {e.message}" for e in validator.iter_errors(result[policy.name][1])]
    if errors:
        raise PolicyConfigError("policy pack configuration is invalid: " + "; ".join(errors))
    return result


def configure_request(
    config: Mapping[str, tuple[str, dict[str, Any]]],
) -> analyzer_pb2.ConfigureAnalyzerRequest:
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    for name, (level, props) in config.items():
        entry = request.policyConfig[name]
        entry.enforcementLevel = LEVELS[level]  # type: ignore[assignment]
        entry.properties.update(props)
    return request
