"""Building blocks of the policy fixtures: planned resources as a plan records them, IAM
documents, and one-property flips."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from skyfleet.plan import PlannedResource

Flip = Callable[[dict[str, Any]], None]

TAGS = {"owner": "platform", "environment": "prod", "cost-center": "cc-1", "app": "agent"}
K8S_LABELS = {
    "owner": "platform",
    "environment": "prod",
    "cost-center": "cc-1",
    "app.kubernetes.io/name": "agent",
}
DIGEST = "@sha256:" + "a" * 64


def res(
    type_: str, name: str, inputs: dict[str, Any], *, id_: str | None = None, protect: bool = False
) -> PlannedResource:
    ident = id_ or f"{name}-id"
    outputs = {**inputs, "id": ident, "arn": f"arn:fixture:{name}"}
    r = PlannedResource(
        type=type_,
        name=name,
        urn=f"urn:pulumi:fixture::fixture::{type_}::{name}",
        parent=None,
        provider=None,
        inputs=inputs,
        outputs=outputs,
        dependencies=[],
        options={"protect": protect},  # the engine's protect option, as a plan records it
    )
    return r


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def setp(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with value=DELETE, remove) a dotted path; digits index lists."""

    def flip(inputs: dict[str, Any]) -> None:
        keys = path.split(".")
        cur: Any = inputs
        for k in keys[:-1]:
            cur = cur[int(k)] if k.isdigit() else cur[k]
        last = keys[-1]
        if value is DELETE:
            del cur[last]
        elif last.isdigit():
            cur[int(last)] = value
        else:
            cur[last] = value

    return flip


DELETE = object()


def in_json(key: str, change: Callable[[Any], None]) -> Callable[[dict[str, Any]], None]:
    def flip(inputs: dict[str, Any]) -> None:
        value = json.loads(inputs[key])
        change(value)
        inputs[key] = json.dumps(value)

    return flip


def container(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return in_json("containerDefinitions", lambda defs: change(defs[0]))


def statement(key: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return in_json(key, lambda d: d["Statement"][0].update(fields))


def role_statement(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def flip(inputs: dict[str, Any]) -> None:
        policy = json.loads(inputs["inlinePolicies"][0]["policy"])
        policy["Statement"][0].update(fields)
        inputs["inlinePolicies"][0]["policy"] = json.dumps(policy)

    return flip


C = "spec.template.spec.containers.0"
P = "spec.template.spec"


def chain(*flips: Flip) -> Flip:
    """Several changes to one resource (for a setting that takes two properties to break)."""

    def flip(inputs: dict[str, Any]) -> None:
        for f in flips:
            f(inputs)

    return flip


def append(path: str, value: Any) -> Flip:
    """Append `value` to the list at a dotted path (creating it)."""

    def flip(inputs: dict[str, Any]) -> None:
        keys = path.split(".")
        cur: Any = inputs
        for k in keys[:-1]:
            cur = cur[int(k)] if k.isdigit() else cur.setdefault(k, {})
        cur.setdefault(keys[-1], []).append(value)

    return flip
