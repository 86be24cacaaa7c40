"""The site's private network: one VPC, one subnet for Cloud Run's Direct VPC egress, and the
private services range Memorystore peers into. Nothing here has a public address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site
from infra.spec import NetworkSpec


@dataclass(frozen=True)
class NetworkArgs:
    site: Site
    network: NetworkSpec


class Network(GcpCapability):
    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, net = args.site, args.network

        # Custom-mode VPC: subnets only where we say, no auto-created ranges in every region.
        self.vpc = gcp.compute.Network(
            "vpc",
            name=site.resource_name("vpc"),
            project=site.project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            description=f"Skyfleet {site.name}: Cloud Run egress and Memorystore",
            opts=self.child(),
        )

        # The subnet Cloud Run instances get their egress addresses from; Google APIs (Pub/Sub,
        # Secret Manager) are reached privately, and flow logs record every connection.
        self.subnet = gcp.compute.Subnetwork(
            "subnet",
            name=site.resource_name("run"),
            project=site.project,
            region=site.region,
            network=self.vpc.id,
            ip_cidr_range=net.private_subnet_cidrs[0],
            private_ip_google_access=True,
            log_config=gcp.compute.SubnetworkLogConfigArgs(
                aggregation_interval="INTERVAL_5_SEC",
                flow_sampling=0.5,
                metadata="INCLUDE_ALL_METADATA",
            ),
            opts=self.child(),
        )

        # Explicit, logged deny of all inbound traffic: the VPC's implied rule, made auditable.
        # Cloud Run is reached only through the load balancer, never through this network.
        self.deny_ingress = gcp.compute.Firewall(
            "deny-all-ingress",
            name=site.resource_name("deny-all-ingress"),
            project=site.project,
            network=self.vpc.id,
            direction="INGRESS",
            priority=65534,
            source_ranges=["0.0.0.0/0"],
            denies=[gcp.compute.FirewallDenyArgs(protocol="all")],
            log_config=gcp.compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
            opts=self.child(),
        )

        # The range Google's service producers (Memorystore) allocate from, peered privately.
        services = ipaddress.ip_network(net.services_cidr)
        self.services_range = gcp.compute.GlobalAddress(
            "private-services-range",
            name=site.resource_name("private-services"),
            project=site.project,
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            address=str(services.network_address),
            prefix_length=services.prefixlen,
            network=self.vpc.id,
            labels=dict(site.labels),
            opts=self.child(),
        )

        # Private service access: Memorystore gets an address inside our peered range only.
        self.services_connection = gcp.servicenetworking.Connection(
            "private-services",
            network=self.vpc.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[self.services_range.name],
            opts=self.child(),
        )

        self.register_outputs(
            {
                "vpc": self.vpc.id,
                "subnet": self.subnet.id,
                "servicesRange": self.services_range.name,
            }
        )
