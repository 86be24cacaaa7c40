"""VPC firewall rules and subnetworks.

A firewall rule with no source (no ranges, tags or service accounts) admits 0.0.0.0/0, as GCP
applies it; a rule without ports opens every port of its protocol."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, Severity

from ._net import admin_ports_in, is_world, port_range
from ._rule import Controls, Rule, Subject, as_list, get_path, norm, truthy

FIREWALL = ("gcp:compute/firewall:Firewall",)
SUBNET = ("gcp:compute/subnetwork:Subnetwork",)


def _world_sources(s: Subject) -> list[str]:
    p = s.props
    ranges = [str(r) for r in as_list(p.get("sourceRanges"))]
    if not ranges and not as_list(p.get("sourceTags")) and not as_list(p.get("sourceServiceAccounts")):
        return ["0.0.0.0/0 (no source given)"]
    return [r for r in ranges if is_world(r)]


def _public_admin(s: Subject) -> Iterator[str]:
    p = s.props
    if norm(p.get("direction") or "INGRESS") != "ingress" or truthy(p.get("disabled")):
        return
    world = _world_sources(s)
    if not world:
        return
    for allow in as_list(p.get("allows")):
        protocol = norm(get_path(allow, "protocol"))
        if protocol in ("icmp", "ipip", "esp", "ah", "sctp"):
            continue
        ports = as_list(get_path(allow, "ports"))
        exposed: list[str] = []
        if protocol == "all" or not ports:
            exposed = ["all ports"]
        else:
            for port in ports:
                span = port_range(port)
                if span is not None:
                    exposed += admin_ports_in(*span)
        if exposed:
            yield f"allows {protocol or 'all'} from {', '.join(world)} to {', '.join(dict.fromkeys(exposed))}"


def _flow_logs(s: Subject) -> Iterator[str]:
    if norm(s.props.get("purpose")) in (
        "regional_managed_proxy",
        "global_managed_proxy",
        "private_service_connect",
    ):
        return  # proxy-only and PSC subnets carry no VM traffic to log
    if not s.props.get("logConfig"):
        yield "VPC flow logs are off (log_config not set)"


def _private_access(s: Subject) -> Iterator[str]:
    if norm(s.props.get("purpose")) in (
        "regional_managed_proxy",
        "global_managed_proxy",
        "private_service_connect",
    ):
        return
    if not truthy(s.props.get("privateIpGoogleAccess")):
        yield "privateIpGoogleAccess is off: VMs without external IPs cannot reach Google APIs privately"


RULES = [
    Rule(
        "gcp-firewall-no-public-admin-ports",
        "VPC firewall rules do not admit the internet to administration or data-store ports, nor "
        "to all ports.",
        Severity.CRITICAL,
        Controls(cis=("GCP-3.6", "GCP-3.7"), nist=("SC-7", "AC-17"), soc2=("CC6.6",), pci=("1.3.1", "1.4.1")),
        "Reach VMs through IAP TCP forwarding (35.235.240.0/20) or a VPN range; admit databases only from "
        "the application's tags or service accounts.",
        FIREWALL,
        _public_admin,
        checkov=("CKV_GCP_2", "CKV_GCP_3", "CKV_GCP_75", "CKV_GCP_77", "CKV_GCP_88", "CKV2_GCP_12"),
    ),
    Rule(
        "gcp-subnet-flow-logs",
        "Subnetworks record VPC flow logs.",
        Severity.LOW,
        Controls(cis=("GCP-3.8",), nist=("AU-2", "AU-12", "SI-4"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set log_config={aggregation_interval: 'INTERVAL_5_SEC', flow_sampling: 0.5, metadata: "
        "'INCLUDE_ALL_METADATA'}.",
        SUBNET,
        _flow_logs,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_26",),
    ),
    Rule(
        "gcp-subnet-private-google-access",
        "Subnetworks reach Google APIs privately.",
        Severity.LOW,
        Controls(nist=("SC-7",), soc2=("CC6.6",)),
        "Set private_ip_google_access=True.",
        SUBNET,
        _private_access,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_74", "CKV_GCP_76"),
    ),
]
