"""The app's network boundary on the cluster: its own namespace (Pod Security ``restricted``
enforced by the API server) and NetworkPolicies that deny everything, then admit exactly the
flows the app needs. Each role's policy names both directions, so a flow works only when the
sender may send and the receiver may receive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from agent_app import contract
from infra.component import Capability
from infra.onprem import kube

# Private ranges an internet-bound flow (the model API) must never reach.
_PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]

Peer = k8s.networking.v1.NetworkPolicyPeerArgs


@dataclass(frozen=True)
class NetworkArgs:
    namespace: str
    labels: Mapping[str, str]
    ingress_namespace: str
    monitoring_namespace: str
    # The api calls an external model endpoint over HTTPS (not the offline model).
    model_egress: bool = False
    # The site belongs to a fleet: its api and worker call the other sites at their regional
    # names over HTTPS (copies of every write, reads, forwarded requests).
    fleet_egress: bool = False
    protect: bool = False


@dataclass(frozen=True)
class _Flow:
    """Traffic on ``ports`` between this role and ``peers`` (pods or namespaces)."""

    peers: Sequence[Peer]
    ports: Sequence[int]
    protocols: Sequence[str] = field(default=("TCP",))


def _pods(*roles: str) -> list[Peer]:
    return [Peer(pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=kube.selector(r))) for r in roles]


def _namespace(name: str) -> Peer:
    return Peer(
        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": name})
    )


def _ports(flow: _Flow) -> list[k8s.networking.v1.NetworkPolicyPortArgs]:
    return [
        k8s.networking.v1.NetworkPolicyPortArgs(port=p, protocol=proto)
        for p in flow.ports
        for proto in flow.protocols
    ]


class Network(Capability):
    """Namespace + default-deny NetworkPolicies + one allow policy per role."""

    TARGET = "onprem"

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        ns = args.namespace

        # The app's namespace; the API server refuses any pod that is not "restricted".
        self.namespace = k8s.core.v1.Namespace(
            "namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ns,
                labels={
                    **args.labels,
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            opts=self.child(protect=args.protect),
        )
        self.place = kube.Placement(
            namespace=ns,
            namespace_ref=self.namespace.metadata.apply(lambda m: m.name or ns),
            labels=dict(args.labels),
        )

        # Default deny: no pod in the namespace sends or receives anything not allowed below.
        self._policy("default-deny", k8s.meta.v1.LabelSelectorArgs(), [], [])

        # DNS: every pod may resolve names through the cluster DNS, and nothing else by default.
        dns = _Flow(
            peers=[
                Peer(
                    namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                        match_labels={"kubernetes.io/metadata.name": "kube-system"}
                    ),
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"k8s-app": "kube-dns"}),
                )
            ],
            ports=[53],
            protocols=("UDP", "TCP"),
        )
        self._policy("allow-dns", k8s.meta.v1.LabelSelectorArgs(), [], [dns])

        app_port = contract.DEFAULT_PORT
        redis_ports = [kube.REDIS_PORT, kube.REDIS_SENTINEL_PORT]
        to_redis = _Flow(_pods(kube.REDIS), redis_ports)
        to_nats = _Flow(_pods(kube.NATS), [kube.NATS_CLIENT_PORT])
        api_egress = [to_redis, to_nats]
        if args.model_egress or args.fleet_egress:
            # The model API, and the fleet's other sites, on the internet: HTTPS only, never into
            # private ranges. Without it a fleet site can count only itself, so no write of
            # its ever reaches a majority.
            internet = Peer(ip_block=k8s.networking.v1.IPBlockArgs(cidr="0.0.0.0/0", except_=_PRIVATE))
            api_egress.append(_Flow([internet], [443]))

        # api: from the ingress controller (traffic) and Prometheus (/metrics); to its stores.
        self._policy(
            kube.API,
            None,
            [_Flow([_namespace(args.ingress_namespace), _namespace(args.monitoring_namespace)], [app_port])],
            api_egress,
        )
        # worker: only Prometheus in (probes come from the kubelet); out to its stores (and
        # the model, like the api).
        self._policy(
            kube.WORKER, None, [_Flow([_namespace(args.monitoring_namespace)], [app_port])], api_egress
        )
        # redis: clients and peers in (Redis and Sentinel); out to peers (replication, votes).
        self._policy(
            kube.REDIS,
            None,
            [_Flow(_pods(kube.API, kube.WORKER, kube.REDIS), redis_ports)],
            [_Flow(_pods(kube.REDIS), redis_ports)],
        )
        # nats: clients (app, stream job) in; cluster routes both ways; metrics to Prometheus.
        self._policy(
            kube.NATS,
            None,
            [
                _Flow(_pods(kube.API, kube.WORKER, kube.STREAMS_JOB), [kube.NATS_CLIENT_PORT]),
                _Flow(_pods(kube.NATS), [kube.NATS_CLUSTER_PORT]),
                _Flow([_namespace(args.monitoring_namespace)], [kube.NATS_METRICS_PORT]),
            ],
            [_Flow(_pods(kube.NATS), [kube.NATS_CLUSTER_PORT])],
        )
        # The stream-setup job: only to NATS.
        self._policy(kube.STREAMS_JOB, None, [], [to_nats])

        self.register_outputs({"namespace": self.place.namespace_ref})

    def _policy(
        self,
        name: str,
        pods: k8s.meta.v1.LabelSelectorArgs | None,
        ingress: Sequence[_Flow],
        egress: Sequence[_Flow],
    ) -> k8s.networking.v1.NetworkPolicy:
        """A policy for ``pods`` (default: the role called ``name``); both directions are
        listed as policy types so an empty list denies."""
        selector = (
            pods if pods is not None else k8s.meta.v1.LabelSelectorArgs(match_labels=kube.selector(name))
        )
        return k8s.networking.v1.NetworkPolicy(
            f"netpol-{name}",
            metadata=kube.meta(name if pods is not None else f"allow-{name}", self.place),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=selector,
                policy_types=["Ingress", "Egress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=list(f.peers), ports=_ports(f))
                    for f in ingress
                ],
                egress=[
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=list(f.peers), ports=_ports(f))
                    for f in egress
                ],
            ),
            opts=self.child(),
        )
