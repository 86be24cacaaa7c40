"""Kubernetes faults on the on-prem site: a deployment scaled to 0, a deny-all NetworkPolicy.

The client uses the stack's ``kubeContext`` from the local kubeconfig; one that is not there is
an error naming it. The in-cluster config is used only when the stack names no context and there
is no kubeconfig.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.outputs import SiteOutputs
from skyfleet.drills.actions.registry import Applied, StackFault, Undo
from skyfleet.drills.target import StackTarget, Target

SDK_MODULES = ("kubernetes.client", "kubernetes.config")

DENY_POLICY_NAME = "skyfleet-drill-deny-all"
JSON_PATCH, MERGE_PATCH = "application/json-patch+json", "application/merge-patch+json"


class KubernetesFaultError(RuntimeError):
    """A Kubernetes fault cannot be applied; the message names the missing output."""


def _need(site: SiteOutputs) -> str:
    if not site.namespace:
        raise KubernetesFaultError("onprem stack outputs have no 'namespace'; Kubernetes faults need it")
    return site.namespace


def deployment_name(site: SiteOutputs, deployment: str) -> str:
    names = {"api": site.api_deployment, "worker": site.worker_deployment}
    if deployment not in names:
        raise KubernetesFaultError(f"deployment must be 'api' or 'worker', got {deployment!r}")
    name = names[deployment]
    if not name:
        raise KubernetesFaultError(f"onprem stack outputs have no '{deployment}Deployment'")
    return name


@dataclass(frozen=True)
class _Cluster:
    """The stack's cluster: API groups on one client of its own (the SDK's default client
    keeps the first configuration it was given)."""

    apps: Any
    net: Any
    client: Any
    errors: Any


def _api(site: SiteOutputs) -> _Cluster:
    """The cluster of the stack's ``kubeContext``; the in-cluster config only when the stack
    names no context and there is no kubeconfig (never another cluster than the stack's)."""
    from kubernetes import client, config
    from kubernetes.client import exceptions

    path = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    if site.kube_context or os.path.exists(path):
        try:
            # KUBECONFIG as it is now (the SDK reads its default once, at import).
            api_client = config.new_client_from_config(
                config_file=os.environ.get("KUBECONFIG") or None, context=site.kube_context
            )
        except config.ConfigException as exc:
            raise KubernetesFaultError(
                f"kube context {site.kube_context!r} (the stack's kubeContext) cannot be loaded from "
                f"the kubeconfig ({os.environ.get('KUBECONFIG', '~/.kube/config')}): {exc}"
            ) from None
    else:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        api_client = client.ApiClient(configuration)
    return _Cluster(client.AppsV1Api(api_client), client.NetworkingV1Api(api_client), api_client, exceptions)


def scale(site: SiteOutputs, deployment: str, replicas: int) -> int:
    """Set the deployment's replicas; return the previous count (for the rollback)."""
    apps = _api(site).apps
    name, namespace = deployment_name(site, deployment), _need(site)
    previous = int(apps.read_namespaced_deployment_scale(name, namespace).spec.replicas or 0)
    # The client sends a patch as a JSON patch unless told: this one is a merge patch.
    apps.patch_namespaced_deployment_scale(
        name, namespace, {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH
    )
    return previous


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector selects an object with ``labels`` (an empty one selects all)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels[key] in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def admitting(
    policies: Sequence[Mapping[str, Any]], pod_labels: Mapping[str, str]
) -> list[Mapping[str, Any]]:
    """The NetworkPolicies (manifests) that admit some ingress to pods labelled ``pod_labels``.
    Policies add up: a deny-all beside them blocks nothing they admit, so the fault empties them."""
    found = []
    for policy in policies:
        spec = policy.get("spec") or {}
        types = spec.get("policyTypes") or ["Ingress"]  # unset: Ingress (and Egress with egress rules)
        if "Ingress" in types and spec.get("ingress") and selects(spec.get("podSelector"), pod_labels):
            found.append(policy)
    return found


def deny_all_policy(selector: dict[str, str]) -> dict[str, Any]:
    """A NetworkPolicy that admits no ingress to the selected pods (the manifest, for dry-run)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DENY_POLICY_NAME, "labels": {"app.kubernetes.io/managed-by": "skyfleet-drill"}},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": []},
    }


def _set_ingress(net: Any, namespace: str, name: str, ingress: list[Any]) -> None:
    # A JSON patch: the rules replaced as a whole, whatever patch strategy the list has.
    net.patch_namespaced_network_policy(
        name, namespace, [{"op": "add", "path": "/spec/ingress", "value": ingress}], _content_type=JSON_PATCH
    )


def add_deny_all(site: SiteOutputs, deployment: str = "api") -> dict[str, list[Any]]:
    """Deny all ingress to the deployment's pods: a deny-all policy, and the ingress rules of
    every policy that admits some emptied (saved first). Returns the saved rules by policy."""
    cluster = _api(site)
    name, namespace = deployment_name(site, deployment), _need(site)
    spec = cluster.apps.read_namespaced_deployment(name, namespace).spec
    labels = dict(spec.template.metadata.labels or {})
    net = cluster.net
    listed = net.list_namespaced_network_policy(namespace).items
    manifests = [cluster.client.sanitize_for_serialization(p) for p in listed]
    saved: dict[str, list[Any]] = {}
    try:
        net.create_namespaced_network_policy(
            namespace, deny_all_policy(dict(spec.selector.match_labels or {}))
        )
        for policy in admitting(manifests, labels):
            saved[policy["metadata"]["name"]] = policy["spec"]["ingress"]
            _set_ingress(net, namespace, policy["metadata"]["name"], [])
    except BaseException:  # an error, Ctrl-C or the drill's abort: nothing is left half-applied
        remove_deny_all(site, saved)
        raise
    return saved


def remove_deny_all(site: SiteOutputs, saved: Mapping[str, list[Any]] | None = None) -> None:
    """Give each policy its saved ingress rules back, then delete the deny-all policy."""
    cluster = _api(site)
    namespace = _need(site)
    net = cluster.net
    for policy, ingress in (saved or {}).items():
        _set_ingress(net, namespace, policy, list(ingress))
    try:
        net.delete_namespaced_network_policy(DENY_POLICY_NAME, namespace)
    except cluster.errors.ApiException as exc:
        if exc.status != 404:  # already gone is what we want
            raise


# --- the faults -------------------------------------------------------------------------------


class ScaleToZero(StackFault):
    """Scale a deployment (api or worker) of the on-prem site to 0 replicas."""

    platform = "kubernetes"
    fault, rollback, key = "k8s_scale_to_zero", "k8s_scale_restore", "k8s-scale:{deployment}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        name, ns = "<deployment>", "<namespace>"
        if isinstance(target, StackTarget):
            site = target.site()
            name, ns = deployment_name(site, args.get("deployment", "api")), site.namespace
        return f"kubernetes: scale deployment {ns}/{name} to 0 replicas"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return "kubernetes: scale the deployment back to its previous replicas"

    def apply(self, stack: StackTarget, deployment: str = "api") -> Applied:
        site = stack.site()
        previous = scale(site, deployment, 0)
        return Applied(
            site.site,
            f"deployment {deployment} scaled to 0 (was {previous})",
            {"previous_replicas": previous},
            saved={"replicas": previous},
        )

    def resume(self, stack: StackTarget, saved: dict[str, Any], deployment: str = "api") -> Undo:
        site = stack.site()
        return lambda: scale(site, deployment, int(saved["replicas"]))

    def restore(
        self, stack: StackTarget, deployment: str = "api", replicas: int | None = None
    ) -> Undo | None:
        return None if replicas is None else (lambda: scale(stack.site(), deployment, replicas))


class DenyAll(StackFault):
    """A NetworkPolicy that admits no ingress to a deployment's pods."""

    platform = "kubernetes"
    fault, rollback, key = "k8s_deny_all", "k8s_deny_all_remove", "k8s-deny"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        ns = target.site().namespace if isinstance(target, StackTarget) else "<namespace>"
        return (
            f"kubernetes: create NetworkPolicy {ns}/{DENY_POLICY_NAME} denying all ingress to the "
            f"{args.get('deployment', 'api')} pods, and empty the ingress rules of the policies that "
            "admit some (saved for the rollback)"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return (
            f"kubernetes: the saved ingress rules back, then delete NetworkPolicy {DENY_POLICY_NAME} "
            "(run on its own: the delete only; a pulumi up puts the stack's rules back)"
        )

    def apply(self, stack: StackTarget, deployment: str = "api") -> Applied:
        site = stack.site()
        saved = add_deny_all(site, deployment)
        return Applied(
            site.site,
            f"deny-all NetworkPolicy, ingress emptied on {sorted(saved)}",
            {"policy": DENY_POLICY_NAME, "emptied": sorted(saved)},
            saved={"ingress": saved},
        )

    def resume(self, stack: StackTarget, saved: dict[str, Any], deployment: str = "api") -> Undo:
        site = stack.site()
        return lambda: remove_deny_all(site, dict(saved["ingress"]))

    def restore(self, stack: StackTarget) -> Undo | None:
        return lambda: remove_deny_all(stack.site())


k8s_scale_to_zero, k8s_scale_restore = ScaleToZero.functions()
k8s_deny_all, k8s_deny_all_remove = DenyAll.functions()
