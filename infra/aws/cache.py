"""Cache: an ElastiCache (Redis OSS) replication group holding the app's sessions. It lives in
the private subnets, speaks TLS only, demands the AUTH token kept in Secrets Manager, and in
prod keeps a replica in a second zone that takes over automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.network import REDIS_PORT
from infra.aws.site import AwsSite
from infra.component import Capability
from infra.spec import CacheSpec

# Node types by memory (GiB, AWS's node table), smallest first.
NODE_TYPES: tuple[tuple[float, str], ...] = (
    (0.5, "cache.t4g.micro"),
    (1.37, "cache.t4g.small"),
    (3.09, "cache.t4g.medium"),
    (6.38, "cache.m7g.large"),
    (12.93, "cache.m7g.xlarge"),
    (26.04, "cache.m7g.2xlarge"),
    (52.82, "cache.r7g.2xlarge"),
    (105.81, "cache.r7g.4xlarge"),
    (209.55, "cache.r7g.8xlarge"),
    (317.77, "cache.r7g.12xlarge"),
    (419.09, "cache.r7g.16xlarge"),
)
# The default parameter group's reserved-memory-percent: memory ElastiCache keeps from the data
# for forks (snapshots, replica syncs) and buffers. The rest holds the sessions.
RESERVED_MEMORY_PERCENT = 25
# Nodes in an HA group: a primary and one replica in another zone.
HA_NODES = 2


def node_type_for(spec: CacheSpec) -> str:
    """The spec's node type, or the smallest whose memory for data holds size_gb."""
    if spec.node_type:
        return spec.node_type
    usable = 1 - RESERVED_MEMORY_PERCENT / 100
    return next(t for gib, t in NODE_TYPES if gib * usable >= spec.size_gb)


@dataclass(frozen=True)
class CacheArgs:
    site: AwsSite
    cache: CacheSpec
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    auth_token: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]


class Cache(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, spec = args.site, args.cache
        self.nodes = HA_NODES if spec.ha else 1

        # The cache's own subnet group: the private subnets, never the default VPC's.
        subnet_group = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=f"{site.prefix}-cache",
            description=f"Skyfleet {site.name}: private subnets for the cache",
            subnet_ids=list(args.subnet_ids),
            tags=site.tagged("cache"),
            opts=self.child(),
        )
        # The replication group: TLS required, AUTH token, encrypted at rest with the site key;
        # Multi-AZ with automatic failover when the spec asks for HA (always in prod).
        self.group = aws.elasticache.ReplicationGroup(
            f"{name}-redis",
            replication_group_id=f"{site.prefix}-cache"[:40],
            description=f"Skyfleet {site.name}: sessions and rate limits",
            engine="redis",
            engine_version=spec.engine_version,
            node_type=node_type_for(spec),
            port=REDIS_PORT,
            num_cache_clusters=self.nodes,
            automatic_failover_enabled=spec.ha,
            multi_az_enabled=spec.ha,
            subnet_group_name=subnet_group.name,
            security_group_ids=[args.security_group_id],
            at_rest_encryption_enabled=True,
            kms_key_id=args.kms_key_arn,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=args.auth_token,
            auth_token_update_strategy="ROTATE",
            snapshot_retention_limit=spec.snapshot_retention_days,
            snapshot_window="03:00-04:00" if spec.snapshot_retention_days else None,
            maintenance_window="sun:04:30-sun:05:30",
            auto_minor_version_upgrade=True,
            apply_immediately=not site.prod,
            final_snapshot_identifier=f"{site.prefix}-cache-final" if site.prod else None,
            tags=site.tagged("cache"),
            opts=self.child(),
        )
        # The app connects over TLS (rediss://); the password comes from Secrets Manager.
        self.url: pulumi.Output[str] = self.group.primary_endpoint_address.apply(
            lambda host: f"rediss://{host}:{REDIS_PORT}"
        )
        # Member cluster ids (<group>-001, -002, ...): the dimension the cache alarms watch.
        self.member_ids: list[pulumi.Output[str]] = [
            self.group.id.apply(lambda gid, n=n: f"{gid}-{n:03d}") for n in range(1, self.nodes + 1)
        ]

        self.register_outputs({"url": self.url, "replicationGroupId": self.group.id})
