"""The checkov checks on our resource types that no rule implements, each with the reason. The
coverage test requires every check of checkov_checks.json to be either named by a rule
(`Rule.checkov`) or listed here, and nothing listed here to be implemented too."""

from __future__ import annotations

CMK = (
    "the data is encrypted at rest with the service's own key; a customer-managed or "
    "customer-supplied key is "
    "a key-management choice, not a defect (the encryption rules require encryption itself)"
)
RECOVERY = (
    "a recovery objective chosen per workload (backup vault plans, replication, locks, failover); the "
    "service-native backups are required by aws-data-store-backups / gcp-sql-backups"
)
OBSERVABILITY = "performance or operational telemetry, not a security or compliance control"
PG_VERBOSITY = (
    "PostgreSQL log verbosity and statistics flags tune diagnostics and can log query text (data); "
    "gcp-sql-postgres-logging asks for the CIS connection and audit flags"
)
HYGIENE = "inventory or naming hygiene with no exposure or data at stake"
LIFECYCLE = "a Terraform lifecycle or deployment-ordering setting with no Pulumi program equivalent"
VERSIONS = (
    "a moving target (the currently supported or patched version); upgrades are governed by "
    "aws-db-auto-minor-upgrade and gcp-gke-release-channel"
)
WAF_CONTENT = (
    "the content of a WAF rule set, managed with the web ACL, not visible from the protected resource"
)
CONTROL_PLANE = (
    "a flag of the control-plane static pods (API server, kubelet, etcd) that managed clusters set; Pulumi "
    "programs do not run the control plane"
)
IMAGE_NAMES = (
    "it matches workloads by image name, a name fragment (judged by what a pod does, not what it is called)"
)

CODEBUILD = (
    "CodeBuild is in scope for its environment variables (aws-no-plaintext-secrets); its artifact, log and "
    "build settings are pipeline configuration outside this pack (privileged mode is what Docker builds need)"
)

REASONS: dict[str, str] = {
    # -- AWS: keys -----------------------------------------------------------------------------------
    **dict.fromkeys(
        [
            "CKV_AWS_119",
            "CKV_AWS_136",
            "CKV_AWS_142",
            "CKV_AWS_145",
            "CKV_AWS_149",
            "CKV_AWS_173",
            "CKV_AWS_182",
            "CKV_AWS_184",
            "CKV_AWS_185",
            "CKV_AWS_186",
            "CKV_AWS_189",
            "CKV_AWS_191",
            "CKV_AWS_224",
            "CKV_AWS_247",
            "CKV_AWS_327",
            "CKV_AWS_337",
            "CKV_AWS_347",
            "CKV_AWS_354",
            "CKV2_AWS_73",
        ],
        CMK,
    ),
    **dict.fromkeys(["CKV_AWS_78", "CKV_AWS_147", "CKV_AWS_311", "CKV_AWS_314", "CKV_AWS_316"], CODEBUILD),
    "CKV_AWS_209": CMK,
    **dict.fromkeys(["CKV_AWS_48", "CKV_AWS_197"], OBSERVABILITY),
    **dict.fromkeys(["CKV_AWS_207", "CKV_AWS_208"], VERSIONS),
    "CKV_AWS_227": "a disabled key is an operational state (nothing can use it), not an exposure",
    "CKV2_AWS_64": "without a policy the key gets the default key policy (the account's IAM decides); "
    "open key policies are caught by aws-kms-no-public-principal",
    # -- AWS: recovery -------------------------------------------------------------------------------
    **dict.fromkeys(
        [
            "CKV2_AWS_8",
            "CKV2_AWS_9",
            "CKV2_AWS_18",
            "CKV_AWS_143",
            "CKV_AWS_144",
            "CKV_AWS_310",
            "CKV_AWS_326",
        ],
        RECOVERY,
    ),
    "CKV_AWS_318": "three dedicated master nodes is an availability sizing choice",
    "CKV2_AWS_59": "dedicated master nodes are an availability sizing choice",
    # -- AWS: telemetry ------------------------------------------------------------------------------
    **dict.fromkeys(
        [
            "CKV_AWS_50",
            "CKV_AWS_73",
            "CKV_AWS_115",
            "CKV_AWS_118",
            "CKV_AWS_120",
            "CKV_AWS_126",
            "CKV_AWS_135",
            "CKV_AWS_152",
            "CKV_AWS_319",
            "CKV_AWS_353",
            "CKV2_AWS_4",
            "CKV2_AWS_16",
        ],
        OBSERVABILITY,
    ),
    "CKV2_AWS_27": "query logging records statement text (often data); aws-db-logs-exported asks for the "
    "engine's logs",
    "CKV2_AWS_30": "query logging records statement text (often data); aws-db-logs-exported asks for the "
    "engine's logs",
    "CKV2_AWS_10": "the trail's delivery to CloudWatch Logs is a monitoring pipeline choice; the "
    "trail itself "
    "is judged by aws-cloudtrail-integrity",
    "CKV_AWS_252": "an SNS notification per log file is a monitoring pipeline choice",
    "CKV_AWS_234": "certificate transparency logging stays on unless opted out; opting out hides a "
    "certificate, it exposes nothing",
    "CKV_AWS_223": "ECS Exec logging matters only where ECS Exec is enabled; exec access itself is an IAM "
    "decision",
    "CKV2_AWS_39": "Route 53 query logging is DNS telemetry",
    # -- AWS: hygiene and lifecycle ------------------------------------------------------------------
    **dict.fromkeys(
        [
            "CKV_AWS_23",
            "CKV2_AWS_1",
            "CKV2_AWS_5",
            "CKV2_AWS_19",
            "CKV2_AWS_23",
            "CKV2_AWS_60",
            "CKV_AWS_313",
            "CKV_AWS_362",
            "CKV2_AWS_61",
            "CKV_AWS_300",
            "CKV2_AWS_62",
            "CKV_AWS_216",
            "CKV_AWS_320",
            "CKV_AWS_248",
        ],
        HYGIENE,
    ),
    **dict.fromkeys(["CKV_AWS_233", "CKV_AWS_237"], LIFECYCLE),
    **dict.fromkeys(["CKV_AWS_250", "CKV_AWS_388", "CKV_AWS_332", "CKV_AWS_339"], VERSIONS),
    "CKV_AWS_261": "a target group without an explicit health check gets the provider's default one",
    "CKV_AWS_305": "a default root object is content configuration; private S3 origins are required by "
    "aws-cloudfront-origin-protected",
    "CKV2_AWS_32": "security response headers are set by the application or a headers policy; a hardening "
    "choice per site",
    "CKV2_AWS_42": "the default certificate only serves *.cloudfront.net names; viewer TLS "
    "versions are judged "
    "by aws-cloudfront-viewer-https",
    "CKV_AWS_374": "geo restriction is a business decision, not a security control",
    "CKV2_AWS_71": "wildcard certificates are a certificate-management choice; they grant nothing",
    # -- AWS: compute and network --------------------------------------------------------------------
    "CKV_AWS_116": "a dead-letter queue matters only for asynchronous invocations; failure handling is a "
    "design choice per function",
    "CKV_AWS_117": "a function needs a VPC only to reach private resources; outside one it exposes nothing",
    "CKV_AWS_272": "code signing needs a signing profile and pipeline; a supply-chain programme, not a "
    "resource setting a reviewer blocks on",
    "CKV2_AWS_41": "an instance without a role has no AWS credentials at all",
    "CKV_AWS_341": "a hop limit of 2 is what containers on EC2 and EKS nodes need to reach IMDSv2; IMDSv2 "
    "itself is required by aws-ec2-imdsv2",
    "CKV2_AWS_35": "how private subnets reach the internet (NAT gateway, egress-only, proxy) is an "
    "architecture choice",
    "CKV2_AWS_44": "peering routes follow the peered networks' design; exposure is judged on security groups",
    "CKV_AWS_382": "open egress through NAT is the reviewed norm; egress filtering is defence in depth "
    "decided per workload",
    "CKV_AWS_154": "EC2-Classic is retired: every Redshift cluster runs in a VPC",
    "CKV_AWS_321": "enhanced VPC routing controls COPY/UNLOAD egress paths; a data-flow design choice",
    "CKV_AWS_378": "targets behind a TLS-terminating load balancer speak HTTP inside the VPC by design; "
    "listeners are judged by aws-alb-https-only",
    "CKV2_AWS_52": "fine-grained access control is one of the domain's authentication options; public "
    "domains are caught by aws-data-store-not-public",
    # -- AWS: edge -----------------------------------------------------------------------------------
    "CKV2_AWS_29": "WAF for API Gateway is defence in depth; unauthenticated routes are caught by "
    "aws-apigw-auth",
    **dict.fromkeys(["CKV2_AWS_47", "CKV2_AWS_76", "CKV2_AWS_77"], WAF_CONTENT),
    "CKV2_AWS_51": "client certificates authenticate API Gateway to a backend (mTLS); callers' authorization "
    "is judged by aws-apigw-auth",
    "CKV2_AWS_53": "request validation is input hygiene of the API definition",
    # -- AWS: policies -------------------------------------------------------------------------------
    "CKV_AWS_72": "'sqs:*' to a named principal grants no one new; queues open to everyone are caught by "
    "aws-sqs-no-public-policy",
    "CKV_AWS_385": "cross-account topic access is usually intended (named accounts); topics open to everyone "
    "are caught by aws-resource-policy-not-public",
    "CKV_AWS_93": "a policy that locks out all but root is an operability trap, not an exposure",
    # -- GCP -----------------------------------------------------------------------------------------
    **dict.fromkeys(
        ["CKV_GCP_37", "CKV_GCP_38", "CKV_GCP_80", "CKV_GCP_81", "CKV_GCP_83", "CKV_GCP_84"], CMK
    ),
    **dict.fromkeys(
        [
            "CKV_GCP_55",
            "CKV_GCP_56",
            "CKV_GCP_57",
            "CKV_GCP_109",
            "CKV_GCP_111",
            "CKV2_GCP_13",
            "CKV2_GCP_14",
            "CKV2_GCP_15",
            "CKV2_GCP_16",
            "CKV2_GCP_17",
        ],
        PG_VERBOSITY,
    ),
    **dict.fromkeys(["CKV2_GCP_4", "CKV2_GCP_20"], RECOVERY),
    **dict.fromkeys(["CKV_GCP_79"], VERSIONS),
    "CKV_GCP_21": "cluster labels are cost allocation; label policy is the org's (gcp-required-labels)",
    "CKV_GCP_23": "VPC-native (alias IP) is the default and only mode for new clusters",
    "CKV_GCP_24": "PodSecurityPolicy was removed in GKE 1.25; pod security is judged per "
    "workload by the k8s-* "
    "rules",
    "CKV_GCP_61": "intranode visibility is network telemetry",
    "CKV_GCP_65": "Google Groups for RBAC is an organisation identity setup outside the cluster resource",
    "CKV_GCP_66": "Binary Authorization needs an attestation pipeline; a supply-chain programme, not a "
    "resource setting a reviewer blocks on",
    "CKV_GCP_73": WAF_CONTENT,
    "CKV_GCP_82": "Terraform's prevent_destroy has no property; Pulumi's protect option and the key's "
    "scheduled-destruction delay keep a key from immediate loss",
    "CKV_GCP_106": "HTTP from the internet is what public load balancers and web servers serve; "
    "administration and data ports are caught by gcp-firewall-no-public-admin-ports",
    "CKV_GCP_123": "inline node pools versus separate NodePool resources is a code-organisation choice; each "
    "pool is judged where it is defined",
    "CKV2_GCP_18": "a VPC without firewall rules denies all ingress (GCP's implied rule); exposure is judged "
    "on the rules that exist",
    # -- Kubernetes ----------------------------------------------------------------------------------
    "CKV_K8S_15": "with images pinned by digest or immutable tag (k8s-image-pinned), IfNotPresent pulls the "
    "same image; Always adds registry load and an availability dependency",
    **dict.fromkeys(["CKV_K8S_33", "CKV_K8S_34", "CKV_K8S_44", "CKV_K8S_45", "CKV_K8S_159"], IMAGE_NAMES),
    "CKV_K8S_35": "env from a Secret (secretKeyRef) is the accepted pattern; literal credentials "
    "are caught by "
    "k8s-no-literal-secrets-in-env",
    "CKV_K8S_40": "UID collisions matter only without user namespaces; running as root is caught by "
    "k8s-run-as-non-root",
    "CKV_K8S_43": "k8s-image-pinned accepts an immutable version tag as well as a digest",
    **dict.fromkeys(
        [
            "CKV_K8S_68",
            "CKV_K8S_69",
            "CKV_K8S_70",
            "CKV_K8S_71",
            "CKV_K8S_72",
            "CKV_K8S_73",
            "CKV_K8S_74",
            "CKV_K8S_75",
            "CKV_K8S_77",
            "CKV_K8S_79",
            "CKV_K8S_80",
            "CKV_K8S_81",
            "CKV_K8S_82",
            "CKV_K8S_83",
            "CKV_K8S_84",
            "CKV_K8S_85",
            "CKV_K8S_86",
            "CKV_K8S_88",
            "CKV_K8S_89",
            "CKV_K8S_90",
            "CKV_K8S_91",
            "CKV_K8S_92",
            "CKV_K8S_93",
            "CKV_K8S_94",
            "CKV_K8S_95",
            "CKV_K8S_96",
            "CKV_K8S_97",
            "CKV_K8S_99",
            "CKV_K8S_100",
            "CKV_K8S_102",
            "CKV_K8S_104",
            "CKV_K8S_105",
            "CKV_K8S_106",
            "CKV_K8S_107",
            "CKV_K8S_108",
            "CKV_K8S_110",
            "CKV_K8S_111",
            "CKV_K8S_112",
            "CKV_K8S_113",
            "CKV_K8S_114",
            "CKV_K8S_115",
            "CKV_K8S_116",
            "CKV_K8S_117",
            "CKV_K8S_118",
            "CKV_K8S_119",
            "CKV_K8S_121",
            "CKV_K8S_138",
            "CKV_K8S_139",
            "CKV_K8S_140",
            "CKV_K8S_141",
            "CKV_K8S_143",
            "CKV_K8S_144",
            "CKV_K8S_145",
            "CKV_K8S_146",
            "CKV_K8S_147",
            "CKV_K8S_148",
            "CKV_K8S_149",
            "CKV_K8S_151",
        ],
        CONTROL_PLANE,
    ),
}
