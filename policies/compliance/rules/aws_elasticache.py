"""ElastiCache (Redis/Valkey) replication groups, and single-node clusters: encryption, AUTH, HA,
backups and network placement."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, as_list, truthy

RG = ("aws:elasticache/replicationGroup:ReplicationGroup",)
CLUSTER = ("aws:elasticache/cluster:Cluster",)


def _at_rest(s: Subject) -> Iterator[str]:
    value = s.props.get("atRestEncryptionEnabled")
    engine = str(s.props.get("engine") or "redis").lower()
    # Valkey encrypts at rest by default; Redis does not.
    if not (truthy(value) or (value is None and engine == "valkey")):
        yield "atRestEncryptionEnabled must be true"


def _in_transit(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("transitEncryptionEnabled")):
        yield "transitEncryptionEnabled must be true"
    mode = s.props.get("transitEncryptionMode")
    if mode is not None and str(mode).lower() != "required":
        yield f"transitEncryptionMode is {mode!r}; it must be 'required' so plaintext clients are refused"


def _auth(s: Subject) -> Iterator[str]:
    if not s.props.get("authToken") and not as_list(s.props.get("userGroupIds")):
        yield "set authToken (from Secrets Manager) or userGroupIds (RBAC) so clients must authenticate"


def _failover(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("automaticFailoverEnabled")):
        yield "automaticFailoverEnabled must be true in prod"
    if not truthy(s.props.get("multiAzEnabled")):
        yield "multiAzEnabled must be true in prod"
    clusters = s.props.get("numCacheClusters")
    if isinstance(clusters, int | float) and clusters < 2:
        yield f"numCacheClusters is {clusters:g}; failover needs at least 2"


def _standalone(s: Subject) -> bool:
    """A replication group, or a cluster that is not a member of one."""
    return s.type in RG or not s.props.get("replicationGroupId")


def _backups(s: Subject) -> Iterator[str]:
    if not _standalone(s) or str(s.props.get("engine") or "redis").lower() == "memcached":
        return  # members follow their group; Memcached has no snapshots
    limit = s.props.get("snapshotRetentionLimit")
    if not isinstance(limit, int | float) or limit < 1:
        yield "snapshotRetentionLimit must be at least 1 day in prod"


def _subnet_group(s: Subject) -> Iterator[str]:
    if not _standalone(s):
        return
    group = s.props.get("subnetGroupName")
    if not group or str(group) == "default":
        yield "subnetGroupName must name a dedicated subnet group of private subnets, not the default"


_ENC = Controls(nist=("SC-28", "SC-13"), soc2=("CC6.1",), pci=("3.5.1",))

RULES = [
    Rule(
        "aws-elasticache-encrypted-at-rest",
        "ElastiCache replication groups encrypt data at rest.",
        Severity.HIGH,
        _ENC,
        "Set at_rest_encryption_enabled=True (optionally kms_key_id) on the "
        "ReplicationGroup; changing it replaces the group, so plan a migration.",
        RG,
        _at_rest,
        checkov=("CKV_AWS_29",),
    ),
    Rule(
        "aws-elasticache-encrypted-in-transit",
        "ElastiCache replication groups require TLS in transit.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set transit_encryption_enabled=True and transit_encryption_mode='required'; clients use rediss://.",
        RG,
        _in_transit,
        checkov=("CKV_AWS_30",),
    ),
    Rule(
        "aws-elasticache-auth",
        "ElastiCache replication groups require authentication (AUTH or RBAC).",
        Severity.HIGH,
        Controls(nist=("IA-2", "AC-3"), soc2=("CC6.1",), pci=("8.3.1",)),
        "Set auth_token from a Secrets Manager secret (or user_group_ids for RBAC).",
        RG,
        _auth,
        checkov=("CKV_AWS_31",),
    ),
    Rule(
        "aws-elasticache-automatic-failover",
        "Prod ElastiCache replication groups are Multi-AZ with automatic failover.",
        Severity.MEDIUM,
        Controls(nist=("CP-10", "SC-36"), soc2=("A1.2",)),
        "Set automatic_failover_enabled=True, multi_az_enabled=True and num_cache_clusters>=2.",
        RG,
        _failover,
        prod_only=True,
        checkov=("CKV2_AWS_50",),
    ),
    Rule(
        "aws-elasticache-backups",
        "Prod ElastiCache replication groups keep automatic snapshots.",
        Severity.MEDIUM,
        Controls(nist=("CP-9",), soc2=("A1.2",)),
        "Set snapshot_retention_limit>=1 (and a snapshot_window outside peak hours).",
        RG + CLUSTER,
        _backups,
        prod_only=True,
        checkov=("CKV_AWS_134",),
    ),
    Rule(
        "aws-elasticache-no-default-subnet-group",
        "ElastiCache is not placed in the default subnet group.",
        Severity.MEDIUM,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.4.1",)),
        "Create an aws.elasticache.SubnetGroup over the private subnets and pass its name as "
        "subnet_group_name.",
        RG + CLUSTER,
        _subnet_group,
        checkov=("CKV_AWS_323",),
    ),
]
