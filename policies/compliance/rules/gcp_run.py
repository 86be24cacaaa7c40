"""Cloud Run v2 services: restricted ingress, a dedicated service account, no public invoker
unless the service is reachable only through the load balancer."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, StackView, Subject, as_list, get_path

SERVICE = ("gcp:cloudrunv2/service:Service",)
IAM_MEMBER = ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember",)
IAM_BINDING = ("gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",)
RESTRICTED_INGRESS = ("INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER")
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")


def _ingress(s: Subject) -> Iterator[str]:
    ingress = s.props.get("ingress") or "INGRESS_TRAFFIC_ALL"
    if ingress not in RESTRICTED_INGRESS:
        yield f"ingress is {ingress}; use INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER (or INTERNAL_ONLY)"


def _service_account(s: Subject) -> Iterator[str]:
    account = get_path(s.props, "template", "serviceAccount")
    if not account:
        yield "template.serviceAccount is not set: the service runs as the default compute service account"
    elif str(account).endswith("-compute@developer.gserviceaccount.com"):
        yield f"template.serviceAccount {account} is the default compute service account"


def _public_invoker(view: StackView) -> Iterator[tuple[str, str | None]]:
    grants = [(r, [r.props.get("member")]) for r in view.of_type(*IAM_MEMBER)]
    grants += [(r, as_list(r.props.get("members"))) for r in view.of_type(*IAM_BINDING)]
    for grant, members in grants:
        public = [str(m) for m in members if m in PUBLIC_MEMBERS]
        if not public:
            continue
        services = view.referenced(grant.props.get("name"), SERVICE)
        if not services:
            yield f"{', '.join(public)} may invoke a Cloud Run service this stack cannot see", grant.urn
        for svc in services:
            if svc.props.get("ingress") != "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER":
                yield (
                    f"{', '.join(public)} may invoke {svc.name!r}, which is reachable without the load "
                    "balancer (ingress is not INTERNAL_LOAD_BALANCER)",
                    grant.urn,
                )


RULES = [
    Rule(
        "gcp-run-ingress-restricted",
        "Cloud Run services accept traffic only from the VPC or the load balancer.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.4.1",)),
        "Set ingress='INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER' (api) or '...INTERNAL_ONLY' (worker).",
        SERVICE,
        _ingress,
    ),
    Rule(
        "gcp-run-dedicated-service-account",
        "Cloud Run services run as a dedicated service account.",
        Severity.HIGH,
        Controls(cis=("GCP-4.1",), nist=("AC-6",), soc2=("CC6.3",), pci=("7.2.2",)),
        "Create a gcp.serviceaccount.Account per service and set template.service_account to its email.",
        SERVICE,
        _service_account,
    ),
    Rule(
        "gcp-run-public-invoker-behind-lb",
        "allUsers may invoke a Cloud Run service only when it is reachable solely through the load balancer.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "SC-7"), soc2=("CC6.1", "CC6.6")),
        "Remove the allUsers/allAuthenticatedUsers run.invoker grant, or set the service's ingress to "
        "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER.",
        stack_check=_public_invoker,
    ),
]
