"""Cloud KMS keys rotate at least every 90 days (who may use them is judged by
gcp-iam-no-public-members)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, norm

CRYPTO_KEY = ("gcp:kms/cryptoKey:CryptoKey",)
MAX_ROTATION_SECONDS = 90 * 24 * 3600


def _seconds(value: object) -> float | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(value or ""))
    return float(match.group(1)) if match else None


def _rotation(s: Subject) -> Iterator[str]:
    if norm(s.props.get("purpose") or "ENCRYPT_DECRYPT") != "encrypt_decrypt":
        return  # asymmetric and MAC keys cannot rotate automatically
    period = s.props.get("rotationPeriod")
    seconds = _seconds(period)
    if period is None:
        yield "rotationPeriod is not set: the key never rotates"
    elif seconds is None:
        yield f"rotationPeriod {period!r} is not a duration in seconds (e.g. '7776000s')"
    elif seconds > MAX_ROTATION_SECONDS:
        yield f"rotationPeriod is {seconds / 86400:g} days; rotate at least every 90 days (7776000s)"


RULES = [
    Rule(
        "gcp-kms-key-rotation",
        "Cloud KMS symmetric keys rotate at least every 90 days.",
        Severity.MEDIUM,
        Controls(cis=("GCP-1.10",), nist=("SC-12",), soc2=("CC6.1",), pci=("3.7.4",)),
        "Set rotation_period='7776000s' (90 days) or shorter.",
        CRYPTO_KEY,
        _rotation,
        checkov=("CKV_GCP_43",),
    ),
]
