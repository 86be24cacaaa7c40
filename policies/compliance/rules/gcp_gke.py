"""GKE clusters and node pools (CIS GKE Benchmark): private nodes, a guarded control plane,
no legacy authentication, network policy enforcement, Workload Identity and dedicated node
service accounts, auto-repair and auto-upgrade.

Node settings can live on the cluster (`nodeConfig`, inline `nodePools`) or on separate
gcp.container.NodePool resources; each pool is judged where it is defined, and a cluster that
removes its default pool is not judged on that pool's settings. Autopilot clusters manage their
nodes, so node-level rules do not apply to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from ._net import is_world
from ._rule import Controls, Rule, Subject, as_list, get_path, is_false, norm, truthy

CLUSTER = ("gcp:container/cluster:Cluster",)
NODE_POOL = ("gcp:container/nodePool:NodePool",)
DEFAULT_SA_SUFFIX = "-compute@developer.gserviceaccount.com"


def _autopilot(s: Subject) -> bool:
    return s.type in CLUSTER and truthy(s.props.get("enableAutopilot"))


def _pools(s: Subject) -> Iterator[tuple[str, Any]]:
    """(label, pool) for the node pools this resource defines: a NodePool itself; a cluster's
    default pool (unless removed) and its inline node pools."""
    if s.type in NODE_POOL:
        yield "node pool", s.props
        return
    if _autopilot(s):
        return
    if not truthy(s.props.get("removeDefaultNodePool")):
        yield "default node pool", {"nodeConfig": s.props.get("nodeConfig"), "management": None}
    for pool in as_list(s.props.get("nodePools")):
        yield f"node pool {get_path(pool, 'name')!r}", pool


def _private_nodes(s: Subject) -> Iterator[str]:
    if not truthy(get_path(s.props, "privateClusterConfig", "enablePrivateNodes")):
        yield "privateClusterConfig.enablePrivateNodes is off: nodes get external IPs"


def _control_plane(s: Subject) -> Iterator[str]:
    p = s.props
    if truthy(get_path(p, "privateClusterConfig", "enablePrivateEndpoint")) or is_false(
        get_path(p, "controlPlaneEndpointsConfig", "ipEndpointsConfig", "enabled")
    ):
        return
    authorized = get_path(p, "masterAuthorizedNetworksConfig")
    if authorized is None:
        yield "the control plane endpoint is public and masterAuthorizedNetworksConfig is not set"
        return
    for block in as_list(get_path(authorized, "cidrBlocks")):
        if is_world(get_path(block, "cidrBlock")):
            yield f"masterAuthorizedNetworksConfig admits {get_path(block, 'cidrBlock')}"


def _legacy(s: Subject) -> Iterator[str]:
    p = s.props
    if truthy(p.get("enableLegacyAbac")):
        yield "enableLegacyAbac is true: ABAC grants bypass RBAC"
    if truthy(get_path(p, "masterAuth", "clientCertificateConfig", "issueClientCertificate")):
        yield "masterAuth issues a client certificate (a static credential that cannot be revoked)"
    if get_path(p, "masterAuth", "username") or get_path(p, "masterAuth", "password"):
        yield "masterAuth sets basic-auth credentials"
    if truthy(p.get("enableKubernetesAlpha")):
        yield "enableKubernetesAlpha is true: alpha clusters are unsupported and unpatched"


def _network_policy(s: Subject) -> Iterator[str]:
    if _autopilot(s) or norm(s.props.get("datapathProvider")) == "advanced_datapath":
        return  # Dataplane V2 (and Autopilot) enforce NetworkPolicy
    if not truthy(get_path(s.props, "networkPolicy", "enabled")):
        yield "NetworkPolicy is not enforced (network_policy.enabled or datapath_provider ADVANCED_DATAPATH)"


def _workload_identity(s: Subject) -> Iterator[str]:
    if (
        s.type in CLUSTER
        and not _autopilot(s)
        and not get_path(s.props, "workloadIdentityConfig", "workloadPool")
    ):
        yield "workloadIdentityConfig.workloadPool is not set: pods use the node's service account"
    for label, pool in _pools(s):
        mode = norm(get_path(pool, "nodeConfig", "workloadMetadataConfig", "mode"))
        if mode == "gce_metadata":
            yield f"{label} exposes the node's metadata server to pods (workloadMetadataConfig GCE_METADATA)"


def _node_sa(s: Subject) -> Iterator[str]:
    for label, pool in _pools(s):
        email = str(get_path(pool, "nodeConfig", "serviceAccount") or "")
        if not email or email.endswith(DEFAULT_SA_SUFFIX) or email == "default":
            yield f"{label} runs as the Compute Engine default service account"


def _node_management(s: Subject) -> Iterator[str]:
    for label, pool in _pools(s):
        for key in ("autoRepair", "autoUpgrade"):
            if is_false(get_path(pool, "management", key)):
                yield f"{label} turns {key} off"


def _telemetry(s: Subject) -> Iterator[str]:
    for key in ("loggingService", "monitoringService"):
        if norm(s.props.get(key)) == "none":
            yield f"{key} is 'none'"


def _release_channel(s: Subject) -> Iterator[str]:
    channel = norm(get_path(s.props, "releaseChannel", "channel"))
    if channel in ("", "unspecified"):
        yield "no release channel: the cluster is not upgraded on a supported cadence"


def _shielded(s: Subject) -> Iterator[str]:
    if s.type in CLUSTER and is_false(s.props.get("enableShieldedNodes")):
        yield "enableShieldedNodes is false"
    for label, pool in _pools(s):
        cfg = get_path(pool, "nodeConfig", "shieldedInstanceConfig")
        if not truthy(get_path(cfg, "enableSecureBoot")):
            yield f"{label} boots without secure boot"
        if is_false(get_path(cfg, "enableIntegrityMonitoring")):
            yield f"{label} turns integrity monitoring off"


def _image(s: Subject) -> Iterator[str]:
    for label, pool in _pools(s):
        image = norm(get_path(pool, "nodeConfig", "imageType"))
        if image and not image.startswith("cos"):
            yield f"{label} uses image {image.upper()}; Container-Optimized OS is hardened for GKE"


RULES = [
    Rule(
        "gcp-gke-private-nodes",
        "GKE nodes have internal IP addresses only.",
        Severity.HIGH,
        Controls(cis=("GKE-5.6.5",), nist=("SC-7",), soc2=("CC6.6",), pci=("1.4.4",)),
        "Set private_cluster_config={enable_private_nodes: True, master_ipv4_cidr_block: ...} and egress "
        "through Cloud NAT.",
        CLUSTER,
        _private_nodes,
        checkov=("CKV_GCP_25", "CKV_GCP_64"),
    ),
    Rule(
        "gcp-gke-control-plane-restricted",
        "The GKE control plane is private or limited to authorized networks.",
        Severity.HIGH,
        Controls(cis=("GKE-5.6.3", "GKE-5.6.4"), nist=("SC-7", "AC-3"), soc2=("CC6.6",), pci=("1.4.1",)),
        "Set master_authorized_networks_config.cidr_blocks to the admin ranges, or "
        "private_cluster_config.enable_private_endpoint=True.",
        CLUSTER,
        _control_plane,
        checkov=("CKV_GCP_18", "CKV_GCP_20"),
    ),
    Rule(
        "gcp-gke-no-legacy-auth",
        "GKE clusters use no legacy ABAC, client certificates, basic auth or alpha features.",
        Severity.HIGH,
        Controls(
            cis=("GKE-5.8.1", "GKE-5.8.3"), nist=("AC-3", "IA-2", "IA-5"), soc2=("CC6.1",), pci=("8.3.1",)
        ),
        "Remove enable_legacy_abac, master_auth client certificates and basic auth, and "
        "enable_kubernetes_alpha.",
        CLUSTER,
        _legacy,
        checkov=("CKV_GCP_7", "CKV_GCP_13", "CKV2_GCP_19"),
    ),
    Rule(
        "gcp-gke-network-policy",
        "GKE clusters enforce Kubernetes NetworkPolicy.",
        Severity.MEDIUM,
        Controls(cis=("GKE-5.6.7",), nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Set datapath_provider='ADVANCED_DATAPATH' (Dataplane V2) or network_policy={enabled: True}.",
        CLUSTER,
        _network_policy,
        checkov=("CKV_GCP_12",),
    ),
    Rule(
        "gcp-gke-workload-identity",
        "GKE pods use Workload Identity, not the node's credentials.",
        Severity.HIGH,
        Controls(cis=("GKE-5.2.2", "GKE-5.4.1"), nist=("AC-6", "IA-2"), soc2=("CC6.3",), pci=("7.2.2",)),
        "Set workload_identity_config={workload_pool: '<project>.svc.id.goog'} and node "
        "workload_metadata_config={mode: 'GKE_METADATA'}.",
        CLUSTER + NODE_POOL,
        _workload_identity,
        checkov=("CKV_GCP_69",),
    ),
    Rule(
        "gcp-gke-node-service-account",
        "GKE nodes run as a dedicated service account, not the Compute Engine default.",
        Severity.HIGH,
        Controls(cis=("GKE-5.2.1",), nist=("AC-6",), soc2=("CC6.3",), pci=("7.2.2",)),
        "Create a node service account with roles/container.defaultNodeServiceAccount and set "
        "node_config.service_account.",
        CLUSTER + NODE_POOL,
        _node_sa,
    ),
    Rule(
        "gcp-gke-node-auto-repair-upgrade",
        "GKE node pools keep auto-repair and auto-upgrade on.",
        Severity.MEDIUM,
        Controls(cis=("GKE-5.5.2", "GKE-5.5.3"), nist=("SI-2", "CP-10"), soc2=("CC7.1",), pci=("6.3.3",)),
        "Leave management={auto_repair: True, auto_upgrade: True} (the default).",
        CLUSTER + NODE_POOL,
        _node_management,
        checkov=("CKV_GCP_9", "CKV_GCP_10"),
    ),
    Rule(
        "gcp-gke-logging-monitoring",
        "GKE clusters send logs and metrics to Cloud Logging and Monitoring.",
        Severity.MEDIUM,
        Controls(cis=("GKE-5.7.1",), nist=("AU-2", "SI-4"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Leave logging_service and monitoring_service at their defaults (not 'none').",
        CLUSTER,
        _telemetry,
        checkov=("CKV_GCP_1", "CKV_GCP_8"),
    ),
    Rule(
        "gcp-gke-release-channel",
        "GKE clusters follow a release channel.",
        Severity.LOW,
        Controls(cis=("GKE-5.5.4",), nist=("SI-2",), soc2=("CC7.1",), pci=("6.3.3",)),
        "Set release_channel={channel: 'REGULAR'} (or STABLE).",
        CLUSTER,
        _release_channel,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_70",),
    ),
    Rule(
        "gcp-gke-shielded-nodes",
        "GKE nodes are Shielded VMs with secure boot and integrity monitoring.",
        Severity.LOW,
        Controls(cis=("GKE-5.5.5", "GKE-5.5.6", "GKE-5.5.7"), nist=("SI-7",), soc2=("CC6.8",)),
        "Leave enable_shielded_nodes on and set node_config.shielded_instance_config={enable_secure_boot: "
        "True, enable_integrity_monitoring: True}.",
        CLUSTER + NODE_POOL,
        _shielded,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_71", "CKV_GCP_68", "CKV_GCP_72"),
    ),
    Rule(
        "gcp-gke-cos-image",
        "GKE nodes run Container-Optimized OS.",
        Severity.LOW,
        Controls(cis=("GKE-5.5.1",), nist=("CM-6",), soc2=("CC6.8",)),
        "Set node_config.image_type='COS_CONTAINERD'.",
        CLUSTER + NODE_POOL,
        _image,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_22",),
    ),
]
