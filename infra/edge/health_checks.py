"""Route 53 health checks on every site's readiness path: HTTPS with SNI (the site's own
certificate must validate), from several regions, so one checker region's trouble cannot
fail a healthy site.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.component import Capability
from infra.edge.sites import Site

# Route 53 needs at least three checker regions; spread over three continents.
CHECKER_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


@dataclass(frozen=True)
class HealthChecksArgs:
    sites: Sequence[Site]
    interval_seconds: int
    failure_threshold: int
    # An explicit path from the edge config; otherwise each site's exported readiness path.
    path_override: str | None
    tags: Mapping[str, str]
    # Check each site through the front its fixed addresses belong to (a multivalue edge
    # answers those addresses), not through the host a CNAME would name.
    through_addresses: bool = False


class HealthChecks(Capability):
    """One HTTPS health check per site; ``ids`` maps site name -> health check id."""

    TARGET = "edge"

    def __init__(self, name: str, args: HealthChecksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.checks: dict[str, aws.route53.HealthCheck] = {}
        for site in args.sites:
            # The site is healthy while its /readyz answers 2xx/3xx over HTTPS on 443.
            self.checks[site.config.name] = aws.route53.HealthCheck(
                f"hc-{site.config.name}",
                type="HTTPS",
                fqdn=site.addresses_host if args.through_addresses else site.host,
                port=443,
                resource_path=args.path_override or site.health_check_path,
                enable_sni=True,
                request_interval=args.interval_seconds,
                failure_threshold=args.failure_threshold,
                measure_latency=True,
                regions=list(CHECKER_REGIONS),
                tags={**args.tags, "Name": f"skyfleet-{site.config.name}", "site": site.config.name},
                opts=self.child(),
            )
        self.ids: dict[str, pulumi.Output[str]] = {n: c.id for n, c in self.checks.items()}
        self.register_outputs({"ids": self.ids})
