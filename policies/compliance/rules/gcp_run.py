"""Serverless compute: Cloud Run services (v1 and v2) and jobs, and Cloud Functions (1st and
2nd gen): restricted ingress, a dedicated service account, HTTPS-only triggers, and no public
invoker (an allUsers grant, or the invoker IAM check turned off) unless the service is reachable
only through the load balancer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pulumi_policy import PolicyResource, Severity

from ._rule import Controls, Rule, StackView, Subject, get_path, norm, truthy
from .gcp_storage import PUBLIC_MEMBERS, members_of

SERVICE = ("gcp:cloudrunv2/service:Service",)
SERVICE_V1 = ("gcp:cloudrun/service:Service",)
JOB = ("gcp:cloudrunv2/job:Job",)
FUNCTION_V1 = ("gcp:cloudfunctions/function:Function",)
FUNCTION_V2 = ("gcp:cloudfunctionsv2/function:Function",)
IAM_MEMBER = ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember",)
IAM_BINDING = ("gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",)
IAM_V2 = IAM_MEMBER + IAM_BINDING + ("gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy",)
IAM_V1 = (
    "gcp:cloudrun/iamMember:IamMember",
    "gcp:cloudrun/iamBinding:IamBinding",
    "gcp:cloudrun/iamPolicy:IamPolicy",
)
RESTRICTED_INGRESS = (
    "ingress_traffic_internal_only",
    "ingress_traffic_internal_load_balancer",
    "internal",
    "internal-and-cloud-load-balancing",
    "allow_internal_only",
    "allow_internal_and_gclb",
)
BEHIND_LB = ("ingress_traffic_internal_load_balancer", "internal-and-cloud-load-balancing")
DEFAULT_SA = re.compile(r"(-compute@developer\.gserviceaccount\.com|@appspot\.gserviceaccount\.com)$", re.I)
V1_INGRESS = "run.googleapis.com/ingress"
V1_INVOKER_IAM_DISABLED = "run.googleapis.com/invoker-iam-disabled"


def ingress_of(resource_type: str, props: Any) -> str:
    """The ingress setting, lower-cased, with each product's default filled in."""
    if resource_type in SERVICE:
        return norm(props.get("ingress") or "INGRESS_TRAFFIC_ALL")
    if resource_type in SERVICE_V1:
        annotations = get_path(props, "metadata", "annotations") or {}
        return norm(annotations.get(V1_INGRESS) if hasattr(annotations, "get") else None) or "all"
    if resource_type in FUNCTION_V1:
        return norm(props.get("ingressSettings") or "ALLOW_ALL")
    return norm(get_path(props, "serviceConfig", "ingressSettings") or "ALLOW_ALL")


def _ingress(s: Subject) -> Iterator[str]:
    ingress = ingress_of(s.type, s.props)
    if ingress not in RESTRICTED_INGRESS:
        yield (
            f"ingress is {ingress.upper() if '_' in ingress else ingress}: anyone on the internet "
            "reaches the "
            "endpoint; allow only internal traffic and the load balancer"
        )


def _account_of(s: Subject) -> tuple[str, str]:
    """(property path, service account) with the product's default when unset."""
    p = s.props
    if s.type in SERVICE:
        return "template.serviceAccount", str(get_path(p, "template", "serviceAccount") or "")
    if s.type in SERVICE_V1:
        return "template.spec.serviceAccountName", str(
            get_path(p, "template", "spec", "serviceAccountName") or ""
        )
    if s.type in JOB:
        return "template.template.serviceAccount", str(
            get_path(p, "template", "template", "serviceAccount") or ""
        )
    if s.type in FUNCTION_V1:
        return "serviceAccountEmail", str(p.get("serviceAccountEmail") or "")
    return "serviceConfig.serviceAccountEmail", str(get_path(p, "serviceConfig", "serviceAccountEmail") or "")


def _service_account(s: Subject) -> Iterator[str]:
    path, account = _account_of(s)
    if not account:
        yield f"{path} is not set: it runs as the project's default service account (Editor on the project)"
    elif DEFAULT_SA.search(account):
        yield f"{path} {account} is a default service account"


def _https_trigger(s: Subject) -> Iterator[str]:
    if (
        truthy(s.props.get("triggerHttp"))
        and norm(s.props.get("httpsTriggerSecurityLevel")) != "secure_always"
    ):
        level = s.props.get("httpsTriggerSecurityLevel") or "unset (SECURE_OPTIONAL)"
        yield f"httpsTriggerSecurityLevel is {level}: the function also answers plain HTTP"


def _targets(view: StackView, grant: PolicyResource) -> list[PolicyResource]:
    if grant.resource_type in IAM_V1:
        return view.refers(grant, "service", SERVICE_V1)
    return view.refers(grant, "name", SERVICE)


def invoker_iam_disabled(resource_type: str, props: Any) -> bool:
    """Cloud Run skips the invoker check: anyone may invoke, exactly as with an allUsers grant."""
    if resource_type in SERVICE:
        return truthy(props.get("invokerIamDisabled"))
    annotations = get_path(props, "metadata", "annotations") or {}
    return hasattr(annotations, "get") and truthy(annotations.get(V1_INVOKER_IAM_DISABLED))


def _public_invoker(view: StackView) -> Iterator[tuple[str, str | None]]:
    # The invoker check turned off opens the service with no grant to find, so it is judged on
    # the service itself, by the same test as an allUsers grant.
    for svc in view.of_type(*SERVICE + SERVICE_V1):
        ingress = ingress_of(svc.resource_type, svc.props)
        if invoker_iam_disabled(svc.resource_type, svc.props) and ingress not in BEHIND_LB:
            yield (
                f"{svc.name!r} turns its invoker IAM check off (anyone may invoke it, as with allUsers) "
                f"and is reachable without the load balancer (ingress is {ingress.upper()})",
                svc.urn,
            )
    for grant in view.of_type(*IAM_V2 + IAM_V1):
        public = [m for m in members_of(grant.props) if norm(m) in PUBLIC_MEMBERS]
        if not public:
            continue
        services = _targets(view, grant)
        if not services:
            yield f"{', '.join(public)} may invoke a Cloud Run service this stack cannot see", grant.urn
        for svc in services:
            if ingress_of(svc.resource_type, svc.props) not in BEHIND_LB:
                yield (
                    f"{', '.join(public)} may invoke {svc.name!r}, which is reachable without the load "
                    f"balancer (ingress is {ingress_of(svc.resource_type, svc.props).upper()})",
                    grant.urn,
                )


RULES = [
    Rule(
        "gcp-run-ingress-restricted",
        "Cloud Run services and Cloud Functions accept traffic only from the VPC or the load balancer.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.4.1",)),
        "Set ingress='INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER' (or INTERNAL_ONLY); for functions "
        "ingress_settings='ALLOW_INTERNAL_AND_GCLB' (or ALLOW_INTERNAL_ONLY).",
        SERVICE + SERVICE_V1 + FUNCTION_V1 + FUNCTION_V2,
        _ingress,
        checkov=("CKV_GCP_124",),
    ),
    Rule(
        "gcp-run-dedicated-service-account",
        "Cloud Run services and jobs, and Cloud Functions, run as a dedicated service account.",
        Severity.HIGH,
        Controls(cis=("GCP-4.1",), nist=("AC-6",), soc2=("CC6.3",), pci=("7.2.2",)),
        "Create a gcp.serviceaccount.Account per service and set it as the service account.",
        SERVICE + SERVICE_V1 + JOB + FUNCTION_V1 + FUNCTION_V2,
        _service_account,
    ),
    Rule(
        "gcp-functions-https-only",
        "HTTP-triggered Cloud Functions (1st gen) refuse plain HTTP.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set https_trigger_security_level='SECURE_ALWAYS'.",
        FUNCTION_V1,
        _https_trigger,
        checkov=("CKV2_GCP_10",),
    ),
    Rule(
        "gcp-run-public-invoker-behind-lb",
        "allUsers may invoke a Cloud Run service (an allUsers/allAuthenticatedUsers invoker grant, or "
        "the invoker IAM check turned off) only when it is reachable solely through the load balancer.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "SC-7"), soc2=("CC6.1", "CC6.6")),
        "Remove the allUsers/allAuthenticatedUsers run.invoker grant and leave invoker_iam_disabled off, or "
        "set the service's ingress to INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER.",
        stack_check=_public_invoker,
        checkov=("CKV_GCP_102",),
    ),
]
