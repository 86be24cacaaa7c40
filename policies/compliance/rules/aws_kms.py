"""KMS keys: yearly rotation and no open key policy."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._docs import public_grants
from ._rule import Controls, Rule, Subject, truthy

KEY = ("aws:kms/key:Key",)


def _rotation(s: Subject) -> Iterator[str]:
    spec = str(s.props.get("customerMasterKeySpec") or s.props.get("keySpec") or "SYMMETRIC_DEFAULT")
    if spec == "SYMMETRIC_DEFAULT" and not truthy(s.props.get("enableKeyRotation")):
        yield "enableKeyRotation must be true for symmetric keys"


def _open_policy(s: Subject) -> Iterator[str]:
    yield from public_grants(s.props.get("policy"), "key policy")


RULES = [
    Rule(
        "aws-kms-key-rotation",
        "Symmetric KMS keys rotate automatically.",
        Severity.MEDIUM,
        Controls(cis=("AWS-3.6",), nist=("SC-12",), soc2=("CC6.1",), pci=("3.7.4",)),
        "Set enable_key_rotation=True.",
        KEY,
        _rotation,
        checkov=("CKV_AWS_7",),
    ),
    Rule(
        "aws-kms-no-public-principal",
        "KMS key policies do not allow every principal.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("3.6.1",)),
        "Name the account root and the exact roles in the key policy, or add conditions such as "
        "kms:CallerAccount.",
        KEY,
        _open_policy,
        checkov=("CKV_AWS_33",),
    ),
]
