"""Memorystore for Redis: AUTH, TLS, private access and HA in prod."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, truthy

INSTANCE = ("gcp:redis/instance:Instance",)


def _auth(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("authEnabled")):
        yield "authEnabled must be true"


def _tls(s: Subject) -> Iterator[str]:
    mode = s.props.get("transitEncryptionMode") or "DISABLED"
    if mode != "SERVER_AUTHENTICATION":
        yield f"transitEncryptionMode is {mode}; it must be SERVER_AUTHENTICATION"


def _ha(s: Subject) -> Iterator[str]:
    tier = s.props.get("tier") or "BASIC"
    if tier != "STANDARD_HA":
        yield f"tier is {tier}; prod needs STANDARD_HA (replica with automatic failover)"


def _private(s: Subject) -> Iterator[str]:
    if s.props.get("connectMode") != "PRIVATE_SERVICE_ACCESS":
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
    ),
    Rule(
        "gcp-redis-tls",
        "Memorystore Redis instances require TLS.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set transit_encryption_mode='SERVER_AUTHENTICATION' (clients use rediss:// with the server CA).",
        INSTANCE,
        _tls,
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
