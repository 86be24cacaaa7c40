"""The edge: one global name in front of every site, failing over (or sharing traffic)
between them on Route 53 health checks of each site's readiness path.

Deploy the site stacks first; the edge reads their endpoints through StackReferences.
Route 53 is global, but its health-check metrics (and so the alarms) live in us-east-1:
every resource here uses one explicit us-east-1 provider.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.edge.alarms import Alarms, AlarmsArgs
from infra.edge.health_checks import HealthChecks, HealthChecksArgs
from infra.edge.records import Records, RecordsArgs
from infra.edge.sites import read_site
from infra.spec import EdgeStack, Routing

ROUTE53_METRICS_REGION = "us-east-1"


def deploy(spec: EdgeStack) -> dict[str, Any]:
    edge = spec.edge
    # Explicit provider: no ambient region; Route 53 metrics exist only in us-east-1.
    provider = aws.Provider("us-east-1", region=ROUTE53_METRICS_REGION)
    opts = pulumi.ResourceOptions(providers=[provider])
    tags = spec.labels()

    # Each site must serve the global name (its certificate and host rules): checked on its outputs.
    sites = [
        read_site(s, environment=spec.environment.value, global_name=edge.record_name) for s in edge.sites
    ]
    checks = HealthChecks(
        "health-checks",
        HealthChecksArgs(
            sites=sites,
            interval_seconds=edge.health_check.interval_seconds,
            failure_threshold=edge.health_check.failure_threshold,
            path_override=edge.health_check.path if "path" in edge.health_check.model_fields_set else None,
            tags=tags,
            through_addresses=edge.routing is Routing.MULTIVALUE,
        ),
        opts,
    )
    Records(
        "records",
        RecordsArgs(
            zone_id=edge.zone_id,
            record_name=edge.record_name,
            routing=edge.routing,
            ttl=edge.ttl,
            sites=sites,
            health_checks=checks.ids,
        ),
        opts,
    )
    Alarms(
        "alarms",
        AlarmsArgs(health_checks=checks.ids, tags=tags, region=ROUTE53_METRICS_REGION),
        opts,
    )

    return {
        "target": spec.target.value,
        "environment": spec.environment.value,
        "fqdn": edge.record_name,
        "routing": edge.routing.value,
        "healthCheckIds": checks.ids,
    }
