"""Resource policies outside S3, SQS and KMS (which have their own rules): SNS topics, ECR
repositories, Secrets Manager secrets, EFS file systems, event buses, Backup vaults and Lambda
layers must not grant everyone; SNS topics are encrypted."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._docs import public_grants
from ._rule import Controls, Rule, Subject

# type -> the property holding its resource policy document
POLICY_DOCS = {
    "aws:sns/topic:Topic": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
    "aws:ecr/repositoryPolicy:RepositoryPolicy": "policy",
    "aws:ecr/registryPolicy:RegistryPolicy": "policy",
    "aws:secretsmanager/secret:Secret": "policy",
    "aws:secretsmanager/secretPolicy:SecretPolicy": "policy",
    "aws:efs/fileSystemPolicy:FileSystemPolicy": "policy",
    "aws:cloudwatch/eventBusPolicy:EventBusPolicy": "policy",
    "aws:backup/vaultPolicy:VaultPolicy": "policy",
    "aws:glacier/vault:Vault": "accessPolicy",
}
LAYER_PERMISSION = ("aws:lambda/layerVersionPermission:LayerVersionPermission",)
TOPIC = ("aws:sns/topic:Topic",)


def _public(s: Subject) -> Iterator[str]:
    if s.type in LAYER_PERMISSION:
        if str(s.props.get("principal") or "").strip() == "*" and not s.props.get("organizationId"):
            yield "the layer version may be used by every AWS account (principal '*')"
        return
    yield from public_grants(s.props.get(POLICY_DOCS[s.type]), "resource policy")


def _sns_encrypted(s: Subject) -> Iterator[str]:
    if not s.props.get("kmsMasterKeyId"):
        yield "kmsMasterKeyId is not set: messages are stored unencrypted"


RULES = [
    Rule(
        "aws-resource-policy-not-public",
        "Resource policies (SNS, ECR, Secrets Manager, EFS, EventBridge, Backup, Glacier, Lambda layers) do "
        "not grant everyone.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Name the exact accounts, roles or services in Principal, or add aws:SourceArn / aws:SourceAccount / "
        "aws:PrincipalOrgID conditions.",
        tuple(POLICY_DOCS) + LAYER_PERMISSION,
        _public,
        checkov=("CKV_AWS_169", "CKV_AWS_32", "CKV_AWS_167"),
    ),
    Rule(
        "aws-sns-encrypted",
        "SNS topics encrypt messages at rest with KMS.",
        Severity.MEDIUM,
        Controls(nist=("SC-28",), soc2=("CC6.1",), pci=("3.5.1",)),
        "Set kms_master_key_id (a customer managed key, or 'alias/aws/sns').",
        TOPIC,
        _sns_encrypted,
        checkov=("CKV_AWS_26",),
    ),
]
