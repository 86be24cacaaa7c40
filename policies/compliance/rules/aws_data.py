"""Managed data stores: RDS (instances, Aurora clusters), Redshift, DocumentDB, Neptune, EFS,
OpenSearch, DynamoDB and Kinesis: encryption, no public endpoint, backups in prod, and the
hardening a reviewer asks for (IAM authentication, TLS, patching, logs) as advice.

A setting made by a companion resource counts: a DB parameter group that forces TLS, an
OpenSearch domain policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._docs import DocumentError, is_public_principal, statements
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, is_false, norm, truthy

RDS_INSTANCE = ("aws:rds/instance:Instance",)
RDS_CLUSTER = ("aws:rds/cluster:Cluster",)
RDS_CLUSTER_INSTANCE = ("aws:rds/clusterInstance:ClusterInstance",)
DOCDB = ("aws:docdb/cluster:Cluster",)
NEPTUNE = ("aws:neptune/cluster:Cluster",)
REDSHIFT = ("aws:redshift/cluster:Cluster",)
EFS = ("aws:efs/fileSystem:FileSystem",)
SEARCH = ("aws:opensearch/domain:Domain", "aws:elasticsearch/domain:Domain")
SEARCH_POLICY = ("aws:opensearch/domainPolicy:DomainPolicy", "aws:elasticsearch/domainPolicy:DomainPolicy")
DYNAMODB = ("aws:dynamodb/table:Table",)
KINESIS = ("aws:kinesis/stream:Stream",)
SNAPSHOTS = ("aws:rds/snapshot:Snapshot", "aws:rds/clusterSnapshot:ClusterSnapshot")
DMS = ("aws:dms/replicationInstance:ReplicationInstance",)
MQ = ("aws:mq/broker:Broker",)
PARAMETER_GROUPS = (
    "aws:rds/parameterGroup:ParameterGroup",
    "aws:rds/clusterParameterGroup:ClusterParameterGroup",
)
ELASTICACHE_CLUSTER = ("aws:elasticache/cluster:Cluster",)

ENCRYPTED_TYPES = RDS_INSTANCE + RDS_CLUSTER + DOCDB + NEPTUNE + REDSHIFT + EFS + SEARCH + KINESIS
PUBLIC_TYPES = RDS_INSTANCE + RDS_CLUSTER_INSTANCE + REDSHIFT + DMS + MQ + SNAPSHOTS
BACKUP_TYPES = RDS_INSTANCE + RDS_CLUSTER + DOCDB + NEPTUNE + REDSHIFT + DYNAMODB
OLD_CAS = ("rds-ca-2015", "rds-ca-2019")


def _encrypted(s: Subject) -> Iterator[str]:
    p = s.props
    if s.type in SEARCH:
        if not truthy(get_path(p, "encryptAtRest", "enabled")):
            yield "encryptAtRest.enabled must be true"
        if not truthy(get_path(p, "nodeToNodeEncryption", "enabled")):
            yield "nodeToNodeEncryption.enabled must be true"
        if not truthy(get_path(p, "domainEndpointOptions", "enforceHttps")):
            yield "domainEndpointOptions.enforceHttps must be true"
        tls = str(get_path(p, "domainEndpointOptions", "tlsSecurityPolicy") or "Policy-Min-TLS-1-0-2019-07")
        if "tls-1-2" not in tls.lower():
            allowed = "Policy-Min-TLS-1-2-2019-07, Policy-Min-TLS-1-2-PFS-2023-10"
            yield f"tlsSecurityPolicy is {tls}; allowed: {allowed}"
        return
    if s.type in KINESIS:
        if norm(p.get("encryptionType")) != "kms":
            yield f"encryptionType is {p.get('encryptionType') or 'NONE'!r}; set 'KMS'"
        return
    if s.type in REDSHIFT:
        if not truthy(p.get("encrypted")):
            yield "encrypted must be true"
        return
    if s.type in EFS:
        if not truthy(p.get("encrypted")):
            yield "encrypted must be true (EFS file systems are unencrypted unless asked)"
        return
    # RDS, Aurora, DocumentDB, Neptune. A replica or a restore inherits its source's setting.
    inherits = any(
        p.get(k) for k in ("replicateSourceDb", "replicationSourceIdentifier", "snapshotIdentifier")
    )
    if norm(p.get("engineMode")) == "serverless" or (inherits and p.get("storageEncrypted") is None):
        return
    if not truthy(p.get("storageEncrypted")):
        yield "storageEncrypted must be true"


def _search_public(view: StackView, domain: PolicyResource) -> list[str]:
    if get_path(domain.props, "vpcOptions", "subnetIds"):
        return []
    docs = [domain.props.get("accessPolicies")]
    docs += [p.props.get("accessPolicies") for p in view.referrers(domain, SEARCH_POLICY, "domainName")]
    for doc in docs:
        if not doc:
            continue
        try:
            if any(is_public_principal(st) for st in statements(doc, "access policy")):
                return ["the domain has a public endpoint and its access policy allows Principal '*'"]
        except DocumentError as exc:
            return [str(exc)]
    return []


def _public(view: StackView) -> Iterator[tuple[str, str | None]]:
    for r in view.of_type(*PUBLIC_TYPES):
        if r.resource_type in SNAPSHOTS:
            shared = [str(a) for a in as_list(r.props.get("sharedAccounts"))]
            if "all" in [a.lower() for a in shared]:
                yield (
                    f"{r.name!r}: the snapshot is shared with every AWS account (sharedAccounts 'all')",
                    r.urn,
                )
        elif truthy(r.props.get("publiclyAccessible")):
            yield f"{r.name!r}: publiclyAccessible is true: the endpoint resolves to a public address", r.urn
    for domain in view.of_type(*SEARCH):
        for message in _search_public(view, domain):
            yield f"{domain.name!r}: {message}", domain.urn


def _backups(s: Subject) -> Iterator[str]:
    p = s.props
    if s.type in DYNAMODB:
        if not truthy(get_path(p, "pointInTimeRecovery", "enabled")):
            yield "pointInTimeRecovery.enabled must be true in prod"
    elif s.type in REDSHIFT:
        days = p.get("automatedSnapshotRetentionPeriod")
        if isinstance(days, int | float) and days < 1:
            yield "automatedSnapshotRetentionPeriod is 0: automated snapshots are off"
    else:
        days = p.get("backupRetentionPeriod")
        if isinstance(days, int | float) and days < 7 and not p.get("replicateSourceDb"):
            yield f"backupRetentionPeriod is {days:g} day(s); prod keeps at least 7"


def _iam_auth(s: Subject) -> Iterator[str]:
    engine = norm(s.props.get("engine"))
    if (
        s.type not in NEPTUNE
        and engine
        and not any(k in engine for k in ("mysql", "postgres", "aurora", "mariadb"))
    ):
        return  # Oracle and SQL Server have no IAM database authentication
    if not truthy(s.props.get("iamDatabaseAuthenticationEnabled")):
        yield "iamDatabaseAuthenticationEnabled is off: database users authenticate with passwords only"


def _multi_az(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("multiAz")) and not s.props.get("replicateSourceDb"):
        yield "multiAz is off: a zone failure takes the database down"


def _minor_upgrades(s: Subject) -> Iterator[str]:
    key = "allowVersionUpgrade" if s.type in REDSHIFT else "autoMinorVersionUpgrade"
    if is_false(s.props.get(key)):
        yield f"{key} is false: security patches are not applied"


def _logs(s: Subject) -> Iterator[str]:
    if s.type in SEARCH:
        kinds = {norm(get_path(o, "logType")) for o in as_list(s.props.get("logPublishingOptions"))}
        missing = [k for k in ("audit_logs", "es_application_logs") if k not in kinds]
        if missing:
            yield f"logPublishingOptions does not publish {', '.join(missing).upper()}"
        return
    if s.type in REDSHIFT:
        if not truthy(get_path(s.props, "logging", "enable")) and not s.props.get("logging"):
            yield "audit logging is off"
        return
    if not as_list(s.props.get("enabledCloudwatchLogsExports")):
        yield "enabledCloudwatchLogsExports is empty: no database logs reach CloudWatch"


def _ca(s: Subject) -> Iterator[str]:
    ca = norm(s.props.get("caCertIdentifier"))
    if ca in OLD_CAS:
        yield f"caCertIdentifier {ca} has expired; use rds-ca-rsa2048-g1 (or newer)"


_TLS_PARAMS = {"rds.force_ssl": ("1", "true", "on"), "require_secure_transport": ("1", "on", "true")}


def _tls(view: StackView) -> Iterator[tuple[str, str | None]]:
    for r in view.of_type(*RDS_INSTANCE + RDS_CLUSTER):
        engine, version = norm(r.props.get("engine")), str(r.props.get("engineVersion") or "")
        major = int(m.group(0)) if (m := re.match(r"\d+", version)) else 0
        if "postgres" in engine and major >= 15:
            continue  # RDS for PostgreSQL 15+ sets rds.force_ssl=1 by default
        key = "dbClusterParameterGroupName" if r.resource_type in RDS_CLUSTER else "parameterGroupName"
        groups = view.refers(r, key, PARAMETER_GROUPS)
        forced = any(
            norm(get_path(param, "name")) in _TLS_PARAMS
            and norm(get_path(param, "value")) in _TLS_PARAMS[norm(get_path(param, "name"))]
            for g in groups
            for param in as_list(g.props.get("parameters"))
        )
        if not forced:
            yield (
                f"{r.name!r}: no parameter group forces TLS (rds.force_ssl / require_secure_transport)",
                r.urn,
            )


_ENC = Controls(cis=("AWS-2.3.1",), nist=("SC-28", "SC-13"), soc2=("CC6.1",), pci=("3.5.1",))
_HARDEN = Controls(nist=("CM-6", "SI-2"), soc2=("CC7.1",), pci=("6.3.3",))

RULES = [
    Rule(
        "aws-data-store-encrypted",
        "RDS, Aurora, DocumentDB, Neptune, Redshift, EFS, OpenSearch and Kinesis encrypt data at rest "
        "(OpenSearch also in transit).",
        Severity.HIGH,
        _ENC,
        "Set storage_encrypted=True (encrypted=True for EFS, encryption_type='KMS' for Kinesis; "
        "encrypt_at_rest, node_to_node_encryption and enforce_https for OpenSearch). Changing it replaces "
        "the store: plan a snapshot restore.",
        ENCRYPTED_TYPES,
        _encrypted,
        checkov=(
            "CKV_AWS_16",
            "CKV_AWS_96",
            "CKV_AWS_64",
            "CKV_AWS_42",
            "CKV_AWS_5",
            "CKV_AWS_6",
            "CKV_AWS_83",
            "CKV_AWS_43",
            "CKV_AWS_74",
            "CKV_AWS_44",
            "CKV_AWS_228",
        ),
    ),
    Rule(
        "aws-data-store-not-public",
        "Databases, warehouses, search domains and their snapshots are not reachable from the internet.",
        Severity.CRITICAL,
        Controls(cis=("AWS-2.3.3",), nist=("SC-7", "AC-3"), soc2=("CC6.6",), pci=("1.4.4",)),
        "Set publicly_accessible=False and place the store in private subnets; keep search domains in a VPC; "
        "share snapshots with named accounts only.",
        stack_check=_public,
        checkov=("CKV_AWS_17", "CKV_AWS_87", "CKV_AWS_302", "CKV_AWS_391", "CKV_AWS_137", "CKV_AWS_69"),
    ),
    Rule(
        "aws-data-store-backups",
        "Prod databases keep automated backups (7+ days; DynamoDB point-in-time recovery).",
        Severity.MEDIUM,
        Controls(nist=("CP-9",), soc2=("A1.2",)),
        "Set backup_retention_period>=7 (point_in_time_recovery for DynamoDB, automated "
        "snapshots for Redshift).",
        BACKUP_TYPES,
        _backups,
        prod_only=True,
        checkov=("CKV_AWS_133", "CKV_AWS_28", "CKV_AWS_343", "CKV_AWS_360", "CKV_AWS_361"),
    ),
    Rule(
        "aws-rds-iam-auth",
        "RDS, Aurora (MySQL, PostgreSQL) and Neptune accept IAM database authentication.",
        Severity.LOW,
        Controls(nist=("IA-2", "IA-5"), soc2=("CC6.1",)),
        "Set iam_database_authentication_enabled=True and let workloads connect with IAM tokens.",
        RDS_INSTANCE + RDS_CLUSTER + NEPTUNE,
        _iam_auth,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_161", "CKV_AWS_162", "CKV_AWS_359"),
    ),
    Rule(
        "aws-rds-multi-az",
        "Prod RDS instances are Multi-AZ.",
        Severity.LOW,
        Controls(nist=("CP-10",), soc2=("A1.2",)),
        "Set multi_az=True in prod.",
        RDS_INSTANCE,
        _multi_az,
        prod_only=True,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_157",),
    ),
    Rule(
        "aws-db-auto-minor-upgrade",
        "Databases and caches take minor-version (security) upgrades.",
        Severity.LOW,
        _HARDEN,
        "Leave auto_minor_version_upgrade (allow_version_upgrade for Redshift) at true.",
        RDS_INSTANCE + RDS_CLUSTER_INSTANCE + REDSHIFT + ELASTICACHE_CLUSTER,
        _minor_upgrades,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_226", "CKV_AWS_141", "CKV_AWS_322"),
    ),
    Rule(
        "aws-db-logs-exported",
        "Databases export their logs (RDS, DocumentDB and Neptune to CloudWatch, Redshift audit logging, "
        "OpenSearch audit and application logs).",
        Severity.LOW,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set enabled_cloudwatch_logs_exports (e.g. ['postgresql'] or ['audit', 'error']); enable "
        "Redshift logging.",
        RDS_INSTANCE + RDS_CLUSTER + DOCDB + NEPTUNE + REDSHIFT + SEARCH,
        _logs,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=(
            "CKV_AWS_129",
            "CKV_AWS_324",
            "CKV_AWS_325",
            "CKV_AWS_71",
            "CKV_AWS_85",
            "CKV_AWS_101",
            "CKV_AWS_84",
            "CKV_AWS_317",
        ),
    ),
    Rule(
        "aws-rds-current-ca",
        "RDS instances use a current certificate authority.",
        Severity.LOW,
        Controls(nist=("SC-12", "SC-17"), soc2=("CC6.7",)),
        "Set ca_cert_identifier='rds-ca-rsa2048-g1' (or the ECC/4096 variants).",
        RDS_INSTANCE + RDS_CLUSTER_INSTANCE,
        _ca,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_211",),
    ),
    Rule(
        "aws-rds-tls-required",
        "RDS and Aurora refuse unencrypted client connections.",
        Severity.MEDIUM,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Attach a parameter group with rds.force_ssl=1 (PostgreSQL) or require_secure_transport=ON (MySQL).",
        stack_check=_tls,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_AWS_69",),
    ),
]
