"""Readers for JSON documents embedded in resource properties: IAM-style policy documents
(IAM, S3, SQS, KMS) and ECS container definitions. A document that is not valid JSON is a
violation in itself, reported by the caller, never a silent pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._rule import as_list


class DocumentError(ValueError):
    """The property holds something that is not a JSON document of the expected shape."""


def load_json(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{what} is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    if isinstance(value, Mapping):
        return _plain(value)
    if isinstance(value, list | tuple):
        return _plain(value)
    raise DocumentError(f"{what} is neither a JSON string nor an object")


def _plain(value: Any) -> Any:
    """Copy a proxied structure into plain dicts/lists (reads every leaf through the proxy)."""
    if isinstance(value, Mapping):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, list | tuple) or (
        hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, str)
    ):
        return [_plain(value[i]) for i in range(len(value))]
    return value


@dataclass(frozen=True)
class Statement:
    """One IAM-style statement, normalised: the effect capitalised as IAM spells it, principals
    flattened (``{"AWS": "*"}`` and ``"*"`` both give ``"*"``), condition keys lower-cased (IAM
    compares them case-insensitively)."""

    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    principals: tuple[str, ...]
    has_condition: bool
    condition: Mapping[str, Any]
    not_actions: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    principal_types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def allows(self) -> bool:
        return self.effect == "Allow"

    def condition_keys(self) -> set[str]:
        """Every condition key the statement tests, lower-cased, whatever the operator."""
        keys: set[str] = set()
        for block in self.condition.values():
            if isinstance(block, Mapping):
                keys.update(str(k).lower() for k in block)
        return keys

    def condition_value(self, operator: str, key: str) -> list[str]:
        """The values tested by `operator` on `key` (both compared case-insensitively)."""
        out: list[str] = []
        for op, block in self.condition.items():
            if str(op).lower() != operator.lower() or not isinstance(block, Mapping):
                continue
            for k, v in block.items():
                if str(k).lower() == key.lower():
                    out.extend(str(x).lower() for x in as_list(v))
        return out


def statements(document: Any, what: str = "policy") -> Iterator[Statement]:
    doc = load_json(document, what)
    if not isinstance(doc, dict):
        raise DocumentError(f"{what} is not a JSON object")
    for raw in as_list(doc.get("Statement")):
        if not isinstance(raw, dict):
            raise DocumentError(f"{what} has a statement that is not an object")
        effect = str(raw.get("Effect", "")).strip().capitalize()
        types = _principal_types(raw.get("Principal"))
        yield Statement(
            effect=effect,
            actions=tuple(str(a) for a in as_list(raw.get("Action"))),
            resources=tuple(str(r) for r in as_list(raw.get("Resource"))),
            principals=tuple(p for ps in types.values() for p in ps),
            has_condition=bool(raw.get("Condition")),
            condition=raw.get("Condition") or {},
            not_actions=tuple(str(a) for a in as_list(raw.get("NotAction"))),
            not_principals=tuple(p for ps in _principal_types(raw.get("NotPrincipal")).values() for p in ps),
            principal_types=types,
        )


def _principal_types(principal: Any) -> dict[str, tuple[str, ...]]:
    if principal is None:
        return {}
    if isinstance(principal, str):
        return {"*": (principal,)}
    if isinstance(principal, dict):
        return {str(k): tuple(str(v) for v in as_list(value)) for k, value in principal.items()}
    return {}


# Condition keys that pin who (or what, from where) may use a grant to everyone.
RESTRICTING_KEYS = frozenset(
    {
        "aws:sourcearn",
        "aws:sourceaccount",
        "aws:sourceowner",
        "aws:sourceorgid",
        "aws:sourceorgpaths",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principalaccount",
        "aws:principalarn",
        "aws:principalservicename",
        "aws:sourcevpc",
        "aws:sourcevpce",
        "aws:sourceip",
        "aws:userid",
        "aws:username",
        "kms:calleraccount",
        "kms:viaservice",
        "s3:dataaccesspointaccount",
        "sns:endpoint",
    }
)


def wildcard_principal(stmt: Statement) -> str | None:
    """The principal that means "anyone" ("*", an account wildcard), if the statement has one."""
    for p in stmt.principals:
        parts = p.split(":")
        if p == "*" or (p.startswith("arn:") and len(parts) > 4 and "*" in parts[4]):
            return p
    return None


def is_public_principal(stmt: Statement) -> bool:
    """An Allow to anyone that no condition narrows to known callers, networks or accounts."""
    if not stmt.allows:
        return False
    if wildcard_principal(stmt) is None and not stmt.not_principals:
        return False
    return not (stmt.condition_keys() & RESTRICTING_KEYS)


def public_grants(document: Any, what: str) -> Iterator[str]:
    """What a resource policy grants to anyone (one message per open statement); a document that
    is not valid JSON is reported as such."""
    if not document:
        return
    try:
        for stmt in statements(document, what):
            if is_public_principal(stmt):
                who = wildcard_principal(stmt) or "everyone but the NotPrincipal"
                actions = ", ".join(stmt.actions) or "every action but " + ", ".join(stmt.not_actions)
                yield f"{what} allows {actions} to Principal {who!r} without a condition on the caller"
    except DocumentError as exc:
        yield str(exc)


def container_definitions(value: Any) -> list[dict[str, Any]]:
    defs = load_json(value, "containerDefinitions")
    if not isinstance(defs, list) or not all(isinstance(d, dict) for d in defs):
        raise DocumentError("containerDefinitions is not a JSON array of objects")
    return defs
