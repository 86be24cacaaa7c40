# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""A production GKE cluster: the default node pool removed and replaced by a managed pool,
Dataplane V2, Workload Identity, a KMS key for secrets encryption, and the CI identity.
`hardened` picks the careful settings; the others are planted violations (planted.yaml)."""

import pulumi
import pulumi_gcp as gcp

config = pulumi.Config()
hardened = config.require_bool("hardened")
PROJECT = "acme-platform"


def pick(good, bad):
    return good if hardened else bad


network = gcp.compute.Network("gke", auto_create_subnetworks=False)
subnet = gcp.compute.Subnetwork(
    "gke-nodes",
    network=network.id,
    region="us-central1",
    ip_cidr_range="10.50.0.0/20",
    private_ip_google_access=True,
    secondary_ip_ranges=[
        {"range_name": "pods", "ip_cidr_range": "10.60.0.0/14"},
        {"range_name": "services", "ip_cidr_range": "10.64.0.0/20"},
    ],
    log_config={"aggregation_interval": "INTERVAL_5_SEC", "flow_sampling": 0.5},
)
router = gcp.compute.Router("gke", network=network.id, region="us-central1")
gcp.compute.RouterNat(
    "gke",
    router=router.name,
    region="us-central1",
    nat_ip_allocate_option="AUTO_ONLY",
    source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
)

ring = gcp.kms.KeyRing("gke", location="us-central1")
key = gcp.kms.CryptoKey(
    "gke-secrets",
    key_ring=ring.id,
    purpose="ENCRYPT_DECRYPT",
    rotation_period=pick("7776000s", None),  # planted: the key never rotates
)
gcp.kms.CryptoKeyIAMMember(
    "gke-secrets-agent",
    crypto_key_id=key.id,
    role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
    # planted: every Google account may use the key
    member=pick(
        "serviceAccount:service-123456789012@container-engine-robot.iam.gserviceaccount.com",
        "allAuthenticatedUsers",
    ),
)

cluster_args = dict(
    location="us-central1",
    network=network.id,
    subnetwork=subnet.id,
    remove_default_node_pool=True,
    initial_node_count=1,
    deletion_protection=True,
    ip_allocation_policy={
        "cluster_secondary_range_name": "pods",
        "services_secondary_range_name": "services",
    },
    release_channel={"channel": "REGULAR"},
    workload_identity_config={"workload_pool": f"{PROJECT}.svc.id.goog"},
    database_encryption={"state": "ENCRYPTED", "key_name": key.id},
    enable_legacy_abac=pick(False, True),  # planted: legacy ABAC
    enable_shielded_nodes=True,
    resource_labels={"owner": "platform", "environment": "prod", "cost-center": "cc-3", "app": "gke"},
)
if hardened:
    cluster_args.update(
        datapath_provider="ADVANCED_DATAPATH",
        private_cluster_config={
            "enable_private_nodes": True,
            "enable_private_endpoint": False,
            "master_ipv4_cidr_block": "172.16.0.32/28",
        },
        master_authorized_networks_config={
            "cidr_blocks": [{"cidr_block": "10.0.0.0/8", "display_name": "corp"}]
        },
    )
# planted (when not hardened): public nodes, an unrestricted control plane, no NetworkPolicy
cluster = gcp.container.Cluster("prod", **cluster_args)

nodes = gcp.serviceaccount.Account("gke-nodes", account_id="gke-nodes", display_name="GKE nodes")
for role in ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/artifactregistry.reader"):
    gcp.projects.IAMMember(
        f"gke-nodes-{role.split('/')[1]}",
        project=PROJECT,
        role=role,
        member=nodes.email.apply(lambda e: f"serviceAccount:{e}"),
    )
node_config = {
    "machine_type": "e2-standard-4",
    "image_type": "COS_CONTAINERD",
    "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
    "workload_metadata_config": {"mode": pick("GKE_METADATA", "GCE_METADATA")},  # planted: node metadata
    "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
}
if hardened:
    node_config["service_account"] = nodes.email  # planted (when not hardened): the default SA
gcp.container.NodePool(
    "general",
    cluster=cluster.id,
    location="us-central1",
    node_count=1,
    autoscaling={"min_node_count": 1, "max_node_count": 5},
    node_config=node_config,
    management={"auto_repair": pick(True, False), "auto_upgrade": True},  # planted: no auto-repair
)

ci = gcp.serviceaccount.Account("ci-deployer", account_id="ci-deployer", display_name="CI deployer")
gcp.projects.IAMMember(
    "ci-deployer-gke",
    project=PROJECT,
    role="roles/container.developer",
    member=ci.email.apply(lambda e: f"serviceAccount:{e}"),
)
if not hardened:
    gcp.serviceaccount.Key("ci-deployer-key", service_account_id=ci.name)  # planted: an exported key
else:
    pool = gcp.iam.WorkloadIdentityPool("github", workload_identity_pool_id="github")
    gcp.iam.WorkloadIdentityPoolProvider(
        "github",
        workload_identity_pool_id=pool.workload_identity_pool_id,
        workload_identity_pool_provider_id="github",
        attribute_mapping={"google.subject": "assertion.sub", "attribute.repository": "assertion.repository"},
        attribute_condition="assertion.repository == 'acme/platform'",
        oidc={"issuer_uri": "https://token.actions.githubusercontent.com"},
    )
