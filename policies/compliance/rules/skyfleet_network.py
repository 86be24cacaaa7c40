"""The network paths the app needs, admitted by its platform's network controls.

Each path is derived from the plan, never from names: the app containers' environment (the cache
and its Sentinels, the queue, the model endpoint, the fleet's other sites), what the platform does
for the containers before they run (an ECS task pulls its images, reads its secrets and writes its
logs through the task's own network interface), and what the load balancer forwards (a target
group's port and health-check port; an Ingress backend's Service port and the container port it
targets). Each path is checked in every direction the platform filters:

- AWS security groups are stateful: a path needs an egress rule on the client's groups and an
  ingress rule on the server's groups (a group reference, or a CIDR covering the other side's
  subnets). The internet (AWS APIs through NAT, the other sites, the model API) needs egress to
  a public CIDR or a prefix list; an AWS API the stack serves through an interface VPC endpoint
  (private DNS on) needs egress to the endpoint's groups and their ingress from the client, and
  S3 through a gateway endpoint egress to its prefix list (or a public CIDR).
- AWS routes: a task that needs the internet runs in subnets whose route table (associated, or
  the VPC's main one, which for a VPC the stack creates holds only the local route unless the
  stack adds to it) has a default IPv4 route to a public NAT gateway that itself sits in a subnet
  routed to an internet gateway, or to an internet gateway when the tasks get public IPs (a need
  a VPC endpoint serves needs no route out); an
  internet-facing load balancer's subnets route to an internet gateway. A default route through
  anything else (a transit gateway, an appliance, a peering) is not judged.
- AWS network ACLs are stateless: a path that crosses a subnet's edge needs the request admitted
  out of the client's subnet and into the server's (and through the NAT gateway's subnet on the
  way to the internet), and the replies back on the client's ephemeral ports (a task's kernel
  range: Linux's 32768-60999 unless the task sets net.ipv4.ip_local_port_range, Windows'
  49152-65535; 1024-65535 for load balancers, NAT gateways and internet clients). Entries are
  read in rule-number order; a subnet no ACL of the stack names keeps its VPC's default ACL,
  which admits everything unless the stack adopts it (DefaultNetworkAcl). Tasks and load
  balancer nodes may take any address of their subnets, so an entry stopping part of such a
  subnet stops them; a host whose address the plan cannot know (a cache node, an endpoint, the
  internet) is stopped only if no address of its subnet, or of the internet, passes.
- Kubernetes NetworkPolicies: egress on the client pods' policies when some policy selects them
  for Egress, ingress on the server pods' policies when some policy selects them for Ingress;
  every name the app resolves needs DNS (UDP and TCP 53) to the cluster DNS in kube-system. The
  ingress controller must be admitted to the pods behind an Ingress's backends; its namespace is
  known per ingress class (config ``ingressControllerNamespaces``), otherwise any source that may
  be outside the app's namespace counts. Which pods a peer selects outside the stack (kube-dns,
  the controller) is not known: only what the plan shows can refuse a path.
- Cloud Run reaches a Memorystore instance's private address only through VPC access (a
  connector or Direct VPC egress) on the instance's authorized network, with the egress setting
  routing that address into the VPC and no egress firewall rule denying it; with all traffic
  routed into the VPC the internet needs Cloud NAT and Google APIs need Private Google Access.

The fleet sites' HTTPS egress on Kubernetes is skyfleet-fleet-egress's; this rule checks it on
ECS and Cloud Run. What a control outside the stack decides (a security group the stack does not
declare, a connector it does not create) is not judged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pulumi_policy import PolicyResource, Severity

from agent_app.config import Settings
from agent_app.contract import Env, PubSubQueue, SqsQueue

from ._net import ALL_PROTOCOLS, PRIVATE_NETWORKS, is_ip, is_private
from ._plan import (
    ECS_TASK,
    K8S_SERVICE,
    Container,
    as_int,
    is_internal_name,
    k8s_object,
    k8s_servers,
    plan_containers,
    text,
)
from ._rule import SKYFLEET, Controls, Rule, StackView, as_list, get_path, norm, num, truthy
from .aws_alb import TARGET_ATTACHMENT, TARGET_GROUP, forwarded
from .aws_network import (
    ECS_SERVICE,
    LISTENERS,
    LOAD_BALANCERS,
    NACL,
    NACL_RULE,
    SG,
    SUBNET,
    AclEntry,
    Permission,
    acl_entries,
    egresses,
    ingresses,
    peer_groups,
    service_groups,
)
from .gcp_network import FIREWALL
from .kubernetes import INGRESS, NAMESPACE, ingress_policies, namespace_of, pod_labels, selects
from .skyfleet_app import MEMORYSTORE, Resolved, app_containers
from .skyfleet_endpoints import (
    CACHE_CLUSTER,
    KIND_LABEL,
    REDIS,
    REPLICATION_GROUP,
    SERVERLESS_CACHE,
    cluster_service,
    dials,
    elasticache_endpoints,
    pod_owners,
    target_port,
)
from .skyfleet_permissions import egress_policies, https_out

VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
VPC = ("aws:ec2/vpc:Vpc",)
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = ("aws:ec2/routeTable:RouteTable",)
ROUTE_ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
MAIN_ROUTE_ASSOCIATION = "aws:ec2/mainRouteTableAssociation:MainRouteTableAssociation"
DEFAULT_ROUTE_TABLE = ("aws:ec2/defaultRouteTable:DefaultRouteTable",)
NAT_GATEWAY = ("aws:ec2/natGateway:NatGateway",)
INTERNET_GATEWAY = ("aws:ec2/internetGateway:InternetGateway",)
DEFAULT_V4 = "0.0.0.0/0"
# Route targets that lead somewhere the plan does not show (an appliance, another network).
OTHER_TARGETS = (
    "transitGatewayId",
    "networkInterfaceId",
    "vpcPeeringConnectionId",
    "vpcEndpointId",
    "carrierGatewayId",
    "coreNetworkArn",
    "localGatewayId",
)
LISTENER_RULES = ("aws:lb/listenerRule:ListenerRule", "aws:alb/listenerRule:ListenerRule")
CACHE_SUBNET_GROUP = "aws:elasticache/subnetGroup:SubnetGroup"
GCP_NETWORK = "gcp:compute/network:Network"
GCP_SUBNET = "gcp:compute/subnetwork:Subnetwork"
CONNECTOR = "gcp:vpcaccess/connector:Connector"
ROUTER = "gcp:compute/router:Router"
ROUTER_NAT = "gcp:compute/routerNat:RouterNat"
INTERNET, ANYWHERE = "internet", "anywhere"
# An AWS API served by a gateway VPC endpoint (S3): reached by its prefix list, no route out.
GATEWAY_ENDPOINT = "gateway endpoint"
# The ingress controller's namespace per ingress class, when the policy config names none.
DEFAULT_CONTROLLERS = {"nginx": "ingress-nginx"}
DNS_PORTS = (("UDP", "dns"), ("TCP", "dns-tcp"))  # CoreDNS's port names
DEFAULT_MODEL_URL = "https://api.openai.com/v1"


def _names(items: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(items))


Why = tuple[str, str]  # what needs a path, and the detail (a host, a port) it needs it for


def _reasons(whys: Sequence[Why]) -> str:
    """ "AGENT_FLEET_SITES (a.example.com, b.example.com); the logs to CloudWatch Logs (...)"."""
    grouped: dict[str, list[str]] = {}
    for what, detail in whys:
        grouped.setdefault(what, [])
        if detail and detail not in grouped[what]:
            grouped[what].append(detail)
    return "; ".join(
        f"{what} ({', '.join(details)})" if details else what for what, details in grouped.items()
    )


def _url(value: str, default_port: int) -> tuple[str, int] | None:
    parts = urlsplit(value)
    try:
        port = parts.port or default_port
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def _others(settings: Settings) -> list[tuple[str, int]]:
    """The other fleet sites' hosts and ports."""
    out = []
    for name, url in settings.fleet:
        found = _url(url, 443)
        if name != settings.site and found is not None:
            out.append(found)
    return out


def _model(settings: Settings) -> tuple[str, int] | None:
    if settings.model_backend != "openai":
        return None
    return _url(settings.model_base_url or DEFAULT_MODEL_URL, 443)


# -- AWS: security groups -------------------------------------------------------------------------


@dataclass
class Side:
    """One end of a path behind security groups."""

    label: str
    resource: PolicyResource
    groups: list[PolicyResource]  # its groups the stack declares
    named: set[str]  # the group ids the plan names
    subnets: list[PolicyResource]  # its subnets (empty: not known)
    # The group ids it names that the stack does not declare: their rules are not known.
    outside: set[str] = field(default_factory=set)

    @property
    def foreign(self) -> bool:
        return bool(self.outside)

    @property
    def blocks(self) -> list[str]:
        """The CIDR blocks of its subnets."""
        return [b for b in (text(s.props.get("cidrBlock")) for s in self.subnets) if b]

    def group_names(self) -> str:
        return _names([f"{g.name!r}" for g in self.groups] + sorted(self.outside))


def _side(
    view: StackView,
    label: str,
    resource: PolicyResource,
    groups: list[PolicyResource],
    named: set[str],
    subnets: list[PolicyResource],
) -> Side:
    known = set().union(*(view.ids_of(g) for g in groups)) if groups else set()
    return Side(label, resource, groups, named, subnets, {n for n in named if n not in known})


def _subnets(view: StackView, values: Any, deps: Sequence[PolicyResource] = ()) -> list[PolicyResource]:
    """The subnets ``values`` names, when the stack declares every one."""
    named = [str(v) for v in as_list(values) if v]
    found = {s.urn: s for s in view.referenced(named, SUBNET)}
    found.update({d.urn: d for d in deps if d.resource_type in SUBNET})
    if not named or len(found) < len(named):
        return []
    return list(found.values())


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None


def _overlaps_private(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(net.version == p.version and net.overlaps(p) for p in PRIVATE_NETWORKS)  # type: ignore[arg-type]  (versions checked first)


def _covers(cidrs: Sequence[str], peer: Side | str) -> bool:
    """The CIDRs reach ``peer``: every one of its subnets (when known; else some private or
    whole-internet range), or, for the internet, some public address."""
    nets = [n for n in (_network(c) for c in cidrs) if n is not None]
    if peer == INTERNET:
        return any(not is_private(str(n)) for n in nets)
    if peer == ANYWHERE:
        return bool(nets)
    assert isinstance(peer, Side)
    blocks = [b for b in (_network(c) for c in peer.blocks) if b is not None]
    if blocks:
        return all(any(b.version == n.version and b.subnet_of(n) for n in nets) for b in blocks)  # type: ignore[arg-type]
    return any(n.prefixlen == 0 or _overlaps_private(n) for n in nets)


def _admitted(view: StackView, perms: list[Permission], side: Side, port: int, peer: Side | str) -> bool:
    """Some permission of ``side``'s groups admits TCP ``port`` to (egress) or from (ingress)
    ``peer``: a group of the peer, a CIDR reaching it, a prefix list (the internet)."""
    urns = {g.urn for g in side.groups}
    mine = [p for p in perms if p.group is not None and p.group.urn in urns and p.admits(port)]
    if peer == ANYWHERE and mine:
        return True
    if peer == INTERNET and any(p.prefix_lists for p in mine):
        return True
    if isinstance(peer, Side):
        peer_urns = {g.urn for g in peer.groups}
        for p in mine:
            for named, group in peer_groups(view, p):
                if (group is not None and group.urn in peer_urns) or named in peer.named:
                    return True
    return _covers([c for p in mine for c in p.cidrs], peer)


def _allowed(view: StackView, perms: list[Permission], side: Side, direction: str) -> str:
    urns = {g.urn for g in side.groups}
    found = []
    for p in perms:
        if p.group is None or p.group.urn not in urns:
            continue
        what = "all traffic" if p.protocol in ALL_PROTOCOLS else f"{p.protocol.upper()} {p.ports()}"
        peers = [*p.cidrs, *(f"prefix list {x}" for x in p.prefix_lists)]
        peers += ["itself" if n == "self" else f"{g.name!r}" if g else n for n, g in peer_groups(view, p)]
        found.append(f"{what} {direction} {', '.join(peers) or 'nothing'}")
    return "; ".join(dict.fromkeys(found)) or "nothing"


@dataclass
class _AwsPath:
    client: Side
    server: Side | str  # a Side, INTERNET, GATEWAY_ENDPOINT or ANYWHERE
    port: int
    needs: list[Why]


def _peer_label(peer: Side | str) -> str:
    if peer == INTERNET:
        return "the internet"
    if peer == GATEWAY_ENDPOINT:
        return "its gateway VPC endpoint"
    if peer == ANYWHERE:
        return "its server"
    assert isinstance(peer, Side)
    return peer.label


def _aws_check(
    view: StackView, path: _AwsPath, out: list[Permission], inb: list[Permission]
) -> Iterator[tuple[str, str]]:
    client, server, port = path.client, path.server, path.port
    why = _reasons(path.needs)
    # A gateway endpoint is reached at the service's public addresses (its prefix list).
    egress_to = INTERNET if server == GATEWAY_ENDPOINT else server
    if client.groups and not client.foreign and not _admitted(view, out, client, port, egress_to):
        if isinstance(server, Side):
            target = f"security group(s) {server.group_names()}" if server.groups else "its subnets"
        else:
            target = "a public address or prefix list" if egress_to == INTERNET else "any destination"
        yield (
            f"{client.label} cannot reach {_peer_label(server)} on TCP {port}, which it needs for {why}: "
            f"no egress rule of its security group(s) {client.group_names()} admits TCP {port} to "
            f"{target} (they allow out: {_allowed(view, out, client, 'to')})",
            client.resource.urn,
        )
    if (
        isinstance(server, Side)
        and server.groups
        and not server.foreign
        and not _admitted(view, inb, server, port, client)
    ):
        source = f"security group(s) {client.group_names()}" if client.groups else "the CIDRs of its subnets"
        yield (
            f"{server.label} does not admit {client.label} on TCP {port}, which {client.label} needs for "
            f"{why}: no ingress rule of its security group(s) {server.group_names()} admits {source} "
            f"(they allow in: {_allowed(view, inb, server, 'from')})",
            server.resource.urn,
        )


def _endpoint(view: StackView, service: str) -> Side | None:
    """The interface VPC endpoint (private DNS on) serving the AWS API ``service``
    (``com.amazonaws.<region>.<name>``), when the stack declares one."""
    for e in view.of_type(VPC_ENDPOINT):
        if text(e.props.get("serviceName")) != service:
            continue
        if norm(e.props.get("vpcEndpointType") or "gateway") != "interface" or not truthy(
            e.props.get("privateDnsEnabled")
        ):
            continue
        groups = view.refers(e, "securityGroupIds", SG)
        named = {str(g) for g in as_list(e.props.get("securityGroupIds")) if g}
        subnets = _subnets(view, e.props.get("subnetIds"), e.property_dependencies.get("subnetIds", []))
        return _side(view, f"VPC endpoint {e.name!r} ({service})", e, groups, named, subnets)
    return None


def _gateway_endpoint(view: StackView, service: str) -> bool:
    return any(
        text(e.props.get("serviceName")) == service
        and norm(e.props.get("vpcEndpointType") or "gateway") == "gateway"
        for e in view.of_type(VPC_ENDPOINT)
    )


def _aws_api(view: StackView, region: str, names: Sequence[str]) -> Iterator[Side | str]:
    """Where the task reaches each AWS API: its interface endpoint, its gateway endpoint, or the
    internet."""
    for name in names:
        service = f"com.amazonaws.{region}.{name}"
        endpoint = _endpoint(view, service)
        if endpoint is not None:
            yield endpoint
        else:
            yield GATEWAY_ENDPOINT if _gateway_endpoint(view, service) else INTERNET


def _arn_region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""


def _execution_needs(view: StackView, c: Container) -> Iterator[tuple[Side | str, int, Why]]:
    """What ECS does for the container through the task's network interface: pull its image,
    read its secrets, ship its logs."""
    image = text(c.raw.get("image"))
    first = image.split("/", 1)[0] if "/" in image else ""
    registry = first if ("." in first or ":" in first or first == "localhost") else "registry-1.docker.io"
    if ".dkr.ecr." in registry and registry.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        region = registry.split(".dkr.ecr.", 1)[1].split(".", 1)[0]
        for where in _aws_api(view, region, ("ecr.api", "ecr.dkr", "s3")):
            yield where, 443, ("the image pull from ECR", registry)
    else:
        yield INTERNET, 443, ("the image pull", registry)
    stores = {
        "secretsmanager": "Secrets Manager",
        "ssm": "SSM Parameter Store",
    }
    for s in as_list(c.raw.get("secrets")):
        ref = text(s.get("valueFrom"))
        store = "secretsmanager" if ":secretsmanager:" in ref else "ssm"
        region = _arn_region(ref) if ref.startswith("arn:") else ""
        if not region:
            continue  # a parameter name: the task's own region, which the plan may not say
        host = f"{store}.{region}.amazonaws.com"
        for where in _aws_api(view, region, (store,)):
            yield where, 443, (f"the secrets from {stores[store]}", host)
    log = c.raw.get("logConfiguration") or {}
    if norm(log.get("logDriver")) == "awslogs":
        region = text(get_path(log, "options", "awslogs-region"))
        if region:
            for where in _aws_api(view, region, ("logs",)):
                yield where, 443, ("the logs to CloudWatch Logs", f"logs.{region}.amazonaws.com")


def _cache_side(view: StackView, host: str) -> Side | None:
    for r, address, _ in elasticache_endpoints(view):
        members = [text(m) for m in as_list(r.props.get("memberClusters"))]
        if host != address and not any(m and host.startswith(f"{m}.") for m in members):
            continue
        groups = view.refers(r, "securityGroupIds", SG)
        named = {str(g) for g in as_list(r.props.get("securityGroupIds")) if g}
        subnets: list[PolicyResource] = []
        for group in view.refers(r, "subnetGroupName", (CACHE_SUBNET_GROUP,)):
            deps = group.property_dependencies.get("subnetIds", [])
            subnets = _subnets(view, group.props.get("subnetIds"), deps)
        if r.props.get("subnetIds"):  # a serverless cache names its subnets itself
            subnets = _subnets(view, r.props.get("subnetIds"), r.property_dependencies.get("subnetIds", []))
        kinds = {
            REPLICATION_GROUP: "replication group",
            CACHE_CLUSTER: "cluster",
            SERVERLESS_CACHE: "serverless",
        }
        kind = kinds.get(r.resource_type, "cache")
        return _side(view, f"ElastiCache {kind} {r.name!r}", r, groups, named, subnets)
    return None


def _loopback(host: str) -> bool:
    """A host on the container's own loopback (a sidecar): no network control is on the way."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _app_needs(view: StackView, c: Container) -> Iterator[tuple[Side | str, int, Why]]:
    """The connections the app in the container makes, from its environment."""
    resolved = Resolved(view, c)
    settings = resolved.settings
    if settings is None:
        return  # skyfleet-app-env reports why
    for dial in dials(settings, Env.REDIS_SENTINELS.value in resolved.unknown):
        if not dial.dialed or _loopback(dial.host):
            continue
        cache = _cache_side(view, dial.host) if dial.kind == REDIS else None
        yield cache or ANYWHERE, dial.port, (dial.var, f"{dial.host}:{dial.port}")
    queue = settings.queue
    if isinstance(queue, SqsQueue):
        if queue.endpoint_url:
            found = _url(queue.endpoint_url, 443)
            if found and not _loopback(found[0]):
                yield ANYWHERE, found[1], (Env.QUEUE_URL.value, f"SQS at {found[0]}:{found[1]}")
        else:
            host = urlsplit(queue.queue_url).hostname or f"sqs.{queue.region}.amazonaws.com"
            for where in _aws_api(view, queue.region, ("sqs",)):
                yield where, 443, (Env.QUEUE_URL.value, f"SQS {host}")
    elif isinstance(queue, PubSubQueue):
        yield INTERNET, 443, (Env.QUEUE_URL.value, "Pub/Sub pubsub.googleapis.com")
    model = _model(settings)
    if model is not None and not _loopback(model[0]):
        host, port = model
        where = ANYWHERE if is_internal_name(host) else INTERNET
        yield where, port, (Env.MODEL_BASE_URL.value, host)
    for host, port in _others(settings):
        yield INTERNET, port, (Env.FLEET_SITES.value, host)


def _lb_subnet_ids(lb: PolicyResource) -> list[Any]:
    """The subnets a load balancer names: its ``subnets`` and its ``subnetMappings``."""
    ids = [*as_list(lb.props.get("subnets"))]
    return ids + [get_path(m, "subnetId") for m in as_list(lb.props.get("subnetMappings"))]


def _lb_side(view: StackView, lb: PolicyResource) -> Side:
    groups = view.refers(lb, "securityGroups", SG)
    named = {str(g) for g in as_list(lb.props.get("securityGroups")) if g}
    subnets = _subnets(view, _lb_subnet_ids(lb), lb.property_dependencies.get("subnets", []))
    return _side(view, f"load balancer {lb.name!r}", lb, groups, named, subnets)


def _forwarding(view: StackView, group: PolicyResource) -> list[PolicyResource]:
    """The load balancers with a listener (or listener rule) forwarding to the target group."""
    ids = view.ids_of(group)
    found: dict[str, PolicyResource] = {}
    for listener in view.of_type(*LISTENERS):
        deps = {d.urn for d in listener.property_dependencies.get("defaultActions", [])}
        if set(forwarded(listener)) & ids or group.urn in deps:
            found.update({lb.urn: lb for lb in view.refers(listener, "loadBalancerArn", LOAD_BALANCERS)})
    for rule in view.of_type(*LISTENER_RULES):
        deps = {d.urn for d in rule.property_dependencies.get("actions", [])}
        if set(forwarded(rule, "actions")) & ids or group.urn in deps:
            for listener in view.refers(rule, "listenerArn", LISTENERS):
                found.update({lb.urn: lb for lb in view.refers(listener, "loadBalancerArn", LOAD_BALANCERS)})
    return list(found.values())


def _service_side(view: StackView, svc: PolicyResource) -> Side:
    groups, named = service_groups(view, svc)
    deps = svc.property_dependencies.get("networkConfiguration", [])
    subnets = _subnets(view, get_path(svc.props, "networkConfiguration", "subnets"), deps)
    return _side(view, f"ECS service {svc.name!r}", svc, groups, named, subnets)


def _task_containers(view: StackView) -> dict[str, list[Container]]:
    """The plan's ECS containers, by the URN of their task definition."""
    tasks: dict[str, list[Container]] = {}
    for c in plan_containers(view, ("ecs",)):
        tasks.setdefault(c.resource.urn, []).append(c)
    return tasks


def _aws_paths(view: StackView, tasks: Mapping[str, list[Container]]) -> Iterator[_AwsPath]:
    apps = {(c.resource.urn, c.name) for c, _ in app_containers(view, ("ecs",))}
    for svc in view.of_type(*ECS_SERVICE):
        client = _service_side(view, svc)
        paths: dict[tuple[str, int], _AwsPath] = {}
        for task in view.refers(svc, "taskDefinition", (ECS_TASK,)):
            if norm(task.props.get("networkMode")) != "awsvpc":
                continue  # bridge or host mode: the instance's groups, not the service's
            for c in tasks.get(task.urn, []):
                needs = list(_execution_needs(view, c))
                if (task.urn, c.name) in apps:
                    needs += list(_app_needs(view, c))
                for server, port, why in needs:
                    key = (server.resource.urn if isinstance(server, Side) else server, port)
                    paths.setdefault(key, _AwsPath(client, server, port, [])).needs.append(why)
        yield from paths.values()
        # The load balancers forwarding to the service's tasks, on the container port and the
        # health-check port.
        for entry in as_list(svc.props.get("loadBalancers")):
            port = as_int(get_path(entry, "containerPort"))
            if port is None:
                continue
            for group in view.referenced(get_path(entry, "targetGroupArn"), TARGET_GROUP):
                forwards = (
                    f"target group {group.name!r} forwarding to container "
                    f"{text(get_path(entry, 'containerName'))!r} port {port}"
                )
                ports = {port: forwards}
                check = as_int(get_path(group.props, "healthCheck", "port"))
                if check is not None and check != port:
                    ports[check] = f"the health checks of target group {group.name!r} on port {check}"
                for lb in _forwarding(view, group):
                    for p, why in ports.items():
                        yield _AwsPath(_lb_side(view, lb), client, p, [(why, "")])
    # A load balancer forwarding to another (an NLB in front of an ALB).
    for attachment in view.of_type(*TARGET_ATTACHMENT):
        targets = view.refers(attachment, "targetId", LOAD_BALANCERS)
        for group in view.refers(attachment, "targetGroupArn", TARGET_GROUP):
            port = as_int(attachment.props.get("port")) or as_int(group.props.get("port"))
            if port is None:
                continue
            for target in targets:
                server = _lb_side(view, target)
                for lb in _forwarding(view, group):
                    why = (
                        f"target group {group.name!r} forwarding to load balancer {target.name!r} port {port}"
                    )
                    yield _AwsPath(_lb_side(view, lb), server, port, [(why, "")])


@dataclass(frozen=True)
class _Table:
    """The route table a subnet uses: a resource of the stack, or the main table of a VPC the
    stack creates (its id known only as the VPC's ``mainRouteTableId``: ``resource`` is then the
    VPC, which a Route on that table depends on)."""

    label: str
    ids: frozenset[str]
    resource: PolicyResource | None
    inline: tuple[Any, ...]


def _subnet_table(view: StackView, subnet: PolicyResource) -> _Table | None:
    """The table ``subnet`` routes by, when the plan shows it (None: not judged)."""
    ids = view.ids_of(subnet)
    for a in view.of_type(ROUTE_ASSOCIATION):
        deps = {d.urn for d in a.property_dependencies.get("subnetId", [])}
        if text(a.props.get("subnetId")) in ids or subnet.urn in deps:
            tables = view.refers(a, "routeTableId", ROUTE_TABLE)
            return _table(view, tables[0]) if tables else None
    for vpc in view.refers(subnet, "vpcId", VPC):
        for m in view.of_type(MAIN_ROUTE_ASSOCIATION):
            if view.ids_of(vpc) & {text(m.props.get("vpcId"))} or vpc.urn in {
                d.urn for d in m.property_dependencies.get("vpcId", [])
            }:
                tables = view.refers(m, "routeTableId", ROUTE_TABLE)
                return _table(view, tables[0]) if tables else None
        main = {text(vpc.props.get("mainRouteTableId")), text(vpc.props.get("defaultRouteTableId"))} - {""}
        for managed in view.of_type(*DEFAULT_ROUTE_TABLE):  # the main table, adopted by the stack
            deps = {d.urn for d in managed.property_dependencies.get("defaultRouteTableId", [])}
            if text(managed.props.get("defaultRouteTableId")) in main or vpc.urn in deps:
                return _table(view, managed)
        return _Table(f"the main route table of VPC {vpc.name!r}", frozenset(main), vpc, ())
    return None


def _table(view: StackView, table: PolicyResource) -> _Table:
    return _Table(
        f"route table {table.name!r}",
        frozenset(view.ids_of(table)),
        table,
        tuple(as_list(table.props.get("routes"))),
    )


def _default_route(view: StackView, table: _Table) -> Mapping[str, Any] | None:
    """The table's default IPv4 route: inline, or a Route resource on it."""
    for route in table.inline:
        if isinstance(route, Mapping) and text(route.get("cidrBlock")) == DEFAULT_V4:
            return route
    for route in view.of_type(ROUTE):
        if text(route.props.get("destinationCidrBlock")) != DEFAULT_V4:
            continue
        deps = {d.urn for d in route.property_dependencies.get("routeTableId", [])}
        if text(route.props.get("routeTableId")) in table.ids or (
            table.resource and table.resource.urn in deps
        ):
            return route.props
    return None


def _to_internet_gateway(view: StackView, route: Mapping[str, Any]) -> bool:
    gateway = text(route.get("gatewayId"))
    return gateway.startswith("igw-") or bool(view.referenced(gateway, INTERNET_GATEWAY))


def _no_internet(view: StackView, subnet: PolicyResource, public_ip: bool) -> str | None:
    """Why a host in ``subnet`` cannot reach the internet, as far as the plan shows (None: it can,
    or the plan does not say)."""
    table = _subnet_table(view, subnet)
    if table is None:
        return None
    route = _default_route(view, table)
    where = f"subnet {subnet.name!r} ({table.label})"
    if route is None:
        return f"{where} has no default route ({DEFAULT_V4})"
    if any(route.get(k) for k in OTHER_TARGETS):
        return None
    if _to_internet_gateway(view, route):
        if public_ip:
            return None
        return (
            f"{where} routes to an internet gateway, but the tasks get no public IP (assignPublicIp is off)"
        )
    nat = text(route.get("natGatewayId"))
    if not nat:
        return None
    for gateway in view.referenced(nat, NAT_GATEWAY):
        if norm(gateway.props.get("connectivityType") or "public") == "private":
            return f"{where} routes to NAT gateway {gateway.name!r}, a private one (no internet)"
        for home in view.refers(gateway, "subnetId", SUBNET):
            missing = _no_gateway_route(view, home)
            if missing is not None:
                return f"{where} routes to NAT gateway {gateway.name!r}, whose {missing}"
    return None


def _no_gateway_route(view: StackView, subnet: PolicyResource) -> str | None:
    """Why ``subnet`` is not routed to an internet gateway (None: it is, or the plan does not say)."""
    table = _subnet_table(view, subnet)
    if table is None:
        return None
    route = _default_route(view, table)
    if route is not None and (_to_internet_gateway(view, route) or any(route.get(k) for k in OTHER_TARGETS)):
        return None
    return f"subnet {subnet.name!r} ({table.label}) has no default route to an internet gateway"


def _aws_routes(view: StackView, paths: list[_AwsPath]) -> Iterator[tuple[str, str | None]]:
    """Each ECS service that needs the internet, and each internet-facing load balancer, sits in
    subnets routed to it."""
    needs: dict[str, list[Why]] = {}
    services: dict[str, PolicyResource] = {}
    for path in paths:
        if path.server == INTERNET and path.client.resource.resource_type in ECS_SERVICE:
            needs.setdefault(path.client.resource.urn, []).extend(path.needs)
            services[path.client.resource.urn] = path.client.resource
    for urn, svc in services.items():
        public_ip = truthy(get_path(svc.props, "networkConfiguration", "assignPublicIp"))
        subnets = view.refers(svc, "networkConfiguration", SUBNET) or view.referenced(
            get_path(svc.props, "networkConfiguration", "subnets"), SUBNET
        )
        problems = [p for s in subnets if (p := _no_internet(view, s, public_ip)) is not None]
        if problems:
            yield (
                f"ECS service {svc.name!r} cannot reach the internet, which it needs for "
                f"{_reasons(needs[urn])}: {'; '.join(problems)}",
                urn,
            )
    for lb in view.of_type(*LOAD_BALANCERS):
        if truthy(lb.props.get("internal")) or norm(lb.props.get("loadBalancerType")) == "gateway":
            continue
        problems = [
            p
            for s in view.referenced(_lb_subnet_ids(lb), SUBNET)
            if (p := _no_gateway_route(view, s)) is not None
        ]
        if problems:
            yield (
                f"internet-facing load balancer {lb.name!r} cannot be reached from the internet: "
                + "; ".join(problems),
                lb.urn,
            )


# -- AWS: network ACLs ----------------------------------------------------------------------------

DEFAULT_NACL = ("aws:ec2/defaultNetworkAcl:DefaultNetworkAcl",)
NACL_ASSOCIATION = ("aws:ec2/networkAclAssociation:NetworkAclAssociation",)
# The ports replies come back to: a task's own connections leave from its kernel's ephemeral
# range (Linux's unless the task sets net.ipv4.ip_local_port_range; Windows' own); load
# balancers and NAT gateways use 1024-65535, the range AWS documents for them and recommends
# for internet clients.
LINUX_EPHEMERAL = (32768, 60999)
WINDOWS_EPHEMERAL = (49152, 65535)
AWS_EPHEMERAL = (1024, 65535)
PORT_RANGE_SYSCTL = "net.ipv4.ip_local_port_range"
AclPeer = ipaddress.IPv4Network | str  # a subnet's block, INTERNET or ANYWHERE
UDP_PROTOCOLS = ("udp", "tcp_udp")


@dataclass(frozen=True)
class _Acl:
    label: str
    entries: tuple[AclEntry, ...]  # in rule-number order


def _subnet_acl(view: StackView, subnet: PolicyResource) -> _Acl | None:
    """The network ACL ``subnet`` is associated with, when the plan shows it. A subnet the stack
    associates with none keeps its VPC's default ACL, which AWS makes admitting everything, unless
    the stack adopts that ACL (DefaultNetworkAcl, whose entries then replace AWS's)."""
    acls = NACL + DEFAULT_NACL
    for association in view.referrers(subnet, NACL_ASSOCIATION, "subnetId"):
        found = view.refers(association, "networkAclId", acls)
        return _acl(view, found[0]) if found else None
    for acl in view.referrers(subnet, acls, "subnetIds"):
        return _acl(view, acl)
    for vpc in view.refers(subnet, "vpcId", VPC):
        # Adopted by the VPC's id in its vpcId or its dependency on the VPC, or by the ACL's id.
        for acl in view.referrers(vpc, DEFAULT_NACL, "defaultNetworkAclId", "vpcId"):
            return _acl(view, acl)
        default = text(vpc.props.get("defaultNetworkAclId"))
        for acl in view.of_type(*DEFAULT_NACL):
            if default and text(acl.props.get("defaultNetworkAclId")) == default:
                return _acl(view, acl)
    return None


def _acl(view: StackView, acl: PolicyResource) -> _Acl:
    entries = [*acl_entries(acl.props)]
    for rule in view.referrers(acl, NACL_RULE, "networkAclId"):
        entries += acl_entries(rule.props, rule=True)
    kind = "default network ACL" if acl.resource_type in DEFAULT_NACL else "network ACL"
    return _Acl(f"{kind} {acl.name!r}", tuple(sorted(entries, key=lambda e: e.number)))


Ranges = list[tuple[int, int]]


def _ports(ranges: Ranges) -> str:
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _cut(ranges: Ranges, low: int, high: int) -> tuple[Ranges, Ranges]:
    """``ranges`` split into the parts inside low..high and the parts outside."""
    inside: Ranges = []
    outside: Ranges = []
    for lo, hi in ranges:
        if hi < low or lo > high:
            outside.append((lo, hi))
            continue
        inside.append((max(lo, low), min(hi, high)))
        if lo < low:
            outside.append((lo, low - 1))
        if hi > high:
            outside.append((high + 1, hi))
    return inside, outside


def _reach(net: ipaddress.IPv4Network, peer: AclPeer) -> str:
    """How much of ``peer`` an entry's block covers: all, some or none of it."""
    if isinstance(peer, ipaddress.IPv4Network):
        return "all" if peer.subnet_of(net) else "some" if peer.overlaps(net) else "none"
    if net.prefixlen == 0:
        return "all"
    return "none" if peer == INTERNET and is_private(str(net)) else "some"


PEERS = "{peers}"  # where a stop's text names the addresses stopped


@dataclass(frozen=True)
class _Stop:
    """What one subnet's ACL stops on a path."""

    subnet: str
    acl: str
    what: str  # "does not let it out", "does not let the replies in", ...
    why: str  # the deciding entry, or the final deny for PEERS
    peer: str


def _acl_stops(
    acl: _Acl, egress: bool, peer: AclPeer, ports: tuple[int, int], every: bool
) -> tuple[str, str] | None:
    """Why ``acl`` stops TCP on some of ``ports`` to (egress) or from ``peer``, and the peer's
    addresses (None: it passes all of them, or the plan cannot say). Entries are read in
    rule-number order, the first that matches deciding. With ``every``, each address of the
    peer's block must pass (hosts that may take any of them: tasks, load balancer nodes);
    otherwise one must (a host at an address the plan does not know: a cache node, an endpoint,
    the internet)."""
    way = "to" if egress else "from"
    where = "a public address" if peer == INTERNET else "it"
    if isinstance(peer, ipaddress.IPv4Network):
        where = str(peer)
    undecided = [ports]
    for e in acl.entries:
        if e.egress != egress or e.protocol not in ("all", "tcp"):
            continue
        hit, rest = _cut(undecided, e.low, e.high)
        net = _network(e.cidr)
        if not hit or not isinstance(net, ipaddress.IPv4Network):
            continue
        reach = _reach(net, peer)
        if reach == "none":
            continue
        if e.allow:
            if reach == "some":
                return None  # part of the peer passes here: not judged
            undecided = rest
            if not undecided:
                return None
        elif reach == "all" or (every and isinstance(peer, ipaddress.IPv4Network)):
            return f"its rule {e.number} denies TCP {_ports(hit)} {way} {e.cidr}", ""  # names its own
    return f"no rule admits TCP {_ports(undecided)} {way} {PEERS} (the ACL's final deny)", where


@dataclass(frozen=True)
class _Hop:
    """A connection as one subnet's ACL sees it."""

    subnet: PolicyResource
    sends: bool  # the subnet's host opens it (else receives it)
    peer: AclPeer
    port: int
    back: tuple[int, int] | None  # the ports its replies return to (None: not known)
    every: bool  # every address of the peer's block must pass


def _acl_hop(view: StackView, hop: _Hop) -> _Stop | None:
    """What the subnet's ACL stops of the connection, or of its replies (None: it passes both)."""
    acl = _subnet_acl(view, hop.subnet)
    if acl is None:
        return None
    name = hop.subnet.name
    going = _acl_stops(acl, hop.sends, hop.peer, (hop.port, hop.port), hop.every)
    if going is not None:
        return _Stop(name, acl.label, f"does not let it {'out' if hop.sends else 'in'}", *going)
    if hop.back is None:
        return None
    coming = _acl_stops(acl, not hop.sends, hop.peer, hop.back, hop.every)
    if coming is not None:
        return _Stop(name, acl.label, f"does not let the replies {'in' if hop.sends else 'out'}", *coming)
    return None


def _address_order(value: str) -> tuple[int, int, int, str]:
    net = _network(value)
    return (0, int(net.network_address), net.prefixlen, value) if net else (1, 0, 0, value)


def _stops_text(stops: Sequence[_Stop]) -> str:
    """ "network ACL 'a' of subnets 'x', 'y' does not let it in: no rule admits TCP 6379 from
    10.0.2.0/24 (the ACL's final deny)": subnets stopped alike, from the same addresses, in one."""
    peers: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    for s in stops:
        peers.setdefault((s.acl, s.what, s.why), {}).setdefault(s.subnet, set()).add(s.peer)
    grouped: dict[tuple[str, str, str, tuple[str, ...]], list[str]] = {}
    for (acl, what, why), by_subnet in peers.items():
        for subnet, addresses in by_subnet.items():
            key = (acl, what, why, tuple(sorted(addresses, key=_address_order)))
            grouped.setdefault(key, []).append(repr(subnet))
    parts = []
    for (acl, what, why, addresses), subnets in grouped.items():
        noun = "subnets" if len(subnets) > 1 else "subnet"
        why = why.replace(PEERS, _names(addresses))
        parts.append(f"{acl} of {noun} {_names(sorted(subnets))} {what}: {why}")
    return "; ".join(parts)


def _nat_subnet(view: StackView, subnet: PolicyResource) -> PolicyResource | None:
    """The subnet of the NAT gateway ``subnet`` routes the internet through, if any."""
    table = _subnet_table(view, subnet)
    route = _default_route(view, table) if table is not None else None
    nat = text(route.get("natGatewayId")) if route is not None else ""
    for gateway in view.referenced(nat, NAT_GATEWAY) if nat else ():
        for home in view.refers(gateway, "subnetId", SUBNET):
            return home
    return None


def _block(subnet: PolicyResource) -> ipaddress.IPv4Network | None:
    net = _network(text(subnet.props.get("cidrBlock")))
    return net if isinstance(net, ipaddress.IPv4Network) else None


def _reply_ports(view: StackView, side: Side, tasks: Mapping[str, list[Container]]) -> tuple[int, int] | None:
    """The ports replies to ``side``'s connections return to (None: not known)."""
    if side.resource.resource_type not in ECS_SERVICE:
        return AWS_EPHEMERAL
    for task in view.refers(side.resource, "taskDefinition", (ECS_TASK,)):
        family = norm(get_path(task.props, "runtimePlatform", "operatingSystemFamily"))
        if family.startswith("windows"):
            return WINDOWS_EPHEMERAL
        for c in tasks.get(task.urn, []):
            for control in as_list(c.raw.get("systemControls")):
                if text(get_path(control, "namespace")) == PORT_RANGE_SYSCTL:
                    bounds = [as_int(v) for v in text(get_path(control, "value")).split()]
                    if len(bounds) == 2 and bounds[0] is not None and bounds[1] is not None:
                        return bounds[0], bounds[1]
                    return None  # a value the plan does not show: not judged
    return LINUX_EPHEMERAL


def _anywhere(side: Side) -> bool:
    """Its hosts may take any address of its subnets (tasks, load balancer nodes)."""
    return side.resource.resource_type in (*ECS_SERVICE, *LOAD_BALANCERS)


def _path_hops(view: StackView, path: _AwsPath, back: tuple[int, int] | None) -> Iterator[tuple[Side, _Hop]]:
    """Each subnet edge ``path`` crosses, by the side whose subnet it is (the client's for its own
    subnets and its NAT gateway's); ``back``: the ports the client's replies return to."""
    client, server, port = path.client, path.server, path.port
    for mine in client.subnets:
        here = _block(mine)
        if here is None:
            continue  # IPv6 only: not judged
        if isinstance(server, Side):
            for theirs in server.subnets:
                there = _block(theirs)
                if theirs.urn == mine.urn or there is None:
                    continue  # an ACL filters only what crosses its subnet's edge
                yield client, _Hop(mine, True, there, port, back, _anywhere(server))
                yield server, _Hop(theirs, False, here, port, back, True)
            continue
        yield client, _Hop(mine, True, ANYWHERE if server == ANYWHERE else INTERNET, port, back, False)
        nat = _nat_subnet(view, mine) if server == INTERNET else None
        if nat is not None and nat.urn != mine.urn:
            yield client, _Hop(nat, False, here, port, back, True)
            yield client, _Hop(nat, True, INTERNET, port, AWS_EPHEMERAL, False)


def _aws_acls(
    view: StackView, paths: list[_AwsPath], tasks: Mapping[str, list[Container]]
) -> Iterator[tuple[str, str | None]]:
    """Each path crosses the network ACLs of the subnets it leaves and enters (stateless: the
    replies need their own entries), and each internet-facing load balancer's TCP listeners are
    reachable through its subnets' ACLs. A load balancer in front of another is not judged: what
    source address the second sees depends on client IP preservation."""
    if not view.has_type(*NACL, *DEFAULT_NACL):
        return  # every subnet keeps its VPC's default ACL, which admits everything
    for path in paths:
        if isinstance(path.server, Side) and path.server.resource.resource_type in LOAD_BALANCERS:
            continue
        found: dict[str, list[_Stop]] = {}
        for side, hop in _path_hops(view, path, _reply_ports(view, path.client, tasks)):
            stop = _acl_hop(view, hop)
            if stop is not None:
                found.setdefault(side.resource.urn, []).append(stop)
        why = _reasons(path.needs)
        client, server = path.client.label, _peer_label(path.server)
        for urn, stops in found.items():
            if urn == path.client.resource.urn:
                head = f"{client} cannot reach {server} on TCP {path.port}, which it needs"
            else:
                head = f"{server} does not admit {client} on TCP {path.port}, which {client} needs"
            yield f"{head} for {why}: {_stops_text(stops)}", urn
    for lb in view.of_type(*LOAD_BALANCERS):
        if truthy(lb.props.get("internal")) or norm(lb.props.get("loadBalancerType")) == "gateway":
            continue
        subnets = view.referenced(_lb_subnet_ids(lb), SUBNET)
        listeners = [
            x
            for x in view.referrers(lb, LISTENERS, "loadBalancerArn")
            if norm(x.props.get("protocol")) not in UDP_PROTOCOLS
        ]
        for port in sorted({p for x in listeners if (p := as_int(x.props.get("port"))) is not None}):
            hops = [_Hop(s, False, INTERNET, port, AWS_EPHEMERAL, False) for s in subnets]
            stops = [stop for hop in hops if (stop := _acl_hop(view, hop)) is not None]
            if stops:
                yield (
                    f"internet-facing load balancer {lb.name!r} cannot be reached from the internet on "
                    f"TCP {port}: {_stops_text(stops)}",
                    lb.urn,
                )


def _aws(view: StackView) -> Iterator[tuple[str, str | None]]:
    if not view.has_type(*ECS_SERVICE):
        return
    out, inb = list(egresses(view)), list(ingresses(view))
    tasks = _task_containers(view)
    paths = list(_aws_paths(view, tasks))
    for path in paths:
        yield from _aws_check(view, path, out, inb)
    yield from _aws_routes(view, paths)
    yield from _aws_acls(view, paths, tasks)


# -- Kubernetes: NetworkPolicies ----------------------------------------------------------------


@dataclass(frozen=True)
class Pods:
    """The pods at one end of a path, as far as the plan knows them."""

    label: str
    namespace: str | None  # None: not known
    labels: Mapping[str, Any]
    labels_complete: bool
    ns_labels: Mapping[str, Any]
    ns_complete: bool


def _may_select(selector: Any, labels: Mapping[str, Any], complete: bool) -> bool:
    """A label selector may select an object with ``labels`` (only the keys known when the
    labels are not complete)."""
    if complete or selector is None:
        return selects(selector, labels)
    known = {
        "matchLabels": {k: v for k, v in (get_path(selector, "matchLabels") or {}).items() if k in labels},
        "matchExpressions": [
            e for e in as_list(get_path(selector, "matchExpressions")) if str(get_path(e, "key")) in labels
        ],
    }
    return selects(known, labels)


def _block_reaches_pods(block: Any) -> bool:
    """An ipBlock may hold pod addresses: some private address is left after its exceptions."""
    net: Any = _network(text(get_path(block, "cidr")))
    if net is None:
        return False
    excepts: list[Any] = [n for n in (_network(str(e)) for e in as_list(get_path(block, "except"))) if n]
    for private in PRIVATE_NETWORKS:
        if private.version != net.version or not net.overlaps(private):
            continue
        left: list[Any] = [net if net.subnet_of(private) else private]
        for e in excepts:
            rest: list[Any] = []
            for r in left:
                if e.version != r.version or not r.overlaps(e):
                    rest.append(r)
                elif e.subnet_of(r) and e != r:
                    rest += list(r.address_exclude(e))
                # else: the exception covers the whole range
            left = rest
        if left:
            return True
    return False


def _peer_selects(peer: Any, policy_ns: str, pods: Pods) -> bool:
    if get_path(peer, "ipBlock") is not None:
        return _block_reaches_pods(get_path(peer, "ipBlock"))
    ns_selector = get_path(peer, "namespaceSelector")
    if ns_selector is None:
        if pods.namespace is not None and pods.namespace != policy_ns:
            return False
    elif pods.namespace is not None:
        labels = {**pods.ns_labels, "kubernetes.io/metadata.name": pods.namespace}
        if not _may_select(ns_selector, labels, pods.ns_complete):
            return False
    pod_selector = get_path(peer, "podSelector")
    return pod_selector is None or _may_select(pod_selector, pods.labels, pods.labels_complete)


def _port_admits(entry: Any, number: int | None, name: str | None, protocol: str) -> bool:
    if str(get_path(entry, "protocol") or "TCP").upper() != protocol:
        return False
    port, end = get_path(entry, "port"), get_path(entry, "endPort")
    if port is None:
        return True
    if isinstance(port, str) and not port.isdigit():
        return name is not None and port == name
    first = as_int(port)
    last = as_int(end) if end is not None else first
    return number is not None and first is not None and last is not None and first <= number <= last


def _policy_admits(
    policies: list[PolicyResource],
    direction: str,
    pods: Pods,
    number: int | None,
    name: str | None,
    protocol: str,
) -> bool:
    key, peers_key = ("egress", "to") if direction == "egress" else ("ingress", "from")
    for policy in policies:
        for rule in as_list(get_path(policy.props, "spec", key)):
            ports, peers = as_list(get_path(rule, "ports")), as_list(get_path(rule, peers_key))
            if (not ports or any(_port_admits(e, number, name, protocol) for e in ports)) and (
                not peers or any(_peer_selects(p, namespace_of(policy), pods) for p in peers)
            ):
                return True
    return False


def _policy_names(policies: list[PolicyResource]) -> str:
    return _names([repr(text(get_path(p.props, "metadata", "name")) or p.name) for p in policies])


def _workload_label(w: PolicyResource) -> str:
    kind = KIND_LABEL.get(w.resource_type, w.resource_type.rsplit(":", 1)[-1])
    return f"{kind} {text(get_path(w.props, 'metadata', 'name')) or w.name!r}"


def _pods_of(view: StackView, w: PolicyResource) -> Pods:
    ns = namespace_of(w)
    declared = [
        n for n in view.of_type(*NAMESPACE) if (text(get_path(n.props, "metadata", "name")) or n.name) == ns
    ]
    ns_labels = dict(get_path(declared[0].props, "metadata", "labels") or {}) if declared else {}
    label = f"the pods of {_workload_label(w)}"
    return Pods(label, ns, dict(pod_labels(w.resource_type, w.props)), True, ns_labels, bool(declared))


def _port_text(number: int | None, name: str | None) -> str:
    if number is not None and name:
        return f"{number} ({name})"
    return str(number) if number is not None else repr(name)


def _k8s_targets(
    view: StackView, host: str, port: int, namespace: str
) -> list[tuple[PolicyResource, int | None, str | None, str]] | None:
    """The server workloads behind an in-cluster host and port, with the container port the
    Service targets and the Service's name (None: no Service of the stack answers the host)."""
    service, pod, _ = cluster_service(view, host, namespace)
    if service is None:
        return None
    entry = next(
        (p for p in as_list(get_path(service.props, "spec", "ports")) if as_int(p.get("port")) == port), None
    )
    if entry is None:
        return []  # skyfleet-dependency-endpoints: the Service serves no such port
    name, ns = text(get_path(service.props, "metadata", "name")), namespace_of(service)
    return _service_targets(view, name, ns, entry, pod)


def _service_targets(
    view: StackView, name: str, ns: str, entry: Mapping[str, Any], pod: str | None = None
) -> list[tuple[PolicyResource, int | None, str | None, str]]:
    workloads = k8s_servers(view, f"{name}.{ns}.svc", None)
    if pod is not None and workloads:
        workloads = pod_owners(view, workloads, name, pod)
    target = entry.get("targetPort")
    target = entry.get("port") if target is None else target
    out = []
    for w in workloads:
        number, port_name, _ = target_port(w, target)
        if number is not None or port_name:
            out.append((w, number, port_name, f"Service {name!r} port {num(entry.get('port'))}"))
    return out


def _k8s_path(
    view: StackView,
    client: PolicyResource,
    client_pods: Pods,
    server: PolicyResource,
    number: int | None,
    name: str | None,
    why: str,
) -> Iterator[tuple[str, str | None]]:
    server_pods = _pods_of(view, server)
    port = _port_text(number, name)
    out = egress_policies(view, client)
    if out and not _policy_admits(out, "egress", server_pods, number, name, "TCP"):
        yield (
            f"{_workload_label(client)} cannot reach {server_pods.label} on TCP {port}, which it needs "
            f"for {why}: no egress rule of the NetworkPolicies selecting its pods ({_policy_names(out)}) "
            "admits it",
            client.urn,
        )
    into = ingress_policies(view, server)
    if into and not _policy_admits(into, "ingress", client_pods, number, name, "TCP"):
        yield (
            f"{_workload_label(server)} does not admit {client_pods.label} on TCP {port}, which they "
            f"need for {why}: no ingress rule of the NetworkPolicies selecting its pods "
            f"({_policy_names(into)}) admits them",
            server.urn,
        )


def _k8s_app(view: StackView) -> Iterator[tuple[str, str | None]]:
    dns = Pods("the cluster DNS (kube-system)", "kube-system", {}, False, {}, False)
    for c, _ in app_containers(view, ("kubernetes",)):
        if c.init:
            continue
        resolved = Resolved(view, c)
        settings = resolved.settings
        if settings is None:
            continue
        w, client, scope = c.resource, _pods_of(view, c.resource), c.scope or "default"
        out = egress_policies(view, w)
        names: list[str] = []
        wanted: dict[tuple[str, int | None, str | None], tuple[PolicyResource, list[Why]]] = {}
        outside: dict[int, list[Why]] = {}
        for dial in dials(settings, Env.REDIS_SENTINELS.value in resolved.unknown):
            if dial.dialed and not is_ip(dial.host):
                names.append(dial.host)
            for server, number, port_name, _ in _k8s_targets(view, dial.host, dial.port, scope) or []:
                key = (server.urn, number, port_name)
                wanted.setdefault(key, (server, []))[1].append((dial.var, f"{dial.host}:{dial.port}"))
        model = _model(settings)
        if model is not None:
            host, port = model
            names += [] if is_ip(host) else [host]
            targets = _k8s_targets(view, host, port, scope) if is_internal_name(host) else None
            for server, number, port_name, _ in targets or []:
                key = (server.urn, number, port_name)
                wanted.setdefault(key, (server, []))[1].append((Env.MODEL_BASE_URL.value, f"{host}:{port}"))
            if targets is None:
                outside.setdefault(port, []).append((Env.MODEL_BASE_URL.value, host))
        for (_, number, port_name), (server, whys) in wanted.items():
            yield from _k8s_path(view, w, client, server, number, port_name, _reasons(whys))
        for port, whys in outside.items():
            if out and not any(
                https_out(rule, port) for p in out for rule in as_list(get_path(p.props, "spec", "egress"))
            ):
                yield (
                    f"{_workload_label(w)} cannot reach {_reasons(whys)} on TCP {port}: no egress rule of "
                    f"the NetworkPolicies selecting its pods ({_policy_names(out)}) admits TCP {port} out of "
                    "the cluster",
                    w.urn,
                )
        names += [host for host, _ in _others(settings) if not is_ip(host)]
        missing = [
            f"{protocol} 53"
            for protocol, port_name in DNS_PORTS
            if names and out and not _policy_admits(out, "egress", dns, 53, port_name, protocol)
        ]
        if missing:
            yield (
                f"{_workload_label(w)} cannot resolve the names it dials ({_names(names)}): no egress "
                f"rule of the NetworkPolicies selecting its pods ({_policy_names(out)}) admits "
                f"{' and '.join(missing)} to the cluster DNS in namespace kube-system",
                w.urn,
            )


def _ingress_class(ingress: PolicyResource) -> str:
    annotations = get_path(ingress.props, "metadata", "annotations") or {}
    return text(get_path(ingress.props, "spec", "ingressClassName")) or text(
        annotations.get("kubernetes.io/ingress.class")
    )


def _k8s_ingress(view: StackView) -> Iterator[tuple[str, str | None]]:
    controllers = view.config.get("ingressControllerNamespaces") or DEFAULT_CONTROLLERS
    for ingress in view.of_type(*INGRESS):
        ns = namespace_of(ingress)
        spec = get_path(ingress.props, "spec") or {}
        cls = _ingress_class(ingress)
        controller_ns = controllers.get(cls) if cls else None
        where = f", namespace {controller_ns!r}" if controller_ns else ""
        controller = Pods(
            f"the ingress controller (class {cls or 'default'!r}{where})",
            str(controller_ns) if controller_ns else None,
            {},
            False,
            {},
            False,
        )
        backends: list[tuple[Any, str]] = []
        if get_path(spec, "defaultBackend", "service") is not None:
            backends.append((get_path(spec, "defaultBackend", "service"), "its default backend"))
        for rule in as_list(spec.get("rules")):
            for path in as_list(get_path(rule, "http", "paths")):
                host = text(get_path(rule, "host")) or "*"
                backends.append(
                    (get_path(path, "backend", "service"), f"{host}{text(get_path(path, 'path'))}")
                )
        routes: dict[tuple[str, str], list[str]] = {}
        for backend, route in backends:
            if backend is None:
                continue
            port = get_path(backend, "port") or {}
            number = as_int(port.get("number"))
            key = (
                text(get_path(backend, "name")),
                str(number) if number is not None else text(port.get("name")),
            )
            routes.setdefault(key, []).append(route)
        for (service_name, port), hosts in routes.items():
            service = k8s_object(view, K8S_SERVICE, service_name, ns)
            if service is None:
                continue
            entry = next(
                (
                    p
                    for p in as_list(get_path(service.props, "spec", "ports"))
                    if str(as_int(p.get("port"))) == port or text(p.get("name")) == port
                ),
                None,
            )
            if entry is None:
                continue
            why = (
                f"Ingress {text(get_path(ingress.props, 'metadata', 'name')) or ingress.name!r} routing "
                f"{_names(hosts)} to Service {service_name!r} port {port}"
            )
            for server, number, port_name, _ in _service_targets(view, service_name, ns, entry):
                into = ingress_policies(view, server)
                if into and not _policy_admits(into, "ingress", controller, number, port_name, "TCP"):
                    yield (
                        f"{_workload_label(server)} does not admit {controller.label} on TCP "
                        f"{_port_text(number, port_name)}, needed for {why}: no ingress rule of the "
                        f"NetworkPolicies selecting its pods ({_policy_names(into)}) admits it",
                        server.urn,
                    )


# -- Cloud Run: VPC access -----------------------------------------------------------------------

GCP_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)


def _last(value: Any) -> str:
    return text(value).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Access:
    """How a Cloud Run service's traffic enters a VPC network."""

    kind: str  # "none", "interfaces", "connector"
    network: str | None  # the network's name (None: not known)
    subnet: PolicyResource | None
    tags: tuple[str, ...]
    tags_known: bool
    egress: str  # "all_traffic" or "private_ranges_only"


def _access(view: StackView, svc: PolicyResource) -> _Access:
    vpc = get_path(svc.props, "template", "vpcAccess") or {}
    egress = norm(vpc.get("egress")) or "private_ranges_only"
    interfaces = as_list(vpc.get("networkInterfaces"))
    if interfaces:
        i = interfaces[0]
        subnet = next(iter(view.referenced(i.get("subnetwork"), (GCP_SUBNET,))), None)
        network = _last(i.get("network")) or (_last(subnet.props.get("network")) if subnet else "") or None
        tags = tuple(str(t) for x in interfaces for t in as_list(get_path(x, "tags")))
        return _Access("interfaces", network, subnet, tags, True, egress)
    if text(vpc.get("connector")):
        connector = next(iter(view.referenced(vpc.get("connector"), (CONNECTOR,))), None)
        network: str | None = None
        subnet = None
        if connector is not None:
            network = _last(connector.props.get("network")) or None
            named = text(get_path(connector.props, "subnet", "name"))
            subnet = next(iter(view.referenced(named, (GCP_SUBNET,))), None) if named else None
            if network is None and subnet is not None:
                network = _last(subnet.props.get("network")) or None
        return _Access("connector", network, subnet, (), False, egress)
    return _Access("none", None, None, (), True, egress)


def _firewall_denies(
    view: StackView, access: _Access, account: str, ip: str | None, port: int
) -> PolicyResource | None:
    """The egress firewall rule that decides TCP ``port`` to ``ip`` (None: the internet) from the
    service's VPC traffic, when it denies it."""
    best: tuple[tuple[int, int], PolicyResource, bool] | None = None
    address = ipaddress.ip_address(ip) if ip else None
    for fw in view.of_type(*FIREWALL):
        p = fw.props
        if (
            _last(p.get("network")) != access.network
            or norm(p.get("direction")) != "egress"
            or truthy(p.get("disabled"))
        ):
            continue
        tags, accounts = (
            [str(t) for t in as_list(p.get("targetTags"))],
            [str(a) for a in as_list(p.get("targetServiceAccounts"))],
        )
        if tags and (not access.tags_known or not set(tags) & set(access.tags)):
            continue
        if accounts and account not in accounts:
            continue
        ranges = [n for n in (_network(str(r)) for r in as_list(p.get("destinationRanges"))) if n is not None]
        if ranges and not any(
            (address is not None and n.version == address.version and address in n)
            or (address is None and n.prefixlen == 0)
            for n in ranges
        ):
            continue
        deny = bool(as_list(p.get("denies")))
        entries = as_list(p.get("denies")) if deny else as_list(p.get("allows"))
        if not any(
            norm(get_path(e, "protocol")) in ("all", "tcp", "6")
            and (
                not as_list(get_path(e, "ports"))
                or any(_in_range(str(x), port) for x in as_list(get_path(e, "ports")))
            )
            for e in entries
        ):
            continue
        key = (as_int(p.get("priority")) or 1000, 0 if deny else 1)
        if best is None or key < best[0]:
            best = (key, fw, deny)
    return best[1] if best is not None and best[2] else None


def _in_range(value: str, port: int) -> bool:
    low, _, high = value.partition("-")
    first, last = as_int(low), as_int(high or low)
    return first is not None and last is not None and first <= port <= last


def _has_nat(view: StackView, network: str) -> bool | None:
    """Whether Cloud NAT serves the network (None: the stack does not declare the network)."""
    if not any(
        (text(n.props.get("name")) or n.name) == network or _last(n.props.get("selfLink")) == network
        for n in view.of_type(GCP_NETWORK)
    ):
        return None
    for nat in view.of_type(ROUTER_NAT):
        routers = view.refers(nat, "router", (ROUTER,))
        if not routers or any(_last(r.props.get("network")) == network for r in routers):
            return True
    return False


def _run(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, _ in app_containers(view, ("cloudrun",)):
        resolved = Resolved(view, c)
        settings = resolved.settings
        if settings is None:
            continue
        svc = c.resource
        access = _access(view, svc)
        account = text(get_path(svc.props, "template", "serviceAccount"))
        label = f"Cloud Run service {svc.name!r}"
        problems: list[str] = []
        for dial in dials(settings, Env.REDIS_SENTINELS.value in resolved.unknown):
            if dial.kind != REDIS or not dial.dialed:
                continue
            for instance in view.of_type(MEMORYSTORE):
                if dial.host not in (
                    text(instance.props.get("host")),
                    text(instance.props.get("readEndpoint")),
                ):
                    continue
                name = text(instance.props.get("name")) or instance.name
                authorized = _last(instance.props.get("authorizedNetwork")) or "default"
                head = (
                    f"{label} cannot reach Memorystore instance {name!r} at {dial.host}:{dial.port} "
                    f"({dial.var})"
                )
                if access.kind == "none":
                    problems.append(
                        f"{head}: the instance is reachable only from VPC network {authorized!r} (its "
                        "authorizedNetwork), and the service has no VPC access (template.vpcAccess: "
                        "Direct VPC egress networkInterfaces or a connector)"
                    )
                    continue
                if access.network is not None and access.network != authorized:
                    problems.append(
                        f"{head}: its VPC access ({access.kind}) is on network {access.network!r}, but the "
                        f"instance is reachable only from {authorized!r} (its authorizedNetwork)"
                    )
                    continue
                routed = is_ip(dial.host) and any(ipaddress.ip_address(dial.host) in n for n in GCP_PRIVATE)
                if access.egress != "all_traffic" and not routed:
                    problems.append(
                        f"{head}: its VPC egress is {access.egress.upper()}, which sends only private "
                        f"ranges (RFC 1918, RFC 6598) into the VPC, and {dial.host} is not in one; set "
                        "egress ALL_TRAFFIC"
                    )
                    continue
                if access.network is not None:
                    denied = _firewall_denies(
                        view, access, account, dial.host if is_ip(dial.host) else None, dial.port
                    )
                    if denied is not None:
                        problems.append(
                            f"{head}: egress firewall rule {denied.name!r} (priority "
                            f"{num(denied.props.get('priority') or 1000)}) denies TCP {dial.port} to it"
                        )
        if access.kind != "none" and access.egress == "all_traffic" and access.network is not None:
            problems += _run_internet(view, settings, access, account, label)
        for problem in problems:
            yield problem, svc.urn


def _run_internet(
    view: StackView, settings: Settings, access: _Access, account: str, label: str
) -> list[str]:
    """With all traffic routed into the VPC, the internet needs Cloud NAT and Google APIs need
    Private Google Access (or NAT); an egress firewall rule may deny either."""
    assert access.network is not None
    internet: list[tuple[str, int, str]] = [(h, p, Env.FLEET_SITES.value) for h, p in _others(settings)]
    model = _model(settings)
    if model is not None and not is_internal_name(model[0]):
        internet.append((model[0], model[1], Env.MODEL_BASE_URL.value))
    google: list[tuple[str, int, str]] = []
    if isinstance(settings.queue, PubSubQueue):
        google.append(("pubsub.googleapis.com", 443, Env.QUEUE_URL.value))
    nat = _has_nat(view, access.network)
    private_access = access.subnet is not None and truthy(access.subnet.props.get("privateIpGoogleAccess"))
    problems = []
    for hosts, needs_nat in ((internet, True), (google, False)):
        by_port: dict[int, list[Why]] = {}
        for host, port, var in hosts:
            by_port.setdefault(port, []).append((var, host))
        for port, whys in by_port.items():
            head = (
                f"{label} cannot reach {_reasons(whys)} on TCP {port}: its VPC egress is ALL_TRAFFIC, so "
                f"that traffic leaves through network {access.network!r}"
            )
            if nat is False and (needs_nat or not private_access):
                where = "" if needs_nat else " and its subnetwork has Private Google Access off"
                problems.append(f"{head}, which has no Cloud NAT (gcp.compute.RouterNat) in the stack{where}")
                continue
            denied = _firewall_denies(view, access, account, None, port)
            if denied is not None:
                problems.append(
                    f"{head}, where egress firewall rule {denied.name!r} (priority "
                    f"{num(denied.props.get('priority') or 1000)}) denies TCP {port} to the internet"
                )
    return problems


# -- the check ---------------------------------------------------------------------------------


def _paths(view: StackView) -> Iterator[tuple[str, str | None]]:
    found = [*_aws(view), *_k8s_app(view), *_k8s_ingress(view), *_run(view)]
    yield from dict.fromkeys(found)


CONFIG = {
    "ingressControllerNamespaces": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "default": DEFAULT_CONTROLLERS,
        "description": "the namespace of the ingress controller's pods, per ingress class",
    }
}

RULES = [
    Rule(
        "skyfleet-network-paths",
        "Every network path the app needs (to its cache, Sentinels, broker, queue, model endpoint and "
        "other sites; ECS image pulls, secrets and logs; from its load balancer or ingress controller) is "
        "admitted by the platform's network controls in each direction they filter: security group egress "
        "and ingress, subnet routes to the internet (NAT or internet gateway), network ACLs (requests and "
        "replies), NetworkPolicy egress (DNS included) and ingress, Cloud Run VPC access to Memorystore.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4", "CP-2"), soc2=("A1.2", "CC6.6")),
        "Add the missing permission named in the finding: an egress rule on the client's security group "
        "and an ingress rule on the server's, referencing each other's group (or egress on TCP 443 to "
        "0.0.0.0/0, or the service's VPC endpoint, for AWS APIs and the other sites); a NetworkPolicy egress "
        "rule to the server's pods and an ingress rule from the client's pods on the container port, and "
        "egress on UDP and TCP 53 to kube-dns in kube-system; a default route (0.0.0.0/0) from the tasks' "
        "subnets to a public NAT gateway in a subnet routed to the internet gateway (and from an "
        "internet-facing load balancer's subnets to the internet gateway); network ACL entries on both "
        "subnets admitting the request's port and the replies' ephemeral ports (1024-65535); Cloud Run "
        "vpc_access on the Memorystore instance's authorized network.",
        stack_check=_paths,
        group=SKYFLEET,
        config=CONFIG,
    ),
]

__all__ = ["RULES"]
