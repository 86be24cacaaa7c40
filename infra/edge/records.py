"""The global name's DNS records: active-passive failover, weighted active-active, or
multivalue active-active, each record tied to its site's health check, with a short TTL so
clients follow a change fast.

Multivalue answers hold every healthy site's addresses, so a client that cannot connect to one
tries the next at once, before any health check has noticed; Route 53 refuses a CNAME there,
so those records carry the addresses each site stack exports (``endpointAddresses``).

Route 53 failover has one PRIMARY and one SECONDARY per name. With more than two sites the
SECONDARY is an alias to a second failover pair under a tier name, and so on: the first
healthy site in priority order answers. Failover records are named, and identified in Route 53
(their set identifier), by their place (tier and role), not by the site they answer with: a
deployed edge whose priorities change, or that gains or loses a site, is then updated in place
(Route 53 replaces a record of the same name, type and set identifier in one atomic change),
where records named by site would be created beside the old ones, which Route 53 refuses (a
second PRIMARY for a name). Weighted and multivalue records are one per site, identified by it.

Certificate validation: a site whose certificate is proven by DNS records in the edge's zone
exports them (``dnsAuthorizations``: a gcp site's Certificate Manager DNS authorizations, one
CNAME per name its certificate covers), and the edge creates each of them here, once, whatever
the routing: the global name is the edge's, and the sites' own names live in the same zone in
the shipped stacks. A name outside the zone is refused by Route 53 at ``pulumi up``. The records
are created once the sites' outputs are read (their number is the sites'), so a preview against
a site stack not yet deployed does not show them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.component import Capability
from infra.edge.sites import Site
from infra.outputs import DnsRecord
from infra.spec import Routing

# Certificate validation records stay for every renewal and never move: an ordinary TTL.
AUTHORIZATION_TTL = 300


@dataclass(frozen=True)
class RecordsArgs:
    zone_id: str
    record_name: str
    routing: Routing
    ttl: int
    sites: Sequence[Site]
    health_checks: Mapping[str, pulumi.Output[str]]  # site name -> health check id


def tier_name(record_name: str, tier: int) -> str:
    """The name of failover tier ``tier`` (tier 0 is the global name itself)."""
    return record_name if tier == 0 else f"failover-{tier}.{record_name}"


def failover_record(tier: int, role: str) -> str:
    """The resource name of tier ``tier``'s PRIMARY or SECONDARY record: its place, whatever
    site answers there (its set identifier is the role, lower case)."""
    return f"failover-{tier}-{role.lower()}"


# Addresses no client on the internet can reach: private, shared (carrier NAT), loopback,
# link-local, protocol assignments, benchmarking, unspecified, multicast and reserved ranges.
# The documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24) pass: offline plans give
# them as the providers' addresses, and no provider hands them out.
NOT_REACHABLE = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
        "240.0.0.0/4",
    )
)  # fmt: skip


def _addresses(site: Site, addresses: Sequence[str]) -> list[str]:
    """A site's fixed public IPv4 addresses, or a clear error: a multivalue record cannot name
    a host, and an address clients cannot reach would be answered while its check passes."""
    if not addresses:
        raise ValueError(
            f"stack {site.config.stack} exports no endpointAddresses: multivalue routing answers "
            "with each site's fixed addresses (an aws site's NLB, a gcp site's global address, an "
            "onprem ingress controller's IPv4 address); deploy that site with one, or route by "
            "failover or weighted"
        )
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            address = None
        if not isinstance(address, ipaddress.IPv4Address) or any(address in n for n in NOT_REACHABLE):
            raise ValueError(
                f"stack {site.config.stack} exports endpointAddresses {list(addresses)}: {text!r} is "
                "not a public IPv4 address clients can reach (an onprem ingress controller must "
                "publish its public address in the Ingress status)"
            )
    return list(addresses)


def authorization_records(per_site: Mapping[str, Sequence[DnsRecord]]) -> dict[str, DnsRecord]:
    """The DNS authorization records the sites export (site name -> records), by record name,
    each once: two sites in one project share a per-project record. A clear error for a record
    Route 53 could not hold as exported, or one name with two values."""
    found: dict[str, tuple[str, DnsRecord]] = {}
    for site, records in per_site.items():
        for record in records:
            name = record.name.strip().rstrip(".").lower()
            if record.type != "CNAME" or not name or not record.data:
                raise ValueError(
                    f"site {site} exports the DNS authorization {record.model_dump()}: the edge "
                    "creates CNAME records with a name and a value only"
                )
            if name in found and found[name][1].data.rstrip(".") != record.data.rstrip("."):
                raise ValueError(
                    f"sites {found[name][0]} and {site} export the DNS authorization {name} with "
                    f"two values ({found[name][1].data}, {record.data}): one name holds one CNAME"
                )
            found.setdefault(name, (site, record))
    return {name: record for name, (_, record) in found.items()}


class Records(Capability):
    """Route 53 records for the global name."""

    TARGET = "edge"

    def __init__(self, name: str, args: RecordsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.args = args
        self.records: list[aws.route53.Record] = []
        if args.routing is Routing.MULTIVALUE:
            for site in args.sites:
                # Active-active: each healthy site's addresses in every answer.
                self.records.append(
                    aws.route53.Record(
                        f"multivalue-{site.config.name}",
                        zone_id=args.zone_id,
                        name=args.record_name,
                        type="A",
                        ttl=args.ttl,
                        records=site.addresses.apply(lambda a, site=site: _addresses(site, a)),
                        set_identifier=site.config.name,
                        health_check_id=args.health_checks[site.config.name],
                        multivalue_answer_routing_policy=True,
                        opts=self.child(),
                    )
                )
        elif args.routing is Routing.WEIGHTED:
            for site in args.sites:
                # Active-active: healthy sites share answers in proportion to their weights.
                self.records.append(
                    self._cname(
                        f"weighted-{site.config.name}",
                        args.record_name,
                        site,
                        weight=site.config.weight,
                    )
                )
        else:
            ordered = sorted(args.sites, key=lambda s: (s.config.priority, s.config.name))
            last = len(ordered) - 2
            # Built from the last tier up: an alias must point at records that already exist
            # (Route 53 refuses it otherwise), so each tier's alias depends on the next tier.
            tiers: dict[int, list[aws.route53.Record]] = {}
            for tier in reversed(range(len(ordered) - 1)):
                here = tier_name(args.record_name, tier)
                # PRIMARY: the highest-priority site left, while its health check passes.
                primary = self._cname(
                    failover_record(tier, "PRIMARY"),
                    here,
                    ordered[tier],
                    failover="PRIMARY",
                )
                if tier == last:
                    # SECONDARY: the last site, answering when everything above it is down.
                    secondary = self._cname(
                        failover_record(tier, "SECONDARY"),
                        here,
                        ordered[tier + 1],
                        failover="SECONDARY",
                    )
                else:
                    # SECONDARY: the next tier's failover pair (an alias within the zone).
                    secondary = aws.route53.Record(
                        failover_record(tier, "SECONDARY"),
                        zone_id=args.zone_id,
                        name=here,
                        type="CNAME",
                        set_identifier="secondary",
                        failover_routing_policies=[
                            aws.route53.RecordFailoverRoutingPolicyArgs(type="SECONDARY")
                        ],
                        aliases=[
                            aws.route53.RecordAliasArgs(
                                name=tier_name(args.record_name, tier + 1),
                                zone_id=args.zone_id,
                                evaluate_target_health=True,
                            )
                        ],
                        opts=self.child(depends_on=tiers[tier + 1]),
                    )
                tiers[tier] = [primary, secondary]
            self.records += [r for tier in sorted(tiers) for r in tiers[tier]]
        # The CNAMEs that let the sites' certificate issuers issue for their names (the global
        # name included): created once every site's outputs are read.
        names = [site.config.name for site in args.sites]
        self.authorizations: pulumi.Output[list[aws.route53.Record]] = pulumi.Output.all(
            *(site.dns_authorizations for site in args.sites)
        ).apply(lambda exported: self._authorizations(dict(zip(names, exported, strict=True))))
        self.register_outputs(
            {
                "fqdn": args.record_name,
                "records": len(self.records),
                "dnsAuthorizations": self.authorizations.apply(lambda rs: len(rs)),
            }
        )

    def _authorizations(self, per_site: Mapping[str, Sequence[DnsRecord]]) -> list[aws.route53.Record]:
        """One CNAME per exported DNS authorization, named by its record name (stable whatever
        the order of the sites)."""
        return [
            aws.route53.Record(
                f"dns-authorization-{name}",
                zone_id=self.args.zone_id,
                name=name,
                type="CNAME",
                ttl=AUTHORIZATION_TTL,
                records=[record.data],
                opts=self.child(),
            )
            for name, record in sorted(authorization_records(per_site).items())
        ]

    def _cname(
        self,
        resource_name: str,
        record_name: str,
        site: Site,
        *,
        failover: str | None = None,
        weight: int | None = None,
    ) -> aws.route53.Record:
        """A CNAME to the site's host, answered only while the site's health check passes."""
        return aws.route53.Record(
            resource_name,
            zone_id=self.args.zone_id,
            name=record_name,
            type="CNAME",
            ttl=self.args.ttl,
            records=[site.host],
            # A failover record is identified by its role (the site in it may change in place).
            set_identifier=failover.lower() if failover else site.config.name,
            health_check_id=self.args.health_checks[site.config.name],
            failover_routing_policies=(
                [aws.route53.RecordFailoverRoutingPolicyArgs(type=failover)] if failover else None
            ),
            weighted_routing_policies=(
                [aws.route53.RecordWeightedRoutingPolicyArgs(weight=weight)] if weight is not None else None
            ),
            opts=self.child(),
        )
