"""The site's front door on the cluster: an Ingress on the cluster's ingress controller,
HTTPS only, with its certificate issued by cert-manager (the ingress-shim annotation) for every
name the site answers to, and the api Service as its only backend.

HSTS and the TLS protocols are not Ingress settings in ingress-nginx: they are keys of the
controller's ConfigMap (``hsts``, ``hsts-max-age``, ``ssl-protocols``), a prerequisite of the
cluster (see the header of stacks/Pulumi.onprem-prod.yaml).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from agent_app import contract
from infra.component import Capability
from infra.onprem import kube


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


@dataclass(frozen=True)
class LoadBalancerArgs:
    place: kube.Placement
    hosts: Sequence[str]  # the site's own name first, then its aliases (the edge's global name)
    ingress_class: str
    cert_issuer: str
    service: pulumi.Input[str]


class LoadBalancer(Capability):
    """Ingress with TLS for the site's host names; ``endpoint`` is its HTTPS URL."""

    TARGET = "onprem"

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.tls_secret = f"{kube.API}-ingress-tls"
        annotations = {
            # cert-manager issues (and renews) the TLS Secret for the host below.
            "cert-manager.io/cluster-issuer": args.cert_issuer,
            # ingress-nginx: HTTP only redirects to HTTPS. (HSTS and the TLS protocols come from
            # the controller's ConfigMap: ingress-nginx has no Ingress annotation for them.)
            "nginx.ingress.kubernetes.io/ssl-redirect": "true",
            "nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
            "nginx.ingress.kubernetes.io/proxy-body-size": "1m",
        }
        to_api = k8s.networking.v1.HTTPIngressRuleValueArgs(
            paths=[
                k8s.networking.v1.HTTPIngressPathArgs(
                    path="/",
                    path_type="Prefix",
                    backend=k8s.networking.v1.IngressBackendArgs(
                        service=k8s.networking.v1.IngressServiceBackendArgs(
                            name=args.service,
                            port=k8s.networking.v1.ServiceBackendPortArgs(number=contract.DEFAULT_PORT),
                        )
                    ),
                )
            ]
        )
        # The public entry point: one certificate for every name, every path of each to the api.
        self.ingress = k8s.networking.v1.Ingress(
            kube.API,
            metadata=kube.meta(kube.API, args.place, kube.API, annotations=annotations),
            spec=k8s.networking.v1.IngressSpecArgs(
                ingress_class_name=args.ingress_class,
                tls=[k8s.networking.v1.IngressTLSArgs(hosts=list(args.hosts), secret_name=self.tls_secret)],
                rules=[k8s.networking.v1.IngressRuleArgs(host=host, http=to_api) for host in args.hosts],
            ),
            opts=self.child(),
        )
        self.endpoint = f"https://{args.hosts[0]}"
        # The controller's address (what the site's DNS name must point at).
        self.address = self.ingress.status.apply(
            lambda s: (
                next((i.hostname or i.ip or "" for i in (s.load_balancer.ingress or [])), "")
                if s and s.load_balancer
                else ""
            )
        )
        # Its IPv4 addresses (a multivalue edge answers with them; a controller that publishes
        # only a host name, as a cloud load balancer in front of it may, has none).
        self.addresses = self.ingress.status.apply(
            lambda s: [
                i.ip
                for i in ((s.load_balancer.ingress or []) if s and s.load_balancer else [])
                if i.ip and _ipv4(i.ip)
            ]
        )
        self.register_outputs(
            {"endpoint": self.endpoint, "address": self.address, "addresses": self.addresses}
        )
