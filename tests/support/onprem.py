"""Reading the onprem target's plan as the Kubernetes provider would receive it: wire-form
inputs unwrapped into manifests, one object by kind and name, pods and their containers; and
the onprem site planned as a dev stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from skyfleet.plan import Plan, PlannedResource, plan_stack
from tests.support.plans import ROOT

STACK = "onprem-prod"
NAMESPACE = "agent-app"
# The Pulumi SDK's marker for a secret value in the wire form.
SECRET_SIG = "4dabf18193072939515e22adb298388d"
POD_OWNERS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:batch/v1:Job")


def plain(value: Any) -> Any:
    """Wire form -> the manifest the provider sends: secrets unwrapped, whole floats as ints
    (protobuf carries every number as a double)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) is not None and "value" in value:
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def kube_objects(plan: Plan) -> list[PlannedResource]:
    return [
        r
        for r in plan.resources
        if r.custom and r.type.startswith("kubernetes:") and "providers" not in r.type
    ]


def manifest(r: PlannedResource) -> dict[str, Any]:
    return plain(r.inputs)


def one(plan: Plan, typ: str, name: str) -> dict[str, Any]:
    found = [manifest(r) for r in plan.of_type(typ) if manifest(r)["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {typ} named {name}, found {len(found)}"
    return found[0]


def pod_specs(plan: Plan) -> Iterator[tuple[str, dict[str, Any]]]:
    for typ in POD_OWNERS:
        for r in plan.of_type(typ):
            m = manifest(r)
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def plan_dev_site(directory: Path) -> Plan:
    """The onprem-prod site as a dev stack (profile defaults: one replica each, no HA cache),
    planned from a copy of the project in ``directory``."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    config = doc["config"]
    config["skyfleet:environment"] = "dev"
    config["skyfleet:site"] = "onprem-dev"
    config["skyfleet:policy"] = {"profile": "dev"}
    for key in ("replicas", "workerReplicas"):
        config["skyfleet:app"].pop(key)
    config["skyfleet:cache"] = {"sizeGb": 1}
    # A dev site on its own: no fleet, client keys of its own.
    doc.pop("environment", None)
    config["skyfleet:apiKeys"] = {"secure": "v1:ZGV2:placeholder"}
    (directory / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (directory / "infra").symlink_to(ROOT / "infra")
    (directory / "stacks").mkdir()
    (directory / "stacks" / "Pulumi.onprem-dev.yaml").write_text(yaml.safe_dump(doc))
    return plan_stack(directory, "onprem-dev")
