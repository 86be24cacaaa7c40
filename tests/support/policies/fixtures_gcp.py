"""GCP resources of the compliant baseline beyond the Skyfleet site (storage, VMs, Cloud SQL,
GKE, functions, keys), configured the way a careful production engineer would, and the
one-property flips that break each rule on them."""

from __future__ import annotations

from skyfleet.plan import PlannedResource
from tests.support.policies.kit import DELETE, Flip, append, chain, res, setp

PROJECT = "skyfleet-prod"
SA = f"serviceAccount:app@{PROJECT}.iam.gserviceaccount.com"
PG_FLAGS = [
    {"name": n, "value": "on"}
    for n in (
        "log_connections",
        "log_disconnections",
        "log_checkpoints",
        "log_lock_waits",
        "log_hostname",
        "cloudsql.enable_pgaudit",
    )
]


def extra() -> list[PlannedResource]:
    return [
        # -- storage ---------------------------------------------------------------------------
        res(
            "gcp:storage/bucket:Bucket",
            "assets",
            {
                "location": "EU",
                "uniformBucketLevelAccess": True,
                "publicAccessPrevention": "enforced",
                "versioning": {"enabled": True},
                "logging": {"logBucket": "gcs-logs-id"},
                "forceDestroy": False,
            },
            id_="assets-id",
        ),
        res(
            "gcp:storage/bucket:Bucket",
            "gcs-logs",
            {
                "location": "europe-west1",
                "uniformBucketLevelAccess": True,
                "publicAccessPrevention": "enforced",
                "versioning": {"enabled": True},
            },
            id_="gcs-logs-id",
        ),
        res(
            "gcp:storage/bucketIAMMember:BucketIAMMember",
            "assets-reader",
            {"bucket": "assets-id", "role": "roles/storage.objectViewer", "member": SA},
        ),
        # -- network ---------------------------------------------------------------------------
        res(
            "gcp:compute/firewall:Firewall",
            "iap-ssh",
            {
                "network": "vpc-id",
                "direction": "INGRESS",
                "sourceRanges": ["35.235.240.0/20"],
                "allows": [{"protocol": "tcp", "ports": ["22"]}],
                "targetTags": ["ssh"],
            },
        ),
        res(
            "gcp:compute/subnetwork:Subnetwork",
            "subnet",
            {
                "network": "vpc-id",
                "region": "europe-west1",
                "ipCidrRange": "10.10.0.0/20",
                "privateIpGoogleAccess": True,
                "logConfig": {"aggregationInterval": "INTERVAL_5_SEC"},
            },
        ),
        res(
            "gcp:compute/targetHttpProxy:TargetHttpProxy",
            "http-proxy",
            {"urlMap": "redirect-id"},
        ),
        res(
            "gcp:compute/uRLMap:URLMap",
            "redirect",
            {"defaultUrlRedirect": {"httpsRedirect": True, "stripQuery": False}},
            id_="redirect-id",
        ),
        res(
            "gcp:compute/globalForwardingRule:GlobalForwardingRule",
            "http-rule",
            {
                "target": "http-proxy-id",
                "portRange": "80",
                "loadBalancingScheme": "EXTERNAL_MANAGED",
                "labels": {"owner": "platform", "environment": "prod", "cost_center": "cc-1", "app": "agent"},
            },
        ),
        res(
            "gcp:dns/managedZone:ManagedZone",
            "zone",
            {"dnsName": "agents.example.com.", "dnssecConfig": {"state": "on"}},
        ),
        # -- compute ---------------------------------------------------------------------------
        res(
            "gcp:compute/instance:Instance",
            "vm",
            {
                "zone": "europe-west1-b",
                "machineType": "e2-small",
                "networkInterfaces": [{"network": "vpc-id", "subnetwork": "subnet-id"}],
                "serviceAccount": {
                    "email": f"vm@{PROJECT}.iam.gserviceaccount.com",
                    "scopes": ["cloud-platform"],
                },
                "metadata": {"enable-oslogin": "TRUE"},
                "shieldedInstanceConfig": {
                    "enableSecureBoot": True,
                    "enableVtpm": True,
                    "enableIntegrityMonitoring": True,
                },
                "metadataStartupScript": "#!/bin/bash\nset -eu\nsystemctl start app\n",
            },
        ),
        res(
            "gcp:cloudfunctionsv2/function:Function",
            "resize",
            {
                "location": "europe-west1",
                "serviceConfig": {
                    "ingressSettings": "ALLOW_INTERNAL_ONLY",
                    "serviceAccountEmail": f"resize@{PROJECT}.iam.gserviceaccount.com",
                    "environmentVariables": {"BUCKET": "assets-id", "PASSWORD_MIN_LENGTH": "12"},
                },
            },
        ),
        res(
            "gcp:cloudfunctions/function:Function",
            "hook",
            {
                "region": "europe-west1",
                "runtime": "python312",
                "triggerHttp": True,
                "httpsTriggerSecurityLevel": "SECURE_ALWAYS",
                "ingressSettings": "ALLOW_INTERNAL_AND_GCLB",
                "serviceAccountEmail": f"hook@{PROJECT}.iam.gserviceaccount.com",
            },
        ),
        res(
            "gcp:container/cluster:Cluster",
            "gke",
            {
                "location": "europe-west1",
                "removeDefaultNodePool": True,
                "initialNodeCount": 1,
                "privateClusterConfig": {
                    "enablePrivateNodes": True,
                    "enablePrivateEndpoint": False,
                    "masterIpv4CidrBlock": "172.16.0.0/28",
                },
                "masterAuthorizedNetworksConfig": {"cidrBlocks": [{"cidrBlock": "10.0.0.0/8"}]},
                "datapathProvider": "ADVANCED_DATAPATH",
                "workloadIdentityConfig": {"workloadPool": f"{PROJECT}.svc.id.goog"},
                "releaseChannel": {"channel": "REGULAR"},
                "enableShieldedNodes": True,
            },
            id_="gke-id",
        ),
        res(
            "gcp:container/nodePool:NodePool",
            "gke-pool",
            {
                "cluster": "gke-id",
                "location": "europe-west1",
                "nodeConfig": {
                    "serviceAccount": f"nodes@{PROJECT}.iam.gserviceaccount.com",
                    "workloadMetadataConfig": {"mode": "GKE_METADATA"},
                    "shieldedInstanceConfig": {"enableSecureBoot": True, "enableIntegrityMonitoring": True},
                    "imageType": "COS_CONTAINERD",
                },
                "management": {"autoRepair": True, "autoUpgrade": True},
            },
        ),
        # -- data ------------------------------------------------------------------------------
        res(
            "gcp:sql/databaseInstance:DatabaseInstance",
            "db",
            {
                "region": "europe-west1",
                "databaseVersion": "POSTGRES_16",
                "deletionProtection": True,
                "settings": {
                    "tier": "db-custom-2-7680",
                    "ipConfiguration": {
                        "ipv4Enabled": False,
                        "privateNetwork": "vpc-id",
                        "sslMode": "ENCRYPTED_ONLY",
                    },
                    "backupConfiguration": {"enabled": True, "pointInTimeRecoveryEnabled": True},
                    "databaseFlags": PG_FLAGS,
                },
            },
        ),
        res(
            "gcp:sql/user:User",
            "app-user",
            {"instance": "db-id", "name": "app", "password": "f0R7rT2yWq9zLm3VbN8cX1kP"},
        ),
        # -- identity and keys -------------------------------------------------------------------
        res(
            "gcp:kms/cryptoKey:CryptoKey",
            "key",
            {"keyRing": "ring-id", "rotationPeriod": "7776000s", "purpose": "ENCRYPT_DECRYPT"},
        ),
        res(
            "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember",
            "key-user",
            {"cryptoKeyId": "key-id", "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter", "member": SA},
        ),
        res(
            "gcp:serviceaccount/key:Key",
            "hsm-key",
            {"serviceAccountId": "app", "publicKeyData": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"},
        ),
    ]


def _env(name: str, value: str) -> Flip:
    return append("template.containers.0.envs", {"name": name, "value": value})


# (rule, resource, flip, label)
CASES: list[tuple[str, str, Flip, str]] = [
    ("gcp-storage-no-public-access", "assets-reader", setp("member", "allUsers"), "all users"),
    ("gcp-storage-uniform-access", "assets", setp("uniformBucketLevelAccess", False), "acls"),
    (
        "gcp-storage-public-access-prevention",
        "assets",
        setp("publicAccessPrevention", "inherited"),
        "inherited",
    ),
    ("gcp-storage-versioning", "assets", setp("versioning.enabled", False), "no versions"),
    ("gcp-storage-access-logging", "assets", setp("logging", DELETE), "no logs"),
    ("allowed-regions", "assets", setp("location", "ASIA"), "asia multi-region"),
    ("stateful-deletion-protection", "assets", setp("forceDestroy", True), "force destroy"),
    ("gcp-firewall-no-public-admin-ports", "iap-ssh", setp("sourceRanges", ["0.0.0.0/0"]), "ssh world"),
    (
        "gcp-firewall-no-public-admin-ports",
        "iap-ssh",
        chain(setp("sourceRanges", DELETE), setp("allows.0.protocol", "all"), setp("allows.0.ports", DELETE)),
        "no source all",
    ),
    ("gcp-subnet-flow-logs", "subnet", setp("logConfig", DELETE), "no flow logs"),
    ("gcp-subnet-private-google-access", "subnet", setp("privateIpGoogleAccess", False), "no pga"),
    (
        "gcp-lb-http-redirect-only",
        "redirect",
        chain(setp("defaultUrlRedirect", DELETE), setp("defaultService", "backend-id")),
        "serves http",
    ),
    ("gcp-dns-dnssec", "zone", setp("dnssecConfig.state", "off"), "no dnssec"),
    ("gcp-compute-ssh-access-controlled", "vm", setp("metadata", {"enable-oslogin": "false"}), "oslogin off"),
    ("gcp-compute-no-serial-port", "vm", setp("metadata.serial-port-enable", "TRUE"), "serial"),
    (
        "gcp-compute-dedicated-service-account",
        "vm",
        setp("serviceAccount.email", "123456789-compute@developer.gserviceaccount.com"),
        "default sa",
    ),
    ("gcp-compute-no-public-ip", "vm", setp("networkInterfaces.0.accessConfigs", [{}]), "external ip"),
    ("gcp-compute-no-ip-forwarding", "vm", setp("canIpForward", True), "forwarding"),
    (
        "gcp-compute-shielded-vm",
        "vm",
        setp("shieldedInstanceConfig.enableSecureBoot", False),
        "no secure boot",
    ),
    (
        "gcp-no-plaintext-secrets",
        "vm",
        setp("metadataStartupScript", "#!/bin/bash\nexport API_TOKEN=9f8e7d6c5b\n"),
        "startup script",
    ),
    (
        "gcp-no-plaintext-secrets",
        "api",
        _env("STRIPE_KEY", "sk_live_51Habc0123456789ABCDEFGH"),
        "run env key",
    ),
    (
        "gcp-no-plaintext-secrets",
        "resize",
        setp("serviceConfig.environmentVariables.DB_PASSWORD", "hunter2"),
        "function env",
    ),
    (
        "gcp-run-ingress-restricted",
        "resize",
        setp("serviceConfig.ingressSettings", "ALLOW_ALL"),
        "function all",
    ),
    (
        "gcp-run-dedicated-service-account",
        "resize",
        setp("serviceConfig.serviceAccountEmail", DELETE),
        "function default sa",
    ),
    ("gcp-functions-https-only", "hook", setp("httpsTriggerSecurityLevel", "SECURE_OPTIONAL"), "http"),
    ("gcp-gke-private-nodes", "gke", setp("privateClusterConfig.enablePrivateNodes", False), "public nodes"),
    (
        "gcp-gke-control-plane-restricted",
        "gke",
        setp("masterAuthorizedNetworksConfig.cidrBlocks.0.cidrBlock", "0.0.0.0/0"),
        "open master",
    ),
    ("gcp-gke-no-legacy-auth", "gke", setp("enableLegacyAbac", True), "abac"),
    ("gcp-gke-network-policy", "gke", setp("datapathProvider", "LEGACY_DATAPATH"), "no netpol"),
    (
        "gcp-gke-workload-identity",
        "gke-pool",
        setp("nodeConfig.workloadMetadataConfig.mode", "GCE_METADATA"),
        "node metadata",
    ),
    ("gcp-gke-workload-identity", "gke", setp("workloadIdentityConfig", DELETE), "no pool"),
    ("gcp-gke-node-service-account", "gke-pool", setp("nodeConfig.serviceAccount", DELETE), "default sa"),
    ("gcp-gke-node-service-account", "gke", setp("removeDefaultNodePool", False), "default pool"),
    ("gcp-gke-node-auto-repair-upgrade", "gke-pool", setp("management.autoUpgrade", False), "no upgrades"),
    ("gcp-gke-logging-monitoring", "gke", setp("loggingService", "none"), "no logging"),
    ("gcp-gke-release-channel", "gke", setp("releaseChannel", DELETE), "no channel"),
    (
        "gcp-gke-shielded-nodes",
        "gke-pool",
        setp("nodeConfig.shieldedInstanceConfig.enableSecureBoot", False),
        "no secure boot",
    ),
    ("gcp-gke-cos-image", "gke-pool", setp("nodeConfig.imageType", "UBUNTU_CONTAINERD"), "ubuntu"),
    ("gcp-sql-not-public", "db", setp("settings.ipConfiguration.ipv4Enabled", True), "public ip"),
    (
        "gcp-sql-not-public",
        "db",
        chain(
            setp("settings.ipConfiguration.ipv4Enabled", True),
            setp("settings.ipConfiguration.authorizedNetworks", [{"value": "0.0.0.0/0"}]),
        ),
        "open network",
    ),
    (
        "gcp-sql-ssl-required",
        "db",
        setp("settings.ipConfiguration.sslMode", "ALLOW_UNENCRYPTED_AND_ENCRYPTED"),
        "plain",
    ),
    ("gcp-sql-backups", "db", setp("settings.backupConfiguration.enabled", False), "no backups"),
    (
        "gcp-sql-secure-flags",
        "db",
        chain(
            setp("databaseVersion", "MYSQL_8_0"),
            setp("settings.databaseFlags", [{"name": "local_infile", "value": "on"}]),
        ),
        "local infile",
    ),
    ("gcp-sql-postgres-logging", "db", setp("settings.databaseFlags", []), "no log flags"),
    ("gcp-sql-no-open-root", "app-user", chain(setp("name", "root"), setp("host", "%")), "root anywhere"),
    ("database-password-strength", "app-user", setp("password", "changeme"), "guessable"),
    ("stateful-deletion-protection", "db", setp("deletionProtection", False), "cloud sql"),
    ("gcp-kms-key-rotation", "key", setp("rotationPeriod", "31536000s"), "yearly"),
    ("gcp-iam-no-public-members", "key-user", setp("member", "allAuthenticatedUsers"), "public key"),
    ("gcp-iam-no-user-managed-sa-keys", "hsm-key", setp("publicKeyData", DELETE), "exported key"),
    (
        "gcp-iam-no-default-sa-grants",
        "api-trace",
        setp("member", "serviceAccount:1-compute@developer.gserviceaccount.com"),
        "default sa",
    ),
    ("gcp-iam-sa-no-admin-roles", "api-trace", setp("role", "roles/storage.admin"), "admin role"),
]
