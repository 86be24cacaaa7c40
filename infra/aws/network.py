"""Network: a VPC across two or more availability zones. Public subnets hold only the load
balancer; the tasks and the cache live in private subnets that reach out through NAT and can
never be reached from the internet. The security groups chain internet -> ALB -> tasks -> cache.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from agent_app import contract
from infra.aws.site import AwsSite, policy_json, service_assume_policy
from infra.component import Capability
from infra.spec import NetworkSpec

REDIS_PORT = 6379
HTTPS_PORT = 443
HTTP_PORT = 80
ANYWHERE_V4 = "0.0.0.0/0"
ANYWHERE_V6 = "::/0"
# The log "role" of the VPC's flow logs (its log group is /skyfleet/<site>/vpc-flow-logs).
FLOW_LOGS = "vpc-flow-logs"


@dataclass(frozen=True)
class NetworkArgs:
    site: AwsSite
    network: NetworkSpec
    kms_key_arn: pulumi.Input[str]
    log_retention_days: int
    app_port: int = contract.DEFAULT_PORT


def _ipv6_subnet(vpc_block: str | None, index: int) -> str | None:
    """The index-th /64 of the VPC's Amazon-assigned /56."""
    if vpc_block is None:
        return None
    return str(
        next(s for i, s in enumerate(ipaddress.ip_network(vpc_block).subnets(new_prefix=64)) if i == index)
    )


class Network(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, net = args.site, args.network
        zones_count = len(net.private_subnet_cidrs)

        # The site's VPC; dual-stack so the ALB answers IPv6 clients too.
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=net.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            assign_generated_ipv6_cidr_block=True,
            tags=site.tagged("vpc"),
            opts=self.child(),
        )
        # The default security group allows all traffic between its members: strip every rule.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            tags=site.tagged("default-deny"),
            opts=self.child(),
        )
        self._flow_logs(name, args)
        # Availability zones that need no opt-in, in a stable order.
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).names

        # The internet gateway: the only way in, and only to the public subnets.
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=site.tagged("igw"), opts=self.child()
        )
        # Public route table: default routes (v4 and v6) to the internet gateway.
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=self.vpc.id, tags=site.tagged("public"), opts=self.child()
        )
        route_v4 = aws.ec2.Route(
            f"{name}-public-v4",
            route_table_id=public_rt.id,
            destination_cidr_block=ANYWHERE_V4,
            gateway_id=igw.id,
            opts=self.child(),
        )
        route_v6 = aws.ec2.Route(
            f"{name}-public-v6",
            route_table_id=public_rt.id,
            destination_ipv6_cidr_block=ANYWHERE_V6,
            gateway_id=igw.id,
            opts=self.child(),
        )
        # What an internet-facing load balancer waits for (ELB refuses one while no gateway is attached).
        self.internet: list[pulumi.Resource] = [igw, route_v4, route_v6]

        self.public_subnets: list[aws.ec2.Subnet] = []
        self.private_subnets: list[aws.ec2.Subnet] = []
        nat_gateways: list[aws.ec2.NatGateway] = []
        # Prod gets one NAT gateway per zone (a zone outage keeps egress); dev shares one.
        nat_count = zones_count if site.prod else 1
        for i in range(zones_count):
            zone = zones.apply(lambda names, i=i: names[i])
            # Public subnet i: ALB nodes only; nothing launched here gets a public IP by default.
            public = aws.ec2.Subnet(
                f"{name}-public-{i}",
                vpc_id=self.vpc.id,
                cidr_block=net.public_subnet_cidrs[i],
                ipv6_cidr_block=self.vpc.ipv6_cidr_block.apply(lambda b, i=i: _ipv6_subnet(b, i)),
                availability_zone=zone,
                map_public_ip_on_launch=False,
                assign_ipv6_address_on_creation=False,
                tags={**site.tagged(f"public-{i}"), "tier": "public"},
                opts=self.child(),
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}", subnet_id=public.id, route_table_id=public_rt.id, opts=self.child()
            )
            self.public_subnets.append(public)
            if i < nat_count:
                # NAT gateway i: private egress (AWS APIs, the model endpoint) from zone i.
                eip = aws.ec2.Eip(
                    f"{name}-nat-{i}", domain="vpc", tags=site.tagged(f"nat-{i}"), opts=self.child()
                )
                nat_gateways.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{i}",
                        allocation_id=eip.id,
                        subnet_id=public.id,
                        tags=site.tagged(f"nat-{i}"),
                        opts=self.child(depends_on=[igw]),
                    )
                )

        for i in range(zones_count):
            zone = zones.apply(lambda names, i=i: names[i])
            # Private subnet i: tasks and cache nodes; no route from the internet.
            private = aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=self.vpc.id,
                cidr_block=net.private_subnet_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**site.tagged(f"private-{i}"), "tier": "private"},
                opts=self.child(),
            )
            # Private route table i: default route to the zone's NAT gateway (or the shared one).
            rt = aws.ec2.RouteTable(
                f"{name}-private-rt-{i}",
                vpc_id=self.vpc.id,
                tags=site.tagged(f"private-{i}"),
                opts=self.child(),
            )
            aws.ec2.Route(
                f"{name}-private-{i}-egress",
                route_table_id=rt.id,
                destination_cidr_block=ANYWHERE_V4,
                nat_gateway_id=nat_gateways[min(i, nat_count - 1)].id,
                opts=self.child(),
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}", subnet_id=private.id, route_table_id=rt.id, opts=self.child()
            )
            self.private_subnets.append(private)

        # Security groups: created empty, then wired with one rule resource per flow so the
        # groups can reference each other without a cycle.
        self.alb_sg = self._group(
            name, site, "alb", "ALB: HTTPS (and HTTP for the redirect) from the internet"
        )
        self.nlb_sg = self._group(
            name, site, "nlb", "NLB: TLS passthrough on 443 from the internet to the ALB"
        )
        self.task_sg = self._group(name, site, "tasks", "ECS tasks: the app port from the ALB only")
        self.cache_sg = self._group(name, site, "cache", "ElastiCache: Redis TLS from the tasks only")

        for port in (HTTPS_PORT, HTTP_PORT):
            for family in ("v4", "v6"):
                # Internet -> ALB on 443 (and 80, which only redirects to 443).
                self._from_anywhere(name, site, "alb", self.alb_sg, port, family)
        # Internet -> NLB on 443 only (its static addresses are IPv4): TLS bytes, passed through.
        self._from_anywhere(name, site, "nlb", self.nlb_sg, HTTPS_PORT, "v4")
        self._flow(name, site, "nlb-to-alb", self.nlb_sg, self.alb_sg, HTTPS_PORT)
        self._flow(name, site, "alb-to-tasks", self.alb_sg, self.task_sg, args.app_port)
        self._flow(name, site, "tasks-to-cache", self.task_sg, self.cache_sg, REDIS_PORT)
        # Tasks -> HTTPS anywhere: AWS APIs (SQS, Secrets Manager, ECR, Logs) and the model API,
        # through NAT. Nothing else leaves the tasks.
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-tasks-out-https",
            security_group_id=self.task_sg.id,
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            cidr_ipv4=ANYWHERE_V4,
            description="AWS APIs and the model endpoint over TLS",
            tags=site.tagged("tasks-out-https"),
            opts=self.child(),
        )
        # The cache group has no egress rule at all: Redis never initiates connections.

        self.register_outputs(
            {
                "vpcId": self.vpc.id,
                "publicSubnetIds": [s.id for s in self.public_subnets],
                "privateSubnetIds": [s.id for s in self.private_subnets],
                "albSecurityGroupId": self.alb_sg.id,
                "nlbSecurityGroupId": self.nlb_sg.id,
                "taskSecurityGroupId": self.task_sg.id,
                "cacheSecurityGroupId": self.cache_sg.id,
            }
        )

    @property
    def public_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [s.id for s in self.public_subnets]

    @property
    def private_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [s.id for s in self.private_subnets]

    def _flow_logs(self, name: str, args: NetworkArgs) -> None:
        """VPC flow logs: every accepted and rejected flow, for incident forensics."""
        site = args.site
        # Flow-log group: retention from the spec, encrypted with the site key.
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=site.log_group_name(FLOW_LOGS),
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            tags=site.tagged(FLOW_LOGS),
            opts=self.child(),
        )
        # The role the flow-log service assumes, for this account only.
        role = aws.iam.Role(
            f"{name}-flow-logs",
            description=f"Skyfleet {site.name}: VPC flow logs delivery",
            assume_role_policy=service_assume_policy("vpc-flow-logs.amazonaws.com", site.account),
            tags=site.tagged(FLOW_LOGS),
            opts=self.child(),
        )
        # It may write streams of its own log group and nothing else.
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=policy_json(
                [
                    {
                        "Sid": "WriteFlowLogStreams",
                        "Effect": "Allow",
                        "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                        "Resource": f"{site.log_group_arn(FLOW_LOGS)}:*",
                    }
                ]
            ),
            opts=self.child(),
        )
        # The flow log itself: all traffic of the VPC, one-minute aggregation.
        aws.ec2.FlowLog(
            f"{name}-flow-logs",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=site.tagged(FLOW_LOGS),
            opts=self.child(),
        )

    def _group(self, name: str, site: AwsSite, role: str, description: str) -> aws.ec2.SecurityGroup:
        # A security group with no inline rules: the rule resources below are its only flows.
        return aws.ec2.SecurityGroup(
            f"{name}-{role}-sg",
            name=f"{site.prefix}-{role}",
            description=description,
            vpc_id=self.vpc.id,
            revoke_rules_on_delete=True,
            tags=site.tagged(role),
            opts=self.child(),
        )

    def _from_anywhere(
        self, name: str, site: AwsSite, role: str, group: aws.ec2.SecurityGroup, port: int, family: str
    ) -> None:
        """Clients anywhere (IPv4 or IPv6) may reach ``group`` on ``port``."""
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-{role}-in-{port}-{family}",
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            cidr_ipv4=ANYWHERE_V4 if family == "v4" else None,
            cidr_ipv6=ANYWHERE_V6 if family == "v6" else None,
            description=f"clients on {port}",
            tags=site.tagged(f"{role}-in-{port}-{family}"),
            opts=self.child(),
        )

    def _flow(
        self,
        name: str,
        site: AwsSite,
        label: str,
        source: aws.ec2.SecurityGroup,
        dest: aws.ec2.SecurityGroup,
        port: int,
    ) -> None:
        """One allowed flow between two groups: egress on the source, ingress on the destination."""
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-{label}-out",
            security_group_id=source.id,
            referenced_security_group_id=dest.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=label,
            tags=site.tagged(f"{label}-out"),
            opts=self.child(),
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-{label}-in",
            security_group_id=dest.id,
            referenced_security_group_id=source.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=label,
            tags=site.tagged(f"{label}-in"),
            opts=self.child(),
        )
