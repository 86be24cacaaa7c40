"""Application load balancers and their listeners."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, as_list, get_path, truthy

LB = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LISTENER = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")

# ELB security policies that offer TLS 1.2 as the minimum (AWS's published list).
TLS12_POLICIES = frozenset(
    {
        "ELBSecurityPolicy-TLS13-1-2-2021-06",
        "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
        "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
        "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
        "ELBSecurityPolicy-TLS13-1-3-2021-06",
        "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
        "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
        "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
        "ELBSecurityPolicy-TLS-1-2-2017-01",
        "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
        "ELBSecurityPolicy-FS-1-2-2019-08",
        "ELBSecurityPolicy-FS-1-2-Res-2019-08",
        "ELBSecurityPolicy-FS-1-2-Res-2020-10",
    }
)


def _is_alb(s: Subject) -> bool:
    return str(s.props.get("loadBalancerType") or "application") == "application"


def _https_only(s: Subject) -> Iterator[str]:
    protocol = str(s.props.get("protocol") or "HTTP").upper()
    if protocol != "HTTP":
        return
    actions = as_list(s.props.get("defaultActions"))
    redirects = [
        a
        for a in actions
        if get_path(a, "type") == "redirect"
        and str(get_path(a, "redirect", "protocol") or "").upper() == "HTTPS"
    ]
    if not actions or len(redirects) != len(actions):
        yield "plain HTTP listener that does not only redirect to HTTPS"


def _tls_policy(s: Subject) -> Iterator[str]:
    protocol = str(s.props.get("protocol") or "HTTP").upper()
    if protocol not in ("HTTPS", "TLS"):
        return
    policy = s.props.get("sslPolicy")
    if not policy:
        yield "no sslPolicy: the AWS default (ELBSecurityPolicy-2016-08) still allows TLS 1.0"
    elif str(policy) not in TLS12_POLICIES:
        yield f"sslPolicy {policy!r} allows TLS older than 1.2"


def _drop_headers(s: Subject) -> Iterator[str]:
    if _is_alb(s) and not truthy(s.props.get("dropInvalidHeaderFields")):
        yield "dropInvalidHeaderFields must be true (HTTP desync / header smuggling defence)"


def _access_logs(s: Subject) -> Iterator[str]:
    if not _is_alb(s):
        return
    logs = s.props.get("accessLogs")
    if not truthy(get_path(logs, "enabled")) or not get_path(logs, "bucket"):
        yield "accessLogs must be enabled with a bucket"


def _deletion(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("enableDeletionProtection")):
        yield "enableDeletionProtection must be true in prod"


_TLS = Controls(nist=("SC-8", "SC-8(1)", "SC-13"), soc2=("CC6.7",), pci=("4.2.1",))

RULES = [
    Rule(
        "aws-alb-https-only",
        "ALB listeners serve HTTPS; plain HTTP only redirects to HTTPS.",
        Severity.HIGH,
        _TLS,
        "Make the HTTP listener's only default action a redirect with protocol "
        "HTTPS and status HTTP_301; serve traffic on an HTTPS listener.",
        LISTENER,
        _https_only,
    ),
    Rule(
        "aws-alb-tls12-policy",
        "HTTPS/TLS listeners use a security policy with TLS 1.2 or newer.",
        Severity.HIGH,
        _TLS,
        "Set ssl_policy='ELBSecurityPolicy-TLS13-1-2-2021-06' (or another TLS 1.2+ policy).",
        LISTENER,
        _tls_policy,
    ),
    Rule(
        "aws-alb-drop-invalid-headers",
        "ALBs drop invalid HTTP header fields.",
        Severity.MEDIUM,
        Controls(nist=("SI-10",), soc2=("CC7.1",), pci=("6.2.4",)),
        "Set drop_invalid_header_fields=True on the load balancer.",
        LB,
        _drop_headers,
    ),
    Rule(
        "aws-alb-access-logs",
        "ALBs write access logs to S3.",
        Severity.MEDIUM,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set access_logs={enabled: True, bucket: <encrypted, non-public bucket>}.",
        LB,
        _access_logs,
    ),
    Rule(
        "aws-alb-deletion-protection",
        "Prod ALBs have deletion protection.",
        Severity.LOW,
        Controls(nist=("CP-10",), soc2=("A1.2",)),
        "Set enable_deletion_protection=True on prod ALBs.",
        LB,
        _deletion,
        prod_only=True,
    ),
]
