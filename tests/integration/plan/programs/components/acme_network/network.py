"""``acme:network:Network``: a VPC with a subnet per zone and a NAT gateway (remote)."""

# Written as Pulumi's SDK generator writes a component's class: the instance is ``__self__``.
# pyright: reportSelfClsParameterName=false

from collections.abc import Sequence

import pulumi
import pulumi_aws  # the getters name its classes


@pulumi.input_type
class NetworkArgs:
    def __init__(__self__, *, cidr_block: str | None = None, zones: int | None = None) -> None:
        if cidr_block is not None:
            pulumi.set(__self__, "cidr_block", cidr_block)
        if zones is not None:
            pulumi.set(__self__, "zones", zones)

    @property
    @pulumi.getter(name="cidrBlock")
    def cidr_block(self) -> str | None:
        return pulumi.get(self, "cidr_block")

    @cidr_block.setter
    def cidr_block(self, value: str | None) -> None:
        pulumi.set(self, "cidr_block", value)

    @property
    @pulumi.getter
    def zones(self) -> int | None:
        return pulumi.get(self, "zones")

    @zones.setter
    def zones(self, value: int | None) -> None:
        pulumi.set(self, "zones", value)


class Network(pulumi.ComponentResource):
    def __init__(
        __self__,
        resource_name: str,
        opts: pulumi.ResourceOptions | None = None,
        cidr_block: str | None = None,
        zones: int | None = None,
    ) -> None:
        __self__._internal_init(resource_name, opts, cidr_block=cidr_block, zones=zones)

    def _internal_init(
        __self__,
        resource_name: str,
        opts: pulumi.ResourceOptions | None = None,
        cidr_block: str | None = None,
        zones: int | None = None,
        __props__: NetworkArgs | None = None,
    ) -> None:
        opts = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(), opts)
        if __props__ is None and opts.urn is None:
            __props__ = NetworkArgs.__new__(NetworkArgs)
            __props__.__dict__["cidr_block"] = cidr_block
            __props__.__dict__["zones"] = zones
            __props__.__dict__["nat_gateway_ip"] = None
            __props__.__dict__["subnet_ids"] = None
            __props__.__dict__["subnets"] = None
            __props__.__dict__["vpc"] = None
        # The SDK takes an @input_type object as props (generated SDKs pass one), though its
        # annotation names only a mapping.
        super().__init__(
            "acme:network:Network",
            resource_name,
            __props__,  # pyright: ignore[reportArgumentType]
            opts,
            remote=True,
        )

    @property
    @pulumi.getter
    def vpc(self) -> pulumi.Output["pulumi_aws.ec2.Vpc"]:
        return pulumi.get(self, "vpc")

    @property
    @pulumi.getter
    def subnets(self) -> pulumi.Output[Sequence["pulumi_aws.ec2.Subnet"]]:
        return pulumi.get(self, "subnets")

    @property
    @pulumi.getter(name="subnetIds")
    def subnet_ids(self) -> pulumi.Output[Sequence[str]]:
        return pulumi.get(self, "subnet_ids")

    @property
    @pulumi.getter(name="natGatewayIp")
    def nat_gateway_ip(self) -> pulumi.Output[str]:
        return pulumi.get(self, "nat_gateway_ip")
