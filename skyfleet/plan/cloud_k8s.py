"""Mock outputs for Kubernetes objects (and pulumi-random passwords): what the API server
adds after an apply (uid, resourceVersion, creation time, defaults), and the status fields
apply-chains read: a Service's clusterIP, an Ingress's load-balancer address, a workload's
ready replicas.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import yaml

from skyfleet.plan.mocks import MockContext

_CREATED = "2026-01-01T00:00:00Z"
_SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")


def _uid(ctx: MockContext, name: str) -> str:
    h = ctx.uid(f"k8s/{name}", 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _cluster_ip(ctx: MockContext, name: str) -> str:
    offset = int(ctx.uid(f"svc/{name}", 8), 16) % (_SERVICE_CIDR.num_addresses - 2) + 1
    return str(_SERVICE_CIDR.network_address + offset)


def _public_ip(ctx: MockContext, name: str) -> str:
    """A documentation address (TEST-NET-3) standing in for the ingress controller's VIP."""
    return f"203.0.113.{int(ctx.uid(name, 4), 16) % 254 + 1}"


def _status(kind: str, name: str, spec: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    if kind in ("Deployment", "StatefulSet"):
        n = int(spec.get("replicas", 1))
        return {"replicas": n, "readyReplicas": n, "availableReplicas": n, "updatedReplicas": n}
    if kind == "Ingress":
        return {"loadBalancer": {"ingress": [{"ip": _public_ip(ctx, f"ingress/{name}")}]}}
    if kind == "Service" and spec.get("type") == "LoadBalancer":
        return {"loadBalancer": {"ingress": [{"ip": _public_ip(ctx, f"lb/{name}")}]}}
    if kind == "Job":
        return {"succeeded": 1, "completionTime": _CREATED}
    if kind == "HorizontalPodAutoscaler":
        return {"currentReplicas": spec.get("minReplicas", 1), "desiredReplicas": spec.get("minReplicas", 1)}
    return None


def outputs(typ: str, name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    if typ == "random:index/randomPassword:RandomPassword":
        length = int(inputs.get("length", 16))
        digest = hashlib.sha256(f"{ctx.stack}/{name}".encode()).hexdigest()
        result = (digest * (length // len(digest) + 1))[:length]
        return {"id": "none", "result": result, "bcryptHash": f"$2a$10${digest[:53]}"}
    if not typ.startswith("kubernetes:") or typ.startswith("kubernetes:helm") or typ.startswith("pulumi:"):
        return None
    if typ.startswith("pulumi:providers:"):
        return None
    kind = typ.rsplit(":", 1)[-1]
    meta = dict(inputs.get("metadata") or {})
    obj_name = meta.get("name") or f"{name}-{ctx.uid(name, 8)}"
    namespace = meta.get("namespace")
    meta.update(
        name=obj_name,
        uid=_uid(ctx, typ + name),
        resourceVersion=str(int(ctx.uid(typ + name, 6), 16)),
        creationTimestamp=_CREATED,
        generation=1,
    )
    out: dict[str, Any] = {
        "id": f"{namespace}/{obj_name}" if namespace else obj_name,
        "metadata": meta,
    }
    spec = inputs.get("spec")
    if kind == "Service" and isinstance(spec, dict):
        spec = dict(spec)
        if spec.get("clusterIP") != "None":
            spec["clusterIP"] = _cluster_ip(ctx, f"{namespace}/{obj_name}")
            spec["clusterIPs"] = [spec["clusterIP"]]
        out["spec"] = spec
    status = _status(kind, obj_name, spec if isinstance(spec, dict) else {}, ctx)
    if status is not None:
        out["status"] = status
    return out


def call(token: str, args: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    """The provider's manifest functions: YAML is decoded here exactly as the provider does
    (every document, empty ones dropped), so ``yaml.ConfigFile``/``ConfigGroup`` expand
    offline; helm and kustomize rendering need their tools and answer no objects (the plan
    reports those components as not expanded)."""
    if token == "kubernetes:yaml:decode":
        docs = yaml.safe_load_all(str(args.get("text") or ""))
        return {"result": [d for d in docs if d is not None]}
    if token in ("kubernetes:helm:template", "kubernetes:kustomize:directory"):
        return {"result": []}
    return None
