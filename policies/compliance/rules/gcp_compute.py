"""Compute Engine instances and instance templates: identity, network exposure, SSH access and
boot integrity.

SSH access can be governed per instance (metadata) or for the whole project
(gcp.compute.ProjectMetadata / ProjectMetadataItem): OS Login enabled at project level counts
for every instance that does not turn it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, is_false, norm, truthy

INSTANCE = (
    "gcp:compute/instance:Instance",
    "gcp:compute/instanceTemplate:InstanceTemplate",
    "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate",
)
PROJECT_METADATA = ("gcp:compute/projectMetadata:ProjectMetadata",)
PROJECT_METADATA_ITEM = ("gcp:compute/projectMetadataItem:ProjectMetadataItem",)
DEFAULT_SA_SUFFIX = "-compute@developer.gserviceaccount.com"
BROAD_SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "cloud-platform")


def _metadata(props: Any) -> dict[str, str]:
    meta = props.get("metadata") or {}
    return {norm(k): norm(meta[k]) for k in meta} if hasattr(meta, "keys") else {}


def _on(value: str | None) -> bool:
    return value in ("true", "1", "yes", "on")


def _off(value: str | None) -> bool:
    return value in ("false", "0", "no", "off")


def _project_metadata(view: StackView) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in view.of_type(*PROJECT_METADATA):
        out.update(_metadata(r.props))
    for r in view.of_type(*PROJECT_METADATA_ITEM):
        out[norm(r.props.get("key"))] = norm(r.props.get("value"))
    return out


def _ssh(view: StackView) -> Iterator[tuple[str, str | None]]:
    project = _project_metadata(view)
    for r in view.of_type(*INSTANCE):
        own = _metadata(r.props)
        os_login = own.get("enable-oslogin", project.get("enable-oslogin"))
        if _off(os_login):
            yield f"{r.name!r}: enable-oslogin is FALSE: SSH keys in metadata bypass IAM", r.urn
        elif not _on(os_login) and not _on(own.get("block-project-ssh-keys")):
            yield (
                f"{r.name!r}: neither OS Login (enable-oslogin=TRUE, instance or project metadata) nor "
                "block-project-ssh-keys is set: project-wide SSH keys open this VM",
                r.urn,
            )


def _serial_port(s: Subject) -> Iterator[str]:
    if _on(_metadata(s.props).get("serial-port-enable")):
        yield "metadata serial-port-enable is TRUE: the interactive serial console is reachable"


def _service_account(s: Subject) -> Iterator[str]:
    sa = s.props.get("serviceAccount")
    email = str(get_path(sa, "email") or "")
    scopes = [norm(x) for x in as_list(get_path(sa, "scopes"))]
    if sa is None:
        return  # no service account at all: the VM has no Google credentials
    if not email or email.endswith(DEFAULT_SA_SUFFIX) or email.lower() == "default":
        broad = any(x in BROAD_SCOPES for x in scopes)
        scope = " with the cloud-platform scope" if broad else ""
        yield (
            f"runs as the Compute Engine default service account{scope}; create a dedicated service "
            "account with only the roles it needs"
        )


def _public_ip(s: Subject) -> Iterator[str]:
    for nic in as_list(s.props.get("networkInterfaces")):
        if as_list(get_path(nic, "accessConfigs")) or as_list(get_path(nic, "ipv6AccessConfigs")):
            yield "a network interface has an access config: the VM gets an external IP"


def _ip_forwarding(s: Subject) -> Iterator[str]:
    if truthy(s.props.get("canIpForward")):
        yield "canIpForward is true: the VM can route traffic with spoofed source addresses"


def _shielded(s: Subject) -> Iterator[str]:
    cfg = s.props.get("shieldedInstanceConfig")
    if cfg is None or not truthy(get_path(cfg, "enableSecureBoot")):
        yield "Shielded VM secure boot is off (shieldedInstanceConfig.enableSecureBoot)"
    if cfg is not None and (
        is_false(get_path(cfg, "enableVtpm")) or is_false(get_path(cfg, "enableIntegrityMonitoring"))
    ):
        yield "vTPM or integrity monitoring is turned off"


_HOST = Controls(cis=("GCP-4.1", "GCP-4.2"), nist=("AC-6",), soc2=("CC6.3",), pci=("7.2.2",))

RULES = [
    Rule(
        "gcp-compute-ssh-access-controlled",
        "VM SSH access goes through OS Login (instance or project), or project-wide SSH keys are blocked.",
        Severity.MEDIUM,
        Controls(cis=("GCP-4.3", "GCP-4.4"), nist=("AC-17", "IA-2"), soc2=("CC6.1",), pci=("8.2.1",)),
        "Set metadata enable-oslogin=TRUE on the project (gcp.compute.ProjectMetadataItem) or the instance, "
        "or block-project-ssh-keys=TRUE.",
        stack_check=_ssh,
        checkov=("CKV_GCP_32", "CKV_GCP_33", "CKV_GCP_34"),
    ),
    Rule(
        "gcp-compute-no-serial-port",
        "VMs do not enable the interactive serial console.",
        Severity.MEDIUM,
        Controls(cis=("GCP-4.5",), nist=("AC-17", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",)),
        "Remove serial-port-enable from the instance metadata.",
        INSTANCE,
        _serial_port,
        checkov=("CKV_GCP_35",),
    ),
    Rule(
        "gcp-compute-dedicated-service-account",
        "VMs do not run as the Compute Engine default service account.",
        Severity.HIGH,
        _HOST,
        "Create a gcp.serviceaccount.Account for the VM and set service_account={email: ..., scopes: "
        "['cloud-platform']} with narrowly granted roles.",
        INSTANCE,
        _service_account,
        checkov=("CKV_GCP_30", "CKV_GCP_31"),
    ),
    Rule(
        "gcp-compute-no-public-ip",
        "VMs have no external IP address.",
        Severity.MEDIUM,
        Controls(cis=("GCP-4.9",), nist=("SC-7",), soc2=("CC6.6",), pci=("1.4.4",)),
        "Remove access_configs; reach the VM through IAP or a load balancer, and egress through Cloud NAT.",
        INSTANCE,
        _public_ip,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_40",),
    ),
    Rule(
        "gcp-compute-no-ip-forwarding",
        "VMs do not forward IP packets.",
        Severity.MEDIUM,
        Controls(cis=("GCP-4.6",), nist=("SC-7",), soc2=("CC6.6",), pci=("1.3.1",)),
        "Set can_ip_forward=False (use Cloud NAT or a managed appliance for routing).",
        INSTANCE,
        _ip_forwarding,
        checkov=("CKV_GCP_36",),
    ),
    Rule(
        "gcp-compute-shielded-vm",
        "VMs boot as Shielded VMs (secure boot, vTPM, integrity monitoring).",
        Severity.LOW,
        Controls(cis=("GCP-4.8",), nist=("SI-7",), soc2=("CC6.8",)),
        "Set shielded_instance_config={enable_secure_boot: True, enable_vtpm: True, "
        "enable_integrity_monitoring: True} on a Shielded VM image.",
        INSTANCE,
        _shielded,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_39",),
    ),
]
