"""Kubernetes faults on the on-prem site: a deployment scaled to 0, a deny-all NetworkPolicy.

The client uses the stack's ``kubeContext`` from the local kubeconfig; one that is not there is
an error naming it. The in-cluster config is used only when the stack names no context and there
is no kubeconfig.
"""

from __future__ import annotations

import os
from typing import Any

from infra.outputs import SiteOutputs
from skyfleet.drills.actions.registry import Applied, StackFault, Undo
from skyfleet.drills.target import StackTarget, Target

SDK_MODULES = ("kubernetes.client", "kubernetes.config")

DENY_POLICY_NAME = "skyfleet-drill-deny-all"


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


def _api(site: SiteOutputs) -> Any:
    """The client on the stack's ``kubeContext``; the in-cluster config only when the stack names
    no context and there is no kubeconfig (never another cluster than the stack's)."""
    from kubernetes import client, config

    path = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    if site.kube_context or os.path.exists(path):
        try:
            config.load_kube_config(context=site.kube_context)
        except config.ConfigException as exc:
            raise KubernetesFaultError(
                f"kube context {site.kube_context!r} (the stack's kubeContext) cannot be loaded from "
                f"the kubeconfig ({os.environ.get('KUBECONFIG', '~/.kube/config')}): {exc}"
            ) from None
    else:
        config.load_incluster_config()
    return client


def scale(site: SiteOutputs, deployment: str, replicas: int) -> int:
    """Set the deployment's replicas; return the previous count (for the rollback)."""
    client = _api(site)
    apps = client.AppsV1Api()
    name, namespace = deployment_name(site, deployment), _need(site)
    previous = int(apps.read_namespaced_deployment_scale(name, namespace).spec.replicas or 0)
    apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})
    return previous


def deny_all_policy(selector: dict[str, str]) -> dict[str, Any]:
    """A NetworkPolicy that admits no ingress to the selected pods (the manifest, for dry-run)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DENY_POLICY_NAME, "labels": {"app.kubernetes.io/managed-by": "skyfleet-drill"}},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": []},
    }


def add_deny_all(site: SiteOutputs, deployment: str = "api") -> dict[str, Any]:
    client = _api(site)
    name, namespace = deployment_name(site, deployment), _need(site)
    selector = client.AppsV1Api().read_namespaced_deployment(name, namespace).spec.selector.match_labels
    body = deny_all_policy(dict(selector or {}))
    client.NetworkingV1Api().create_namespaced_network_policy(namespace, body)
    return body


def remove_deny_all(site: SiteOutputs) -> None:
    client = _api(site)
    try:
        client.NetworkingV1Api().delete_namespaced_network_policy(DENY_POLICY_NAME, _need(site))
    except client.exceptions.ApiException as exc:
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
            lambda: scale(site, deployment, previous),
        )

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
            f"{args.get('deployment', 'api')} pods"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"kubernetes: delete NetworkPolicy {DENY_POLICY_NAME}"

    def apply(self, stack: StackTarget, deployment: str = "api") -> Applied:
        site = stack.site()
        policy = add_deny_all(site, deployment)
        return Applied(
            site.site,
            "deny-all NetworkPolicy",
            {"policy": policy["metadata"]["name"]},
            lambda: remove_deny_all(site),
        )

    def restore(self, stack: StackTarget) -> Undo | None:
        return lambda: remove_deny_all(stack.site())


k8s_scale_to_zero, k8s_scale_restore = ScaleToZero.functions()
k8s_deny_all, k8s_deny_all_remove = DenyAll.functions()
