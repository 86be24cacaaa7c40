"""Memorystore for Redis: AUTH, TLS, private access and HA in prod."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, norm, truthy

INSTANCE = ("gcp:redis/instance:Instance",)


def _auth(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("authEnabled")):
        yield "authEnabled must be true"


def _tls(s: Subject) -> Iterator[str]:
    mode = norm(s.props.get("transitEncryptionMode") or "DISABLED")
    if mode != "server_authentication":
        yield f"transitEncryptionMode is {mode.upper()}; allowed: SERVER_AUTHENTICATION"


def _ha(s: Subject) -> Iterator[str]:
    tier = norm(s.props.get("tier") or "BASIC")
    if tier != "standard_ha":
        yield f"tier is {tier.upper()}; prod needs STANDARD_HA (replica with automatic failover)"


def _private(s: Subject) -> Iterator[str]:
    if norm(s.props.get("connectMode")) != "private_service_access":
        yield "connectMode must be PRIVATE_SERVICE_ACCESS so only the service's VPC reaches the cache"
    if not s.props.get("authorizedNetwork"):
        yield "authorizedNetwork must name the service's VPC"


RULES = [
    Rule(
        "gcp-redis-auth",
        "Memorystore Redis instances require AUTH.",
        Severity.HIGH,
        Controls(nist=("IA-2", "AC-3"), soc2=("CC6.1",), pci=("8.3.1",)),
        "Set auth_enabled=True and hand the AUTH string to the service through Secret Manager.",
        INSTANCE,
        _auth,
        checkov=("CKV_GCP_95",),
    ),
    Rule(
        "gcp-redis-tls",
        "Memorystore Redis instances require TLS.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set transit_encryption_mode='SERVER_AUTHENTICATION' (clients use rediss:// with the server CA).",
        INSTANCE,
        _tls,
        checkov=("CKV_GCP_97",),
    ),
    Rule(
        "gcp-redis-ha",
        "Prod Memorystore Redis instances are STANDARD_HA.",
        Severity.MEDIUM,
        Controls(nist=("CP-10", "SC-36"), soc2=("A1.2",)),
        "Set tier='STANDARD_HA' in prod.",
        INSTANCE,
        _ha,
        prod_only=True,
    ),
    Rule(
        "gcp-redis-private-access",
        "Memorystore Redis is reachable only through private service access on the service's VPC.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Set connect_mode='PRIVATE_SERVICE_ACCESS' and authorized_network to the VPC id.",
        INSTANCE,
        _private,
    ),
]
