"""Application load balancers and their listeners, and network load balancers' plain TCP/UDP
listeners (which must pass TLS through to an ALB's HTTPS listener)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, num, truthy

LB = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LISTENER = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
WAF_ASSOCIATION = ("aws:wafv2/webAclAssociation:WebAclAssociation",)
TARGET_GROUP = ("aws:lb/targetGroup:TargetGroup", "aws:alb/targetGroup:TargetGroup")
TARGET_ATTACHMENT = (
    "aws:lb/targetGroupAttachment:TargetGroupAttachment",
    "aws:alb/targetGroupAttachment:TargetGroupAttachment",
)
# Listener protocols that carry the client's bytes unchanged (no TLS termination on the NLB).
PASSTHROUGH = frozenset({"tcp", "udp", "tcp_udp"})

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


_TLS12 = frozenset(p.lower() for p in TLS12_POLICIES)


def _is_alb(s: Subject) -> bool:
    return norm(s.props.get("loadBalancerType") or "application") == "application"


def _https_only(s: Subject) -> Iterator[str]:
    protocol = norm(s.props.get("protocol") or "HTTP")
    if protocol != "http":
        return
    actions = as_list(s.props.get("defaultActions"))
    redirects = [
        a
        for a in actions
        if norm(get_path(a, "type")) == "redirect" and norm(get_path(a, "redirect", "protocol")) == "https"
    ]
    if not actions or len(redirects) != len(actions):
        kinds = ", ".join(sorted({str(get_path(a, "type")) for a in actions})) or "no action"
        yield (
            f"plain HTTP listener on port {num(s.props.get('port'))} does {kinds} instead of only "
            "redirecting to HTTPS"
        )


def _tls_policy(s: Subject) -> Iterator[str]:
    protocol = norm(s.props.get("protocol") or "HTTP")
    if protocol not in ("https", "tls"):
        return
    policy = s.props.get("sslPolicy")
    if not policy:
        yield "no sslPolicy: the AWS default (ELBSecurityPolicy-2016-08) still allows TLS 1.0"
    elif norm(policy) not in _TLS12:
        yield f"sslPolicy {policy!r} allows TLS older than 1.2 (use e.g. ELBSecurityPolicy-TLS13-1-2-2021-06)"


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


def _desync(s: Subject) -> Iterator[str]:
    mode = norm(s.props.get("desyncMitigationMode") or "defensive")
    if _is_alb(s) and mode not in ("defensive", "strictest"):
        yield f"desyncMitigationMode is {mode}; use defensive or strictest"


def _waf(view: StackView) -> Iterator[tuple[str, str | None]]:
    associations = view.of_type(*WAF_ASSOCIATION)
    for lb in view.of_type(*LB):
        if norm(lb.props.get("loadBalancerType") or "application") != "application" or truthy(
            lb.props.get("internal")
        ):
            continue
        if not any(lb in view.refers(a, "resourceArn", LB) for a in associations):
            yield f"internet-facing ALB {lb.name!r} has no WAF web ACL (aws.wafv2.WebAclAssociation)", lb.urn


def forwarded(listener: PolicyResource, key: str = "defaultActions") -> list[str]:
    """The target group ARNs a listener's forward actions name (simple and weighted forms); with
    ``key="actions"``, a listener rule's."""
    arns: list[Any] = []
    for action in as_list(listener.props.get(key)):
        if norm(get_path(action, "type")) != "forward":
            continue
        arns.append(get_path(action, "targetGroupArn"))
        arns += [get_path(g, "arn") for g in as_list(get_path(action, "forward", "targetGroups"))]
    return list(dict.fromkeys(str(a) for a in arns if a))


def _port(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _alb_serves_https(view: StackView, group: PolicyResource) -> Iterator[str]:
    """Why an `alb` target group does not end at an HTTPS listener (nothing when it does)."""
    attachments = view.referrers(group, TARGET_ATTACHMENT, "targetGroupArn")
    if not attachments:
        yield "no ALB attached to it in this stack (aws.lb.TargetGroupAttachment)"
        return
    for attachment in attachments:
        albs = view.refers(attachment, "targetId", LB)
        if not albs:
            yield f"its target {attachment.props.get('targetId')!r} is not an ALB of this stack"
            continue
        # Traffic goes to the attachment's port, else the target group's: both must be HTTPS.
        ports = {p for p in (_port(group.props.get("port")), _port(attachment.props.get("port"))) if p}
        for alb in albs:
            listeners = view.referrers(alb, LISTENER, "loadBalancerArn")
            for port in sorted(ports):
                on_port = [x for x in listeners if _port(x.props.get("port")) == port]
                protocols = sorted({str(x.props.get("protocol")) for x in on_port})
                if not on_port:
                    yield f"ALB {alb.name!r} has no listener on port {port}"
                elif "https" not in {p.lower() for p in protocols}:
                    yield f"ALB {alb.name!r} serves {', '.join(protocols)} on port {port}, not HTTPS"


def _tcp_passthrough(view: StackView) -> Iterator[tuple[str, str | None]]:
    for listener in view.of_type(*LISTENER):
        protocol = norm(listener.props.get("protocol"))
        if protocol not in PASSTHROUGH:
            continue
        head = (
            f"{protocol.upper()} listener {listener.name!r} on port {num(listener.props.get('port'))} "
            f"forwards plain {protocol.upper()} to"
        )
        fix = "terminate TLS on a TLS listener, or forward to an ALB's HTTPS listener"
        for arn in forwarded(listener):
            groups = view.referenced(arn, TARGET_GROUP)
            if not groups:
                yield f"{head} target group {arn!r}, which this stack does not declare: {fix}", listener.urn
            for group in groups:
                target_type = norm(group.props.get("targetType") or "instance")
                to = f"{head} target group {group.name!r} (target type {target_type})"
                if target_type != "alb":
                    yield f"{to}: {fix}", listener.urn
                    continue
                for why in _alb_serves_https(view, group):
                    yield f"{to}, but {why}: {fix}", listener.urn


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
        checkov=("CKV_AWS_2", "CKV2_AWS_20"),
    ),
    Rule(
        "aws-alb-tls12-policy",
        "HTTPS/TLS listeners use a security policy with TLS 1.2 or newer.",
        Severity.HIGH,
        _TLS,
        "Set ssl_policy='ELBSecurityPolicy-TLS13-1-2-2021-06' (or another TLS 1.2+ policy).",
        LISTENER,
        _tls_policy,
        checkov=("CKV_AWS_103", "CKV2_AWS_74"),
    ),
    Rule(
        "aws-nlb-tcp-passthrough-to-https",
        "Plain TCP/UDP listeners (NLB) forward only to an ALB target group whose ALB serves HTTPS on the "
        "target group's port, so the traffic stays TLS end to end.",
        Severity.HIGH,
        _TLS,
        "Terminate TLS on the NLB (protocol='TLS' with a TLS 1.2+ ssl_policy and a certificate), or forward "
        "TCP only to a target group with target_type='alb', attach the ALB (aws.lb.TargetGroupAttachment) "
        "and give it an HTTPS listener on the target group's port. Targets that terminate TLS themselves "
        "need an exclusion with a justification.",
        stack_check=_tcp_passthrough,
    ),
    Rule(
        "aws-alb-drop-invalid-headers",
        "ALBs drop invalid HTTP header fields.",
        Severity.MEDIUM,
        Controls(nist=("SI-10",), soc2=("CC7.1",), pci=("6.2.4",)),
        "Set drop_invalid_header_fields=True on the load balancer.",
        LB,
        _drop_headers,
        checkov=("CKV_AWS_131",),
    ),
    Rule(
        "aws-alb-access-logs",
        "ALBs write access logs to S3.",
        Severity.MEDIUM,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set access_logs={enabled: True, bucket: <encrypted, non-public bucket>}.",
        LB,
        _access_logs,
        checkov=("CKV_AWS_91",),
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
        checkov=("CKV_AWS_150",),
    ),
    Rule(
        "aws-alb-desync-mitigation",
        "ALBs mitigate HTTP desync in defensive or strictest mode.",
        Severity.LOW,
        Controls(nist=("SI-10",), soc2=("CC7.1",), pci=("6.2.4",)),
        "Leave desync_mitigation_mode at 'defensive' (or set 'strictest').",
        LB,
        _desync,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_328",),
    ),
    Rule(
        "aws-alb-waf",
        "Internet-facing ALBs are protected by AWS WAF.",
        Severity.LOW,
        Controls(nist=("SC-7", "SI-4"), soc2=("CC6.6",), pci=("6.4.2",)),
        "Associate a WAFv2 web ACL (aws.wafv2.WebAclAssociation) with the AWS managed rule groups.",
        stack_check=_waf,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_AWS_28",),
    ),
]
