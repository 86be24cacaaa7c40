"""EC2 instances, launch templates and configurations, and EBS volumes: IMDSv2, encrypted
disks, no public addresses.

Account-wide settings made by their own resources count: aws.ec2.InstanceMetadataDefaults
(IMDSv2 for every new instance) and aws.ebs.EncryptionByDefault (every new volume encrypted);
an instance's public address also follows from its subnet's mapPublicIpOnLaunch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._rule import Controls, Rule, StackView, as_list, get_path, is_false, norm, truthy

INSTANCE = ("aws:ec2/instance:Instance", "aws:ec2/spotInstanceRequest:SpotInstanceRequest")
TEMPLATE = ("aws:ec2/launchTemplate:LaunchTemplate",)
LAUNCH_CONFIG = ("aws:ec2/launchConfiguration:LaunchConfiguration",)
VOLUME = ("aws:ebs/volume:Volume",)
LAUNCHERS = INSTANCE + TEMPLATE + LAUNCH_CONFIG
METADATA_DEFAULTS = ("aws:ec2/instanceMetadataDefaults:InstanceMetadataDefaults",)
EBS_DEFAULT = ("aws:ebs/encryptionByDefault:EncryptionByDefault",)
SUBNET = ("aws:ec2/subnet:Subnet",)


def _imds(view: StackView) -> Iterator[tuple[str, str | None]]:
    account_v2 = any(norm(d.props.get("httpTokens")) == "required" for d in view.of_type(*METADATA_DEFAULTS))
    for r in view.of_type(*LAUNCHERS):
        options = r.props.get("metadataOptions") or {}
        tokens = norm(get_path(options, "httpTokens"))
        if norm(get_path(options, "httpEndpoint")) == "disabled" or tokens == "required":
            continue
        if not tokens and account_v2:
            continue
        found = (
            f"httpTokens is {tokens!r}" if tokens else "metadataOptions.httpTokens is unset (IMDSv1 allowed)"
        )
        yield f"{r.name!r}: {found}; set http_tokens='required' (IMDSv2)", r.urn


def _block_devices(r: PolicyResource) -> list[tuple[str, Any]]:
    """(device, encrypted) for every EBS device the resource defines."""
    if r.resource_type in VOLUME:
        return [("volume", r.props.get("encrypted"))]
    if r.resource_type in TEMPLATE:
        return [
            (str(get_path(m, "deviceName") or "device"), get_path(m, "ebs", "encrypted"))
            for m in as_list(r.props.get("blockDeviceMappings"))
            if get_path(m, "ebs") is not None
        ]
    devices = [("root volume", get_path(r.props, "rootBlockDevice", "encrypted"))]
    devices += [
        (str(get_path(d, "deviceName") or "ebs volume"), get_path(d, "encrypted"))
        for d in as_list(r.props.get("ebsBlockDevices"))
    ]
    return devices


def _ebs(view: StackView) -> Iterator[tuple[str, str | None]]:
    if any(truthy(d.props.get("enabled", True)) for d in view.of_type(*EBS_DEFAULT)):
        return
    for r in view.of_type(*LAUNCHERS + VOLUME):
        plain = [name for name, encrypted in _block_devices(r) if not truthy(encrypted)]
        if r.resource_type in VOLUME and r.props.get("snapshotId") and r.props.get("encrypted") is None:
            continue  # a volume from a snapshot inherits the snapshot's encryption
        if plain:
            yield (
                f"{r.name!r}: {', '.join(plain)} not encrypted (set encrypted=True or "
                "aws.ebs.EncryptionByDefault)",
                r.urn,
            )


def _public_ip(view: StackView) -> Iterator[tuple[str, str | None]]:
    for r in view.of_type(*INSTANCE + LAUNCH_CONFIG):
        explicit = r.props.get("associatePublicIpAddress")
        if truthy(explicit):
            yield f"{r.name!r}: associatePublicIpAddress is true", r.urn
        elif not is_false(explicit) and r.resource_type in INSTANCE:
            for subnet in view.refers(r, "subnetId", SUBNET):
                if truthy(subnet.props.get("mapPublicIpOnLaunch")):
                    yield (
                        f"{r.name!r}: subnet {subnet.name!r} maps a public IP on launch and the instance "
                        "does not set associate_public_ip_address=False",
                        r.urn,
                    )
    for r in view.of_type(*TEMPLATE):
        for nic in as_list(r.props.get("networkInterfaces")):
            if truthy(get_path(nic, "associatePublicIpAddress")):
                yield f"{r.name!r}: a network interface sets associatePublicIpAddress", r.urn


RULES = [
    Rule(
        "aws-ec2-imdsv2",
        "EC2 instances and launch templates require IMDSv2 (session tokens) for instance metadata.",
        Severity.HIGH,
        Controls(cis=("AWS-5.6",), nist=("AC-3", "SC-7"), soc2=("CC6.1",), pci=("2.2.1",)),
        "Set metadata_options={http_tokens: 'required'} (or aws.ec2.InstanceMetadataDefaults for "
        "the account).",
        stack_check=_imds,
        checkov=("CKV_AWS_79",),
    ),
    Rule(
        "aws-ebs-encrypted",
        "EBS volumes, and the disks of instances and launch templates, are encrypted.",
        Severity.HIGH,
        Controls(cis=("AWS-2.2.1",), nist=("SC-28",), soc2=("CC6.1",), pci=("3.5.1",)),
        "Set encrypted=True on every block device (or enable aws.ebs.EncryptionByDefault in the region).",
        stack_check=_ebs,
        checkov=("CKV_AWS_3", "CKV_AWS_8", "CKV2_AWS_2"),
    ),
    Rule(
        "aws-ec2-no-public-ip",
        "EC2 instances get no public IP address (directly or from their subnet).",
        Severity.MEDIUM,
        Controls(nist=("SC-7",), soc2=("CC6.6",), pci=("1.4.4",)),
        "Put instances in private subnets (associate_public_ip_address=False) behind a load balancer; reach "
        "them with SSM Session Manager.",
        stack_check=_public_ip,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_88", "CKV_AWS_389"),
    ),
]
