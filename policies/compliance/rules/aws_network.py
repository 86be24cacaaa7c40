"""Security groups, network ACLs, the default security group and VPC flow logs.

A security group's rules may be inline (`ingress`, `egress`) or separate resources
(SecurityGroupRule, vpc.SecurityGroupIngressRule / vpc.SecurityGroupEgressRule): the readers
below read every form, and follow references (a load balancer's `securityGroups`, a listener's
load balancer) through the stack's graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._net import ALL_PROTOCOLS, admin_ports_in, describe, is_private, is_world
from ._plan import as_int
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, truthy

SG = ("aws:ec2/securityGroup:SecurityGroup",)
SG_RULE = ("aws:ec2/securityGroupRule:SecurityGroupRule",)
SG_INGRESS = ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",)
SG_EGRESS = ("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",)
DEFAULT_SG = ("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",)
LOAD_BALANCERS = (
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:alb/loadBalancer:LoadBalancer",
    "aws:elb/loadBalancer:LoadBalancer",
)
LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
CACHE = ("aws:elasticache/replicationGroup:ReplicationGroup",)
ECS_SERVICE = ("aws:ecs/service:Service",)
NACL = ("aws:ec2/networkAcl:NetworkAcl",)
NACL_RULE = ("aws:ec2/networkAclRule:NetworkAclRule",)
VPC = ("aws:ec2/vpc:Vpc",)
FLOW_LOG = ("aws:ec2/flowLog:FlowLog",)
SUBNET = ("aws:ec2/subnet:Subnet",)
EIP = ("aws:ec2/eip:Eip",)
WEB_PORTS = frozenset({80, 443})


@dataclass(frozen=True)
class Permission:
    """One ingress or egress permission of a security group, whichever resource type declared
    it. Its peers (the sources of an ingress, the destinations of an egress) are CIDRs, security
    groups (`source_groups`: the ids the plan names), managed prefix lists, or the group itself."""

    group: PolicyResource | None
    urn: str
    from_port: int
    to_port: int
    cidrs: tuple[str, ...]
    source_groups: tuple[str, ...]
    protocol: str = "tcp"
    prefix_lists: tuple[str, ...] = ()
    self_ref: bool = False

    @property
    def world(self) -> bool:
        return any(is_world(c) for c in self.cidrs)

    @property
    def every_port(self) -> bool:
        return self.protocol in ALL_PROTOCOLS or (self.from_port <= 0 and self.to_port in (0, -1, 65535))

    def ports(self) -> str:
        return "all ports" if self.every_port else describe(self.from_port, self.to_port)

    def admin_ports(self) -> list[str]:
        if self.every_port:
            return ["all ports"]
        if self.protocol in ("icmp", "1", "icmpv6", "58"):
            return []
        return admin_ports_in(self.from_port, self.to_port)

    def admits(self, port: int, protocol: str = "tcp") -> bool:
        """It covers ``port`` of ``protocol`` (all protocols cover every port)."""
        if self.protocol in ALL_PROTOCOLS:
            return True
        numbers = {"tcp": "6", "udp": "17"}
        if self.protocol not in (protocol, numbers.get(protocol)):
            return False
        return self.from_port <= port <= self.to_port


Ingress = Permission  # the name the ingress rules below use


def _port(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float) else default


def _cidr_ingress(group: PolicyResource | None, urn: str, rule: object, sources: str) -> Ingress:
    """A permission written with cidrBlocks/ipv6CidrBlocks: a group's inline rule (peers in
    `securityGroups`) or a SecurityGroupRule (`sourceSecurityGroupId`, which names the destination
    of an egress rule)."""
    cidrs = as_list(get_path(rule, "cidrBlocks")) + as_list(get_path(rule, "ipv6CidrBlocks"))
    return Permission(
        group,
        urn,
        _port(get_path(rule, "fromPort"), 0),
        _port(get_path(rule, "toPort"), 0),
        tuple(str(c) for c in cidrs),
        tuple(str(g) for g in as_list(get_path(rule, sources))),
        norm(get_path(rule, "protocol")),
        tuple(str(p) for p in as_list(get_path(rule, "prefixListIds"))),
        truthy(get_path(rule, "self")),
    )


def _vpc_ingress(group: PolicyResource | None, urn: str, props: object) -> Ingress:
    """A vpc.SecurityGroupIngressRule or vpc.SecurityGroupEgressRule (one peer each)."""
    cidrs = (get_path(props, "cidrIpv4"), get_path(props, "cidrIpv6"))
    return Permission(
        group,
        urn,
        _port(get_path(props, "fromPort"), 0),
        _port(get_path(props, "toPort"), 0),
        tuple(str(c) for c in cidrs if c),
        tuple(str(g) for g in as_list(get_path(props, "referencedSecurityGroupId"))),
        norm(get_path(props, "ipProtocol")),
        tuple(str(p) for p in as_list(get_path(props, "prefixListId"))),
    )


def ingresses(view: StackView) -> Iterator[Ingress]:
    for sg in view.of_type(*SG):
        for rule in as_list(sg.props.get("ingress")):
            yield _cidr_ingress(sg, sg.urn, rule, "securityGroups")
    for r in view.of_type(*SG_RULE):
        if norm(r.props.get("type")) != "ingress":
            continue
        group = next(iter(view.refers(r, "securityGroupId", SG)), None)
        yield _cidr_ingress(group, r.urn, r.props, "sourceSecurityGroupId")
    for r in view.of_type(*SG_INGRESS):
        group = next(iter(view.refers(r, "securityGroupId", SG)), None)
        yield _vpc_ingress(group, r.urn, r.props)


def egresses(view: StackView) -> Iterator[Permission]:
    """Every egress permission of the stack (`source_groups`: the destination groups)."""
    for sg in view.of_type(*SG):
        for rule in as_list(sg.props.get("egress")):
            yield _cidr_ingress(sg, sg.urn, rule, "securityGroups")
    for r in view.of_type(*SG_RULE):
        if norm(r.props.get("type")) != "egress":
            continue
        group = next(iter(view.refers(r, "securityGroupId", SG)), None)
        yield _cidr_ingress(group, r.urn, r.props, "sourceSecurityGroupId")
    for r in view.of_type(*SG_EGRESS):
        group = next(iter(view.refers(r, "securityGroupId", SG)), None)
        yield _vpc_ingress(group, r.urn, r.props)


def _any_world(*values: object) -> bool:
    return any(is_world(c) for v in values for c in as_list(v))


def _subject_ingresses(s: Subject) -> Iterator[Ingress]:
    """The resource's ingress rules from the internet (the CIDRs are read first, so a preview's
    unknown group ids elsewhere in the rule do not stop the check)."""
    if s.type in SG:
        for rule in as_list(s.props.get("ingress")):
            if _any_world(get_path(rule, "cidrBlocks"), get_path(rule, "ipv6CidrBlocks")):
                yield _cidr_ingress(None, s.urn, rule, "securityGroups")
    elif s.type in SG_RULE:
        if norm(s.props.get("type")) == "ingress" and _any_world(
            s.props.get("cidrBlocks"), s.props.get("ipv6CidrBlocks")
        ):
            yield _cidr_ingress(None, s.urn, s.props, "sourceSecurityGroupId")
    elif _any_world(s.props.get("cidrIpv4"), s.props.get("cidrIpv6")):
        yield _vpc_ingress(None, s.urn, s.props)


def _public_admin(s: Subject) -> Iterator[str]:
    for ing in _subject_ingresses(s):
        exposed = ing.admin_ports()
        if exposed:
            world = ", ".join(c for c in ing.cidrs if is_world(c))
            yield f"ingress from {world} opens {', '.join(exposed)}"


def _load_balancer_ports(view: StackView) -> dict[str, set[int]]:
    """Security group URN -> the ports its load balancers serve: their listeners', and 80/443."""
    served: dict[str, set[int]] = {}
    for listener in view.of_type(*LISTENERS):
        port = listener.props.get("port")
        for lb in view.refers(listener, "loadBalancerArn", LOAD_BALANCERS):
            if isinstance(port, int | float):
                served.setdefault(lb.urn, set()).add(int(port))
    out: dict[str, set[int]] = {}
    for lb in view.of_type(*LOAD_BALANCERS):
        ports = served.get(lb.urn, set()) | {
            int(p)
            for entry in as_list(lb.props.get("listeners"))
            if isinstance(p := get_path(entry, "lbPort"), int | float)
        }
        for group in view.refers(lb, "securityGroups", SG):
            out.setdefault(group.urn, set()).update(ports | WEB_PORTS)
    return out


def _alb_only_public(view: StackView) -> Iterator[tuple[str, str | None]]:
    lb_ports = _load_balancer_ports(view)
    for ing in ingresses(view):
        if not ing.world:
            continue
        if ing.group is None or ing.group.urn not in lb_ports:
            web_only = not ing.every_port and WEB_PORTS.issuperset(range(ing.from_port, ing.to_port + 1))
            if web_only and not view.skyfleet:
                continue  # outside Skyfleet's design, a web server may serve 80/443 itself
            yield (
                f"ingress from the internet on {ing.ports()} to a security group no load balancer uses",
                ing.urn,
            )
            continue
        allowed = lb_ports[ing.group.urn]
        if ing.every_port or not (ing.from_port == ing.to_port and ing.from_port in allowed):
            yield (
                f"load balancer security group admits the internet on {ing.ports()}; its listeners serve "
                f"{', '.join(str(p) for p in sorted(allowed))}",
                ing.urn,
            )


def service_groups(view: StackView, svc: PolicyResource) -> tuple[list[PolicyResource], set[str]]:
    """The security groups one ECS service runs in: those the stack declares, and the ids the
    plan names (a group the stack does not declare is known by its id only)."""
    named = as_list(get_path(svc.props, "networkConfiguration", "securityGroups"))
    found = {g.urn: g for g in view.referenced(named, SG)}
    for dep in svc.property_dependencies.get("networkConfiguration", []):
        if dep.resource_type in SG:
            found.setdefault(dep.urn, dep)
    return list(found.values()), {str(g) for g in named if g}


def _service_groups(view: StackView) -> tuple[set[str], set[str]]:
    """The security groups the ECS services run in: their URNs and the ids the plan names."""
    urns: set[str] = set()
    ids: set[str] = set()
    for svc in view.of_type(*ECS_SERVICE):
        groups, named = service_groups(view, svc)
        ids |= named
        urns |= {g.urn for g in groups}
    return urns, ids


def peer_groups(view: StackView, perm: Permission) -> list[tuple[str, PolicyResource | None]]:
    """Each security group a permission names as its peer (the source of an ingress, the
    destination of an egress): (the id the plan names, the group in the stack)."""
    rule = view.by_urn.get(perm.urn)
    key = {
        SG_RULE[0]: "sourceSecurityGroupId",
        SG_INGRESS[0]: "referencedSecurityGroupId",
        SG_EGRESS[0]: "referencedSecurityGroupId",
    }.get(rule.resource_type if rule is not None else "")
    found: list[tuple[str, PolicyResource | None]]
    if rule is not None and key is not None:
        # A separate rule names one peer; its property dependency holds when the id is unknown.
        groups = view.refers(rule, key, SG)
        found = [(perm.source_groups[0] if perm.source_groups else "", g) for g in groups] or [
            (g, None) for g in perm.source_groups
        ]
    else:
        found = [(g, next(iter(view.referenced(g, SG)), None)) for g in perm.source_groups]
    if perm.self_ref and perm.group is not None:
        found.append(("self", perm.group))
    return found


def _foreign_sources(
    view: StackView, ing: Ingress, services: tuple[set[str], set[str]], lb_groups: set[str]
) -> Iterator[str]:
    """Source groups that are not an ECS service's. A stack whose ECS services name no group
    (none in the stack, or all in the VPC's default) cannot show the service's group: then only a
    load balancer's group, which faces the clients, is refused."""
    urns, ids = services
    for named, group in peer_groups(view, ing):
        if named == "self":
            continue  # the cache's own members (replication) are not a client
        label = repr(group.name) if group is not None else named
        if urns or ids:
            if not ((group is not None and group.urn in urns) or named in ids):
                yield f"cache security group admits security group {label}, which no ECS service runs in"
        elif group is not None and group.urn in lb_groups:
            yield f"cache security group admits security group {label}, a load balancer's"


def _cache_only_service(view: StackView) -> Iterator[tuple[str, str | None]]:
    all_ingress = list(ingresses(view))
    services = _service_groups(view) if view.has_type(*CACHE) else (set(), set())
    lb_groups = set(_load_balancer_ports(view)) if view.has_type(*CACHE) else set()
    for cache in view.of_type(*CACHE):
        groups = {g.urn for g in view.refers(cache, "securityGroupIds", SG)}
        if not groups:
            yield "cache has no dedicated security group (securityGroupIds)", cache.urn
            continue
        port = _port(cache.props.get("port"), 6379)
        for ing in all_ingress:
            if ing.group is None or ing.group.urn not in groups:
                continue
            public = [c for c in ing.cidrs if not is_private(c)]
            if public or (ing.cidrs and view.skyfleet):
                yield (
                    f"cache security group admits CIDR {', '.join(public or ing.cidrs)}; admit the service's "
                    "security group only",
                    ing.urn,
                )
            elif not ing.cidrs and not ing.source_groups:
                yield "cache ingress names no source security group", ing.urn
            elif not (ing.from_port == ing.to_port == port):
                yield f"cache ingress opens {ing.ports()}; only the cache port {port} is needed", ing.urn
            for problem in _foreign_sources(view, ing, services, lb_groups):
                yield f"{problem}; admit the service's security group only", ing.urn


def _default_sg(s: Subject) -> Iterator[str]:
    rules = [("ingress", r) for r in as_list(s.props.get("ingress"))]
    rules += [("egress", r) for r in as_list(s.props.get("egress"))]
    if rules:
        kinds = sorted({k for k, _ in rules})
        yield (
            f"the default security group keeps {len(rules)} {'/'.join(kinds)} rule(s); it must allow nothing"
        )


def _number(value: object, default: int) -> int:
    found = as_int(value)
    return default if found is None else found


# Network ACL protocol numbers as the ACL rules may write them.
ACL_PROTOCOLS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}


@dataclass(frozen=True)
class AclEntry:
    """One entry of a network ACL (an inline ``ingress``/``egress`` entry or a NetworkAclRule), for
    one CIDR block. ``protocol`` is ``all``, ``tcp``, ``udp``, ``icmp`` or as written; an entry for
    every protocol covers every port."""

    number: int
    egress: bool
    allow: bool
    protocol: str
    low: int
    high: int
    cidr: str

    @property
    def action(self) -> str:
        return "allow" if self.allow else "deny"


def acl_entries(props: object, *, rule: bool = False) -> Iterator[AclEntry]:
    """The entries of a NetworkAcl or DefaultNetworkAcl (``rule`` off) or of a NetworkAclRule."""
    if rule:
        found = [(truthy(get_path(props, "egress")), props, "ruleNumber", "ruleAction")]
    else:
        found = [
            (direction == "egress", e, "ruleNo", "action")
            for direction in ("ingress", "egress")
            for e in as_list(get_path(props, direction))
        ]
    for egress, e, number_key, action_key in found:
        raw = norm(get_path(e, "protocol"))
        protocol = "all" if raw in ALL_PROTOCOLS else ACL_PROTOCOLS.get(raw, raw)
        low, high = (0, 65535)
        if protocol != "all":  # written as numbers or strings
            low = _number(get_path(e, "fromPort"), 0)
            high = _number(get_path(e, "toPort"), 65535)
        number = _number(get_path(e, number_key), 32767)
        allow = norm(get_path(e, action_key)) == "allow"
        for cidr in (get_path(e, "cidrBlock"), get_path(e, "ipv6CidrBlock")):
            if cidr:
                yield AclEntry(number, egress, allow, protocol, low, high, str(cidr))


def _nacl(s: Subject) -> Iterator[str]:
    for e in acl_entries(s.props, rule=s.type in NACL_RULE):
        if not e.egress and e.allow and is_world(e.cidr):
            exposed = admin_ports_in(e.low, e.high)
            if exposed:
                yield f"network ACL allows {e.cidr} in on {', '.join(exposed)}"


def _flow_logs(view: StackView) -> Iterator[tuple[str, str | None]]:
    logs = view.of_type(*FLOW_LOG)
    for vpc in view.of_type(*VPC):
        if not any(vpc in view.refers(f, "vpcId", VPC) for f in logs):
            yield f"VPC {vpc.name!r} has no flow log (aws.ec2.FlowLog with vpc_id)", vpc.urn


# EC2-VPC Elastic IPs per region, by default (Service Quotas code L-0263D0A3).
EIP_DEFAULT_QUOTA = 5


def _eip_quota(view: StackView) -> Iterator[tuple[str, str | None]]:
    eips = view.of_type(*EIP)
    if len(eips) > EIP_DEFAULT_QUOTA:
        yield (
            f"the stack allocates {len(eips)} Elastic IPs ({', '.join(e.name for e in eips)}); a region's "
            f"default quota is {EIP_DEFAULT_QUOTA}, so `pulumi up` fails with AddressLimitExceeded "
            "unless the account's quota was raised",
            None,
        )


def _subnet_public_ip(s: Subject) -> Iterator[str]:
    if truthy(s.props.get("mapPublicIpOnLaunch")):
        yield "mapPublicIpOnLaunch is true: every instance launched here gets a public IP"


_EDGE = Controls(cis=("AWS-5.2", "AWS-5.3"), nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1", "1.4.1"))

RULES = [
    Rule(
        "aws-network-alb-only-public-ingress",
        "Only load balancers' security groups admit the internet, and only on their listener ports (outside "
        "Skyfleet programs, a group may also serve 80/443 itself).",
        Severity.CRITICAL,
        _EDGE,
        "Remove 0.0.0.0/0 and ::/0 ingress from every group but the load balancer's, and limit that one to "
        "the ports its listeners serve (443, and 80 for the redirect).",
        stack_check=_alb_only_public,
        checkov=("CKV_AWS_260",),
    ),
    Rule(
        "aws-sg-no-public-admin-ports",
        "Security groups do not admit the internet to administration or data-store ports, nor to all ports.",
        Severity.CRITICAL,
        Controls(
            cis=("AWS-5.2", "AWS-5.3", "AWS-5.4"),
            nist=("SC-7", "AC-17"),
            soc2=("CC6.6",),
            pci=("1.3.1", "1.4.1"),
        ),
        "Reach instances through SSM Session Manager or a VPN/bastion CIDR; admit databases and caches only "
        "from the application's security group.",
        SG + SG_RULE + SG_INGRESS,
        _public_admin,
        checkov=("CKV_AWS_24", "CKV_AWS_25", "CKV_AWS_277"),
    ),
    Rule(
        "aws-network-cache-ingress-from-service",
        "The cache's security group admits only the service's security group (one an ECS service runs in, "
        "networkConfiguration.securityGroups), on the cache port (outside Skyfleet programs, private CIDRs "
        "are accepted too).",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Use a security-group reference (source_security_group_id / referenced_security_group_id) to the "
        "group in the ECS services' network_configuration.security_groups on port 6379 and no CIDR ingress.",
        stack_check=_cache_only_service,
    ),
    Rule(
        "aws-default-sg-closed",
        "A managed default security group allows no traffic.",
        Severity.MEDIUM,
        Controls(cis=("AWS-5.4",), nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Declare aws.ec2.DefaultSecurityGroup with no ingress and no egress rules; give "
        "workloads their own groups.",
        DEFAULT_SG,
        _default_sg,
        checkov=("CKV2_AWS_12",),
    ),
    Rule(
        "aws-nacl-no-public-admin-ports",
        "Network ACLs do not allow the internet in on administration ports.",
        Severity.MEDIUM,
        Controls(cis=("AWS-5.1",), nist=("SC-7",), soc2=("CC6.6",), pci=("1.3.1",)),
        "Deny 0.0.0.0/0 and ::/0 to 22, 3389 and the other admin ports in the ACL (security groups stay the "
        "primary control).",
        NACL + NACL_RULE,
        _nacl,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_229", "CKV_AWS_230", "CKV_AWS_231", "CKV_AWS_232", "CKV_AWS_352"),
    ),
    Rule(
        "aws-vpc-flow-logs",
        "Every VPC records flow logs.",
        Severity.LOW,
        Controls(cis=("AWS-3.9",), nist=("AU-2", "AU-12", "SI-4"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Add an aws.ec2.FlowLog (traffic_type ALL) for the VPC, to CloudWatch Logs or S3.",
        stack_check=_flow_logs,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_AWS_11",),
    ),
    Rule(
        "aws-eip-within-default-quota",
        "A stack allocates no more Elastic IPs than a region's default quota (5); the quota is "
        "per account and region, so other stacks there count too, and this counts the stack's own only.",
        Severity.MEDIUM,
        Controls(nist=("CP-2", "SA-9"), soc2=("A1.1",)),
        "Raise the EC2-VPC Elastic IPs quota of the stack's account and region (Service Quotas, "
        "code L-0263D0A3) before `pulumi up`, or allocate fewer (fewer NAT gateways or zones).",
        stack_check=_eip_quota,
        enforcement=EnforcementLevel.ADVISORY,
    ),
    Rule(
        "aws-subnet-no-auto-public-ip",
        "Subnets do not give every instance a public IP.",
        Severity.LOW,
        Controls(nist=("SC-7",), soc2=("CC6.6",), pci=("1.4.4",)),
        "Set map_public_ip_on_launch=False; give public addresses only to load balancers and NAT gateways.",
        SUBNET,
        _subnet_public_ip,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_130",),
    ),
]
