"""Readers for JSON documents embedded in resource properties: IAM-style policy documents
(IAM, S3, SQS, KMS) and ECS container definitions. A document that is not valid JSON is a
violation in itself, reported by the caller, never a silent pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    principals: tuple[str, ...]
    has_condition: bool
    condition: Mapping[str, Any]


def statements(document: Any, what: str = "policy") -> Iterator[Statement]:
    doc = load_json(document, what)
    if not isinstance(doc, dict):
        raise DocumentError(f"{what} is not a JSON object")
    for raw in as_list(doc.get("Statement")):
        if not isinstance(raw, dict):
            raise DocumentError(f"{what} has a statement that is not an object")
        yield Statement(
            effect=str(raw.get("Effect", "")),
            actions=tuple(str(a) for a in as_list(raw.get("Action"))),
            resources=tuple(str(r) for r in as_list(raw.get("Resource"))),
            principals=tuple(_principals(raw.get("Principal"))),
            has_condition=bool(raw.get("Condition")),
            condition=raw.get("Condition") or {},
        )


def _principals(principal: Any) -> Iterator[str]:
    if principal is None:
        return
    if isinstance(principal, str):
        yield principal
        return
    if isinstance(principal, dict):
        for value in principal.values():
            yield from (str(v) for v in as_list(value))


def is_public_principal(stmt: Statement) -> bool:
    return stmt.effect == "Allow" and "*" in stmt.principals and not stmt.has_condition


def container_definitions(value: Any) -> list[dict[str, Any]]:
    defs = load_json(value, "containerDefinitions")
    if not isinstance(defs, list) or not all(isinstance(d, dict) for d in defs):
        raise DocumentError("containerDefinitions is not a JSON array of objects")
    return defs


_SECRET_HINTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "credential",
    "auth",
)


# Names that hold a reference to a credential (a mounted file, a secret's ARN), not the credential.
_REFERENCE_SUFFIXES = ("_file", "_path", "_dir", "_arn", "_ref", "_secret_name")


def looks_secret(name: str) -> bool:
    """A variable name that suggests its value is a credential itself."""
    lowered = name.lower()
    if lowered.endswith(_REFERENCE_SUFFIXES):
        return False
    return any(hint in lowered for hint in _SECRET_HINTS)
