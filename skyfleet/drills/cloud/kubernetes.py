"""Kubernetes faults on the on-prem site: a deployment scaled to 0, a deny-all NetworkPolicy.

The client uses the stack's ``kubeContext`` from the local kubeconfig (or the in-cluster
config when there is no kubeconfig).
"""

from __future__ import annotations

from typing import Any

from infra.outputs import SiteOutputs

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
    from kubernetes import client, config

    try:
        config.load_kube_config(context=site.kube_context)
    except config.ConfigException:
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
