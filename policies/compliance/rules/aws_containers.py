"""Container platforms: EKS clusters and node groups, ECR repositories (tags, scanning, who may
pull). Registry-wide scanning set by aws.ecr.RegistryScanningConfiguration counts for every
repository."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, Severity

from ._net import is_world
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, is_false, norm, truthy

EKS = ("aws:eks/cluster:Cluster",)
NODE_GROUP = ("aws:eks/nodeGroup:NodeGroup",)
REPOSITORY = ("aws:ecr/repository:Repository",)
REGISTRY_SCANNING = ("aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration",)
CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")


def _endpoint(s: Subject) -> Iterator[str]:
    vpc = s.props.get("vpcConfig") or {}
    public = get_path(vpc, "endpointPublicAccess")
    if is_false(public):
        return
    cidrs = [str(c) for c in as_list(get_path(vpc, "publicAccessCidrs"))] or ["0.0.0.0/0"]
    open_to = [c for c in cidrs if is_world(c)]
    if open_to:
        yield (
            f"the API server endpoint is public to {', '.join(open_to)} "
            f"(endpointPublicAccess {'unset, default true' if public is None else public})"
        )


def _secrets_encryption(s: Subject) -> Iterator[str]:
    resources = [
        norm(r) for c in as_list(s.props.get("encryptionConfig")) for r in as_list(get_path(c, "resources"))
    ]
    if "secrets" not in resources:
        yield "encryptionConfig does not envelope-encrypt 'secrets' with a KMS key"


def _control_plane_logs(s: Subject) -> Iterator[str]:
    enabled = {norm(t) for t in as_list(s.props.get("enabledClusterLogTypes"))}
    missing = [t for t in CONTROL_PLANE_LOGS if t not in enabled]
    if missing:
        yield f"control plane log types {', '.join(missing)} are not enabled"


def _node_ssh(s: Subject) -> Iterator[str]:
    remote = s.props.get("remoteAccess")
    if remote and get_path(remote, "ec2SshKey") and not as_list(get_path(remote, "sourceSecurityGroupIds")):
        yield "remoteAccess gives an SSH key with no sourceSecurityGroupIds: port 22 opens to 0.0.0.0/0"


def _immutable(s: Subject) -> Iterator[str]:
    mutability = norm(s.props.get("imageTagMutability") or "MUTABLE")
    if not mutability.startswith("immutable"):
        yield f"imageTagMutability is {mutability.upper()}: a tag can be re-pointed at another image"


def _scanning(view: StackView) -> Iterator[tuple[str, str | None]]:
    registry = any(
        norm(c.props.get("scanType")) == "enhanced" or as_list(c.props.get("rules"))
        for c in view.of_type(*REGISTRY_SCANNING)
    )
    if registry:
        return
    for repo in view.of_type(*REPOSITORY):
        if not truthy(get_path(repo.props, "imageScanningConfiguration", "scanOnPush")):
            yield f"repository {repo.name!r} does not scan images on push", repo.urn


RULES = [
    Rule(
        "aws-eks-endpoint-restricted",
        "EKS API server endpoints are private or limited to known CIDRs.",
        Severity.HIGH,
        Controls(cis=("EKS-5.4.2",), nist=("SC-7", "AC-3"), soc2=("CC6.6",), pci=("1.4.1",)),
        "Set vpc_config.endpoint_public_access=False (endpoint_private_access=True), or public_access_cidrs "
        "to the office/VPN ranges.",
        EKS,
        _endpoint,
        checkov=("CKV_AWS_38", "CKV_AWS_39"),
    ),
    Rule(
        "aws-eks-secrets-encryption",
        "EKS clusters envelope-encrypt Kubernetes secrets with a KMS key.",
        Severity.MEDIUM,
        Controls(cis=("EKS-5.3.1",), nist=("SC-28", "SC-12"), soc2=("CC6.1",), pci=("3.5.1",)),
        "Add encryption_config={resources: ['secrets'], provider: {key_arn: <KMS key>}}.",
        EKS,
        _secrets_encryption,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_58",),
    ),
    Rule(
        "aws-eks-control-plane-logging",
        "EKS clusters send API, audit and authenticator logs to CloudWatch.",
        Severity.LOW,
        Controls(cis=("EKS-2.1.1",), nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set enabled_cluster_log_types=['api', 'audit', 'authenticator', 'controllerManager', 'scheduler'].",
        EKS,
        _control_plane_logs,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_37",),
    ),
    Rule(
        "aws-eks-nodegroup-ssh-restricted",
        "EKS node groups with an SSH key limit SSH to named security groups.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-17"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Drop remote_access (use SSM), or set remote_access.source_security_group_ids.",
        NODE_GROUP,
        _node_ssh,
        checkov=("CKV_AWS_100",),
    ),
    Rule(
        "aws-ecr-immutable-tags",
        "ECR repositories have immutable image tags.",
        Severity.LOW,
        Controls(nist=("CM-2", "SI-7"), soc2=("CC8.1",), pci=("6.3.2",)),
        "Set image_tag_mutability='IMMUTABLE' and deploy by digest.",
        REPOSITORY,
        _immutable,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_51",),
    ),
    Rule(
        "aws-ecr-scan-on-push",
        "ECR images are scanned for vulnerabilities on push (per repository or registry-wide).",
        Severity.LOW,
        Controls(nist=("RA-5", "SI-2"), soc2=("CC7.1",), pci=("6.3.1",)),
        "Set image_scanning_configuration={scan_on_push: True}, or an aws.ecr.RegistryScanningConfiguration.",
        stack_check=_scanning,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_163",),
    ),
]
