"""Memorystore for Redis: the app's session store. Reachable only through private service
access, AUTH required, TLS in transit; a standard-tier (replicated, automatic failover)
instance in prod.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site
from infra.spec import CacheSpec

# Memorystore's engine versions; a spec version maps to the newest one not above it.
_VERSIONS: tuple[tuple[tuple[int, int], str], ...] = (
    ((7, 2), "REDIS_7_2"),
    ((7, 0), "REDIS_7_0"),
    ((6, 0), "REDIS_6_X"),
)


def redis_version(engine_version: str) -> str:
    """``7.1`` -> ``REDIS_7_0``: Memorystore offers only some minor versions."""
    major, _, minor = engine_version.partition(".")
    wanted = (int(major), int(minor or 0))
    for version, name in _VERSIONS:
        if version <= wanted:
            return name
    return _VERSIONS[-1][1]


@dataclass(frozen=True)
class CacheArgs:
    site: Site
    cache: CacheSpec
    network: pulumi.Input[str]
    reserved_range: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


class Cache(GcpCapability):
    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, cache = args.site, args.cache
        ha = cache.ha

        # STANDARD_HA keeps a replica in another zone with automatic failover; BASIC (dev) is one
        # node. AUTH and server-authenticated TLS are always on; the instance has no public IP.
        self.instance = gcp.redis.Instance(
            "redis",
            name=site.resource_name("sessions", 40),
            project=site.project,
            region=site.region,
            display_name=f"Skyfleet {site.name} sessions",
            tier="STANDARD_HA" if ha else "BASIC",
            memory_size_gb=max(1, math.ceil(cache.size_gb)),
            redis_version=redis_version(cache.engine_version),
            authorized_network=args.network,
            connect_mode="PRIVATE_SERVICE_ACCESS",
            reserved_ip_range=args.reserved_range,
            auth_enabled=True,
            transit_encryption_mode="SERVER_AUTHENTICATION",
            # One replica for failover; reads stay on the primary (read-your-writes sessions).
            replica_count=1 if ha else None,
            # RDB snapshots bound the data lost if both nodes go; none in dev.
            persistence_config=gcp.redis.InstancePersistenceConfigArgs(
                persistence_mode="RDB", rdb_snapshot_period="TWELVE_HOURS"
            )
            if cache.snapshot_retention_days > 0
            else gcp.redis.InstancePersistenceConfigArgs(persistence_mode="DISABLED"),
            # Sessions expire by TTL; under memory pressure evict only keys that have one.
            redis_configs={"maxmemory-policy": "volatile-lru"},
            maintenance_policy=gcp.redis.InstanceMaintenancePolicyArgs(
                weekly_maintenance_windows=[
                    gcp.redis.InstanceMaintenancePolicyWeeklyMaintenanceWindowArgs(
                        day="SUNDAY",
                        start_time=gcp.redis.InstanceMaintenancePolicyWeeklyMaintenanceWindowStartTimeArgs(
                            hours=3, minutes=0
                        ),
                    )
                ]
            ),
            deletion_protection=site.deletion_protection,
            labels=dict(site.labels),
            # In prod, protected twice: by the API (above) and by Pulumi (no delete from a plan).
            opts=self.child(depends_on=list(args.depends_on), protect=site.deletion_protection),
        )

        # The app connects with TLS (rediss://) on the instance's TLS port; the password never
        # rides in the URL.
        self.url: pulumi.Output[str] = pulumi.Output.concat(
            "rediss://", self.instance.host, ":", self.instance.port.apply(str)
        )
        # Memorystore signs the server certificate with a per-instance CA the client must trust.
        self.ca_certs: pulumi.Output[str] = self.instance.server_ca_certs.apply(
            lambda certs: "\n".join(c.cert for c in certs if c.cert)
        )
        self.auth_string: pulumi.Output[str] = pulumi.Output.secret(self.instance.auth_string)

        self.register_outputs({"instance": self.instance.name, "url": self.url})
