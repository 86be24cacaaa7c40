# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""A web app on Compute Engine: a VPC with a private subnet, a VM behind IAP for SSH, Cloud SQL
for PostgreSQL on private IP, and a media bucket. `hardened` picks the careful settings; the
others are planted violations (planted.yaml)."""

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

config = pulumi.Config()
hardened = config.require_bool("hardened")
PROJECT = "acme-web-prod"
labels = {"owner": "web", "environment": "prod", "cost-center": "cc-11", "app": "media"}


def pick(good, bad):
    return good if hardened else bad


network = gcp.compute.Network("vpc", auto_create_subnetworks=False)
subnet = gcp.compute.Subnetwork(
    "app",
    network=network.id,
    region="europe-west4",
    ip_cidr_range="10.40.0.0/20",
    private_ip_google_access=True,
    log_config={
        "aggregation_interval": "INTERVAL_10_MIN",
        "flow_sampling": 0.5,
        "metadata": "INCLUDE_ALL_METADATA",
    },
)
gcp.compute.Firewall(
    "allow-ssh",
    network=network.id,
    direction="INGRESS",
    allows=[{"protocol": "tcp", "ports": ["22"]}],
    source_ranges=pick(["35.235.240.0/20"], ["0.0.0.0/0"]),  # planted: SSH from anywhere, not only IAP
    target_tags=["web"],
)
gcp.compute.Firewall(
    "allow-lb",
    network=network.id,
    direction="INGRESS",
    allows=[{"protocol": "tcp", "ports": ["8080"]}],
    source_ranges=["130.211.0.0/22", "35.191.0.0/16"],
    target_tags=["web"],
)
gcp.compute.ProjectMetadataItem("oslogin", key="enable-oslogin", value="TRUE")

vm_account = gcp.serviceaccount.Account("web-vm", account_id="web-vm", display_name="web VM")
vm_email = vm_account.email if hardened else "123456789012-compute@developer.gserviceaccount.com"
metadata = {"block-project-ssh-keys": "true"}
if not hardened:
    metadata["serial-port-enable"] = "TRUE"  # planted: interactive serial console
gcp.compute.Instance(
    "web",
    zone="europe-west4-a",
    machine_type="e2-standard-2",
    tags=["web"],
    boot_disk={"initialize_params": {"image": "debian-cloud/debian-12"}},
    network_interfaces=[
        {
            "subnetwork": subnet.id,
            # planted: an external IP on the VM
            "access_configs": [] if hardened else [{}],
        }
    ],
    service_account={"email": vm_email, "scopes": ["cloud-platform"]},  # planted: the default service account
    metadata=metadata,
    shielded_instance_config={
        "enable_secure_boot": True,
        "enable_vtpm": True,
        "enable_integrity_monitoring": True,
    },
    labels=labels,
)

private_range = gcp.compute.GlobalAddress(
    "sql-range", purpose="VPC_PEERING", address_type="INTERNAL", prefix_length=20, network=network.id
)
gcp.servicenetworking.Connection(
    "sql-peering",
    network=network.id,
    service="servicenetworking.googleapis.com",
    reserved_peering_ranges=[private_range.name],
)
ip_configuration = {
    "ipv4_enabled": pick(False, True),
    "private_network": network.id,
    "ssl_mode": pick("ENCRYPTED_ONLY", "ALLOW_UNENCRYPTED_AND_ENCRYPTED"),  # planted: plaintext allowed
}
if not hardened:
    ip_configuration["authorized_networks"] = [{"name": "anywhere", "value": "0.0.0.0/0"}]  # planted: open
db = gcp.sql.DatabaseInstance(
    "db",
    region="europe-west4",
    database_version="POSTGRES_16",
    deletion_protection=True,
    settings={
        "tier": "db-custom-2-7680",
        "availability_type": "REGIONAL",
        "ip_configuration": ip_configuration,
        "backup_configuration": {"enabled": pick(True, False), "point_in_time_recovery_enabled": hardened},
        "database_flags": [
            {"name": f, "value": "on"}
            for f in (
                "log_connections",
                "log_disconnections",
                "log_checkpoints",
                "log_lock_waits",
                "log_hostname",
                "cloudsql.enable_pgaudit",
            )
        ],
        "user_labels": labels,
    },
)
password = random.RandomPassword("db-password", length=32, special=False)
gcp.sql.User("app", instance=db.name, name="media", password=password.result)

logs = gcp.storage.Bucket(
    "access-logs",
    location="EUROPE-WEST4",
    uniform_bucket_level_access=True,
    public_access_prevention="enforced",
    versioning={"enabled": True},
    labels=labels,
)
media = gcp.storage.Bucket(
    "media",
    location="EU",
    uniform_bucket_level_access=pick(True, False),  # planted: object ACLs allowed
    public_access_prevention=pick("enforced", "inherited"),
    versioning={"enabled": True},
    logging={"log_bucket": logs.name},
    labels=labels,
)
gcp.storage.BucketIAMMember(
    "media-readers",
    bucket=media.name,
    role="roles/storage.objectViewer",
    member=pick(vm_account.email.apply(lambda e: f"serviceAccount:{e}"), "allUsers"),  # planted: public
)
gcp.projects.IAMMember(
    "web-vm-logging",
    project=PROJECT,
    role=pick("roles/logging.logWriter", "roles/editor"),  # planted: a basic role
    member=vm_account.email.apply(lambda e: f"serviceAccount:{e}"),
)
