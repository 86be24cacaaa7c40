"""Security-group topology (stack rules): only the ALB faces the internet, on 443/80 only; the
cache admits only the service's security group."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pulumi_policy import PolicyResource, Severity

from ._rule import Controls, Rule, StackView, as_list, get_path

SG = ("aws:ec2/securityGroup:SecurityGroup",)
SG_RULE = ("aws:ec2/securityGroupRule:SecurityGroupRule",)
SG_INGRESS = ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",)
ALB = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
CACHE = ("aws:elasticache/replicationGroup:ReplicationGroup",)
WORLD = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class Ingress:
    """One ingress permission, whichever resource type declared it."""

    group: PolicyResource | None
    urn: str
    from_port: int
    to_port: int
    cidrs: tuple[str, ...]
    source_groups: tuple[str, ...]

    @property
    def world(self) -> bool:
        return any(c in WORLD for c in self.cidrs)

    def ports(self) -> str:
        return (
            "all ports"
            if self.from_port <= 0 and self.to_port in (0, -1, 65535)
            else (
                str(self.from_port) if self.from_port == self.to_port else f"{self.from_port}-{self.to_port}"
            )
        )


def _port(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float) else default


def ingresses(view: StackView) -> Iterator[Ingress]:
    for sg in view.of_type(*SG):
        for rule in as_list(sg.props.get("ingress")):
            yield Ingress(
                sg,
                sg.urn,
                _port(get_path(rule, "fromPort"), 0),
                _port(get_path(rule, "toPort"), 0),
                tuple(as_list(get_path(rule, "cidrBlocks")) + as_list(get_path(rule, "ipv6CidrBlocks"))),
                tuple(str(g) for g in as_list(get_path(rule, "securityGroups"))),
            )
    for r in view.of_type(*SG_RULE):
        if r.props.get("type") != "ingress":
            continue
        group = next(iter(view.referenced(r.props.get("securityGroupId"), SG)), None)
        yield Ingress(
            group,
            r.urn,
            _port(r.props.get("fromPort"), 0),
            _port(r.props.get("toPort"), 0),
            tuple(as_list(r.props.get("cidrBlocks")) + as_list(r.props.get("ipv6CidrBlocks"))),
            tuple(str(g) for g in as_list(r.props.get("sourceSecurityGroupId"))),
        )
    for r in view.of_type(*SG_INGRESS):
        group = next(iter(view.referenced(r.props.get("securityGroupId"), SG)), None)
        yield Ingress(
            group,
            r.urn,
            _port(r.props.get("fromPort"), 0),
            _port(r.props.get("toPort"), 0),
            tuple(str(c) for c in (r.props.get("cidrIpv4"), r.props.get("cidrIpv6")) if c),
            tuple(str(g) for g in as_list(r.props.get("referencedSecurityGroupId"))),
        )


def _attached_groups(view: StackView, types: tuple[str, ...], key: str) -> set[str]:
    """URNs of the security groups that resources of `types` list under `key`."""
    urns: set[str] = set()
    for res in view.of_type(*types):
        urns.update(g.urn for g in view.referenced(as_list(res.props.get(key)), SG))
    return urns


def _alb_only_public(view: StackView) -> Iterator[tuple[str, str | None]]:
    alb_groups = _attached_groups(view, ALB, "securityGroups")
    for ing in ingresses(view):
        if not ing.world:
            continue
        if ing.group is None or ing.group.urn not in alb_groups:
            yield f"ingress from the internet on {ing.ports()} to a security group no ALB uses", ing.urn
        elif not (ing.from_port == ing.to_port and ing.from_port in (80, 443)):
            yield (
                f"ALB security group admits the internet on {ing.ports()}; only 443 and 80 are allowed",
                ing.urn,
            )


def _cache_only_service(view: StackView) -> Iterator[tuple[str, str | None]]:
    for cache in view.of_type(*CACHE):
        groups = {g.urn for g in view.referenced(as_list(cache.props.get("securityGroupIds")), SG)}
        if not groups:
            yield "cache has no dedicated security group (securityGroupIds)", cache.urn
            continue
        port = _port(cache.props.get("port"), 6379)
        for ing in ingresses(view):
            if ing.group is None or ing.group.urn not in groups:
                continue
            if ing.cidrs:
                yield (
                    f"cache security group admits CIDR {', '.join(ing.cidrs)}; admit the service's "
                    "security group only",
                    ing.urn,
                )
            elif not ing.source_groups:
                yield "cache ingress names no source security group", ing.urn
            elif not (ing.from_port == ing.to_port == port):
                yield f"cache ingress opens {ing.ports()}; only the cache port {port} is needed", ing.urn


RULES = [
    Rule(
        "aws-network-alb-only-public-ingress",
        "Only the ALB's security group admits the internet, and only on 443 and 80.",
        Severity.CRITICAL,
        Controls(cis=("AWS-5.2", "AWS-5.3"), nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1", "1.4.1")),
        "Remove 0.0.0.0/0 and ::/0 ingress from every group but the ALB's, and limit that one to 443 "
        "(and 80 for the redirect).",
        stack_check=_alb_only_public,
    ),
    Rule(
        "aws-network-cache-ingress-from-service",
        "The cache's security group admits only the service's security group, on the cache port.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Use a security-group reference (source_security_group_id / referenced_security_group_id) to the "
        "tasks' group on port 6379 and no CIDR ingress.",
        stack_check=_cache_only_service,
    ),
]
