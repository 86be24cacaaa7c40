"""Secret Manager: one secret per logical secret of the site (client API keys, the Redis AUTH
string and its CA, the model key). Replicated only in the site's region; values arrive as
Pulumi secrets and are never printed. Access is granted per secret by the Service component.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site


@dataclass(frozen=True)
class SecretsArgs:
    site: Site
    # logical name (infra.workload API_KEYS, REDIS_AUTH, ...) -> value
    values: Mapping[str, pulumi.Input[str]]


class Secrets(GcpCapability):
    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site
        self.secrets: dict[str, gcp.secretmanager.Secret] = {}
        self.versions: dict[str, gcp.secretmanager.SecretVersion] = {}
        for logical, value in args.values.items():
            # The secret's replicas stay in the site's region (data residency, same failure domain).
            secret = gcp.secretmanager.Secret(
                logical,
                secret_id=site.resource_name(logical),
                project=site.project,
                replication=gcp.secretmanager.SecretReplicationArgs(
                    user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                        replicas=[
                            gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(location=site.region)
                        ]
                    )
                ),
                deletion_protection=site.deletion_protection,
                labels=dict(site.labels),
                opts=self.child(),
            )
            # The value, stored as a version; Cloud Run pins this version, so a new value rolls
            # out as a new revision.
            self.versions[logical] = gcp.secretmanager.SecretVersion(
                f"{logical}-version",
                secret=secret.id,
                secret_data=pulumi.Output.secret(value),
                opts=self.child(),
            )
            self.secrets[logical] = secret
        self.register_outputs({k: s.secret_id for k, s in self.secrets.items()})
