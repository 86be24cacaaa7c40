# ruff: noqa: F811 (the `shipped` fixture is imported from test_deployability and requested by name)
"""skyfleet-network-paths on the real shipped plans: every network path the app needs, derived
from the plan (the app's environment, the ECS task's image pulls, secrets and logs, the load
balancer's targets, the Ingress backends), is admitted by the platform's network controls in each
direction they filter. Each test plants one defect a program bug would produce (a security group
rule, a NetworkPolicy rule or peer, a Cloud Run VPC setting taken away or pointed elsewhere) into
a copy of a shipped plan, and checks the finding through the real pack, naming the resource and
the path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from policies.compliance.rules import ALL_RULES
from skyfleet.plan import Plan, PlannedResource
from tests.integration.policies.test_deployability import (  # noqa: F401 (shipped: a fixture)
    _planned,
    assert_names,
    check,
    containers_json,
    copy_of,
    edit,
    fires,
    remove,
    res,
    shipped,
)
from tests.support.gate import Gate, sdk_class

RULE = "skyfleet-network-paths"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ECS_SERVICE = "aws:ecs/service:Service"
CACHE = "aws:elasticache/replicationGroup:ReplicationGroup"
SUBNET = "aws:ec2/subnet:Subnet"
LB = "aws:lb/loadBalancer:LoadBalancer"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
RUN = "gcp:cloudrunv2/service:Service"
FIREWALL = "gcp:compute/firewall:Firewall"

REDIS_HOST = "master.skyfleet-aws-prod-cache.920adc.ew1.cache.amazonaws.com"
SENTINELS = ", ".join(f"redis-{i}.redis-headless.agent-app.svc.cluster.local:26379" for i in range(3))


def quiet(gate: Gate, plan: Plan) -> None:
    """The rule is in the pack and finds nothing in ``plan``."""
    assert RULE in gate.rules
    assert [f.message.splitlines()[-1] for f in check(gate, plan).of(RULE)] == []


def fire_on(gate: Gate, plan: Plan, resources: list[PlannedResource], *text: str) -> None:
    """The rule fires on each of ``resources`` naming each of ``text``, and on nothing else."""
    checked = check(gate, plan)
    for r in resources:
        assert_names(checked.on(RULE, r), plan, RULE, r, *text)
    assert {f.urn for f in checked.of(RULE)} == {r.urn for r in resources}, [
        (f.resource_name, f.message.splitlines()[-1]) for f in checked.of(RULE)
    ]


def services(plan: Plan) -> list[PlannedResource]:
    return [res(plan, "service-api", ECS_SERVICE), res(plan, "service-worker", ECS_SERVICE)]


# -- the shipped stacks, the pack, preview ------------------------------------------------------


def test_shipped_stacks_pass(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Every shipped stack's controls admit every path its app needs."""
    assert RULE in gate.rules
    found = [
        (stack, f.resource_name, f.message.splitlines()[-1])
        for stack, plan in shipped.items()
        for f in check(gate, plan).of(RULE)
    ]
    assert found == []


def test_rule_is_in_the_pack_mandatory_for_every_environment(gate: Gate) -> None:
    assert RULE in gate.rules
    rule = next(r for r in ALL_RULES if r.id == RULE)
    assert rule.kind == "stack" and not rule.prod_only and rule.enforcement.name == "MANDATORY"
    assert rule.group == "skyfleet"
    assert gate.rules[RULE].enforcement == "mandatory"


def test_preview_unknowns_propagate_as_the_sdk_does(gate: Gate, previews: dict[str, Plan]) -> None:
    """In a preview the rule runs (on-prem: every value it reads is known) or answers the SDK's
    advisory 'can't run during preview' (ECS: group ids; Cloud Run: the cache's address)."""
    assert RULE in gate.rules
    assert [f.preview_unknown for f in check(gate, previews["aws-prod"]).of(RULE)] == [True]
    for plan in previews.values():
        for f in check(gate, plan).of(RULE):
            assert f.preview_unknown and not f.mandatory and "during preview" in f.message, f.message
    assert check(gate, previews["onprem-prod"]).of(RULE) == []


def test_type_tokens_the_rule_reads_are_the_sdks() -> None:
    from policies.compliance.rules import skyfleet_network

    token = re.compile(r"^(aws|gcp|kubernetes):[^:]+:[A-Za-z]+$")
    found = {
        v
        for value in vars(skyfleet_network).values()
        for v in (value if isinstance(value, tuple) else (value,))
        if isinstance(v, str) and token.match(v)
    }
    assert {"aws:ec2/vpcEndpoint:VpcEndpoint", "gcp:vpcaccess/connector:Connector"} <= found
    for t in sorted(found):
        assert sdk_class(t) is not None, t


# -- AWS (aws-prod): security groups, both directions ---------------------------------------------


def test_aws_tasks_without_https_egress(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Without egress on 443 the tasks pull no image, read no secret, ship no log, reach neither
    SQS nor the other sites (skyfleet-fleet-egress checks Kubernetes only)."""
    plan = copy_of(shipped, "aws-prod")
    quiet(gate, plan)
    remove(plan, res(plan, "network-tasks-out-https", SG_EGRESS))
    fire_on(
        gate,
        plan,
        services(plan),
        "cannot reach the internet on TCP 443, which it needs for "
        "the image pull from ECR (210987654321.dkr.ecr.eu-west-1.amazonaws.com); "
        "the logs to CloudWatch Logs (logs.eu-west-1.amazonaws.com); "
        "the secrets from Secrets Manager (secretsmanager.eu-west-1.amazonaws.com); "
        "AGENT_QUEUE_URL (SQS sqs.eu-west-1.amazonaws.com); "
        "AGENT_FLEET_SITES (gcp.agents.example.com, onprem.agents.example.com): "
        "no egress rule of its security group(s) 'network-tasks-sg' admits TCP 443 to a public address "
        "or prefix list (they allow out: TCP 6379 to 'network-cache-sg')",
    )
    assert check(gate, plan).of("skyfleet-fleet-egress") == []  # not that rule's platform


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        ({"cidrIpv4": "10.0.0.0/8"}, "TCP 443 to 10.0.0.0/8"),
        ({"fromPort": 8443, "toPort": 8443}, "TCP 8443 to 0.0.0.0/0"),
        ({"ipProtocol": "udp"}, "UDP 443 to 0.0.0.0/0"),
    ],
    ids=["private range only", "another port", "udp"],
)
def test_aws_https_egress_that_does_not_reach_the_internet(
    gate: Gate, shipped: dict[str, Plan], change: dict[str, Any], allowed: str
) -> None:
    plan = copy_of(shipped, "aws-prod")
    edit(res(plan, "network-tasks-out-https", SG_EGRESS), lambda p: p.update(change))
    fire_on(
        gate, plan, services(plan), "cannot reach the internet on TCP 443", f"(they allow out: {allowed};"
    )


@pytest.mark.parametrize(
    ("url", "fires"),
    [
        ("http://127.0.0.1:11434/v1", False),
        ("http://localhost:11434/v1", False),
        ("http://models.internal:11434/v1", True),
    ],
    ids=["loopback address", "localhost", "another host"],
)
def test_aws_a_model_endpoint_on_the_loopback_needs_no_network_path(
    gate: Gate, shipped: dict[str, Plan], url: str, fires: bool
) -> None:
    """A model served by a sidecar in the task, on its loopback, crosses no security group or
    ACL; the same port on another host needs egress to it."""
    plan = copy_of(shipped, "aws-prod")

    def model_at(defs: list[dict[str, Any]]) -> None:
        for d in defs:
            env = [e for e in d.get("environment", []) if e["name"] != "AGENT_MODEL_BACKEND"]
            if any(e["name"] == "AGENT_QUEUE_URL" for e in env):  # the app's containers
                model = [("AGENT_MODEL_BACKEND", "openai"), ("AGENT_MODEL_BASE_URL", url)]
                d["environment"] = [*env, *({"name": k, "value": v} for k, v in model)]

    for role in ("api", "worker"):
        edit(res(plan, f"service-{role}", "aws:ecs/taskDefinition:TaskDefinition"), containers_json(model_at))
    if fires:
        fire_on(
            gate,
            plan,
            services(plan),
            "on TCP 11434, which it needs for AGENT_MODEL_BASE_URL (models.internal)",
        )
    else:
        quiet(gate, plan)


def test_aws_tasks_to_cache_egress_removed(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    remove(plan, res(plan, "network-tasks-to-cache-out", SG_EGRESS))
    fire_on(
        gate,
        plan,
        services(plan),
        "cannot reach ElastiCache replication group 'cache-redis' on TCP 6379, which it needs for "
        f"AGENT_REDIS_URL ({REDIS_HOST}:6379): no egress rule of its security group(s) 'network-tasks-sg' "
        "admits TCP 6379 to security group(s) 'network-cache-sg' (they allow out: TCP 443 to 0.0.0.0/0)",
    )


def test_aws_cache_ingress_from_the_tasks_removed(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    cache = res(plan, "cache-redis", CACHE)
    remove(plan, res(plan, "network-tasks-to-cache-in", SG_INGRESS))
    checked = check(gate, plan)
    found = checked.on(RULE, cache)
    for name in ("service-api", "service-worker"):
        assert_names(
            found,
            plan,
            RULE,
            cache,
            f"ElastiCache replication group 'cache-redis' does not admit ECS service '{name}' on TCP 6379, "
            f"which ECS service '{name}' needs for AGENT_REDIS_URL ({REDIS_HOST}:6379): no ingress rule of "
            "its security group(s) 'network-cache-sg' admits security group(s) 'network-tasks-sg' (they "
            "allow in: nothing)",
        )
    assert {f.urn for f in checked.of(RULE)} == {cache.urn}


@pytest.mark.parametrize(
    ("cidr", "admitted"),
    [("10.40.0.0/16", True), ("10.40.64.0/18", False), ("10.40.0.0/22", False)],
    ids=["the VPC", "two of the three task subnets", "a public subnet"],
)
def test_aws_cache_ingress_by_cidr_covers_every_task_subnet(
    gate: Gate, shipped: dict[str, Plan], cidr: str, admitted: bool
) -> None:
    """A CIDR source admits the tasks when it covers every subnet their service runs in."""
    plan = copy_of(shipped, "aws-prod")
    rule = res(plan, "network-tasks-to-cache-in", SG_INGRESS)

    def to_cidr(p: dict[str, Any]) -> None:
        p.pop("referencedSecurityGroupId")
        p["cidrIpv4"] = cidr

    edit(rule, to_cidr)
    rule.property_dependencies["referencedSecurityGroupId"] = []
    if admitted:
        quiet(gate, plan)
    else:
        fires(
            gate,
            plan,
            RULE,
            res(plan, "cache-redis", CACHE),
            f"(they allow in: TCP 6379 from {cidr})",
            only=True,
        )


def test_aws_alb_to_tasks_ingress_removed(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    api = res(plan, "service-api", ECS_SERVICE)
    remove(plan, res(plan, "network-alb-to-tasks-in", SG_INGRESS))
    fires(
        gate,
        plan,
        RULE,
        api,
        "ECS service 'service-api' does not admit load balancer 'lb-alb' on TCP 8080, which load balancer "
        "'lb-alb' needs for target group 'lb-api' forwarding to container 'api' port 8080: no ingress rule "
        "of its security group(s) 'network-tasks-sg' admits security group(s) 'network-alb-sg' (they allow "
        "in: nothing)",
        only=True,
    )


def test_aws_alb_to_tasks_egress_removed(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    alb = res(plan, "lb-alb", LB)
    remove(plan, res(plan, "network-alb-to-tasks-out", SG_EGRESS))
    fires(
        gate,
        plan,
        RULE,
        alb,
        "load balancer 'lb-alb' cannot reach ECS service 'service-api' on TCP 8080, which it needs for "
        "target group 'lb-api' forwarding to container 'api' port 8080: no egress rule of its security "
        "group(s) 'network-alb-sg' admits TCP 8080 to security group(s) 'network-tasks-sg' (they allow out: "
        "nothing)",
        only=True,
    )


def test_aws_alb_to_tasks_on_another_port(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The flow must open the port the target group forwards to, not the port it was written for."""
    plan = copy_of(shipped, "aws-prod")
    for name, type_ in (("network-alb-to-tasks-in", SG_INGRESS), ("network-alb-to-tasks-out", SG_EGRESS)):
        edit(res(plan, name, type_), lambda p: p.update(fromPort=80, toPort=80))
    checked = check(gate, plan)
    assert_names(
        checked.on(RULE, res(plan, "lb-alb", LB)),
        plan,
        RULE,
        res(plan, "lb-alb", LB),
        "(they allow out: TCP 80",
    )
    api = res(plan, "service-api", ECS_SERVICE)
    assert_names(checked.on(RULE, api), plan, RULE, api, "on TCP 8080", "(they allow in: TCP 80 from")


def test_aws_nlb_to_alb_egress_removed(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The static-address NLB forwards TLS to the ALB: its group must let it out (the ALB's
    admits the internet on 443, so the NLB is admitted there)."""
    plan = copy_of(shipped, "aws-prod")
    remove(plan, res(plan, "network-nlb-to-alb-in", SG_INGRESS))
    quiet(gate, plan)
    remove(plan, res(plan, "network-nlb-to-alb-out", SG_EGRESS))
    fires(
        gate,
        plan,
        RULE,
        res(plan, "lb-nlb", LB),
        "load balancer 'lb-nlb' cannot reach load balancer 'lb-alb' on TCP 443, which it needs for target "
        "group 'lb-nlb-alb' forwarding to load balancer 'lb-alb' port 443",
        only=True,
    )


def _endpoint_for_secrets(plan: Plan) -> tuple[PlannedResource, PlannedResource]:
    """An interface endpoint for Secrets Manager in its own group, wired both ways from the tasks."""
    tasks_sg = res(plan, "network-tasks-sg", SG)
    tasks_id = tasks_sg.outputs["id"]
    group = _planned(
        tasks_sg,
        SG,
        "network-endpoints-sg",
        {**tasks_sg.outputs, "id": "sg-0e0e0e0e0e0e0e0e0", "name": "skyfleet-aws-prod-endpoints"},
    )
    private = [res(plan, f"network-private-{i}", "aws:ec2/subnet:Subnet").outputs["id"] for i in range(3)]
    endpoint = _planned(
        tasks_sg,
        "aws:ec2/vpcEndpoint:VpcEndpoint",
        "network-secretsmanager",
        {
            "id": "vpce-0123456789abcdef0",
            "serviceName": "com.amazonaws.eu-west-1.secretsmanager",
            "vpcEndpointType": "Interface",
            "privateDnsEnabled": True,
            "securityGroupIds": [group.outputs["id"]],
            "subnetIds": private,
        },
    )
    template = res(plan, "network-tasks-to-cache-out", SG_EGRESS)
    flow = {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443}
    out = _planned(
        template,
        SG_EGRESS,
        "network-tasks-to-endpoints-out",
        {**flow, "securityGroupId": tasks_id, "referencedSecurityGroupId": group.outputs["id"]},
    )
    into = _planned(
        template,
        SG_INGRESS,
        "network-tasks-to-endpoints-in",
        {**flow, "securityGroupId": group.outputs["id"], "referencedSecurityGroupId": tasks_id},
    )
    plan.resources += [group, endpoint, out, into]
    return endpoint, into


def test_aws_an_interface_endpoint_serves_its_api_inside_the_vpc(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    """With a Secrets Manager endpoint (private DNS on) the secrets no longer need the internet,
    but the endpoint's group must admit the tasks."""
    plan = copy_of(shipped, "aws-prod")
    endpoint, into = _endpoint_for_secrets(plan)
    quiet(gate, plan)
    remove(plan, res(plan, "network-tasks-out-https", SG_EGRESS))
    checked = check(gate, plan)
    for svc in services(plan):
        found = checked.on(RULE, svc)
        assert_names(found, plan, RULE, svc, "the image pull from ECR", "AGENT_QUEUE_URL (SQS")
        assert not any("Secrets Manager" in f.message for f in found)
    remove(plan, into)
    checked = check(gate, plan)
    assert_names(
        checked.on(RULE, endpoint),
        plan,
        RULE,
        endpoint,
        "VPC endpoint 'network-secretsmanager' (com.amazonaws.eu-west-1.secretsmanager) does not admit ECS "
        "service 'service-api' on TCP 443, which ECS service 'service-api' needs for the secrets from "
        "Secrets Manager (secretsmanager.eu-west-1.amazonaws.com): no ingress rule of its security group(s) "
        "'network-endpoints-sg' admits security group(s) 'network-tasks-sg'",
    )


# -- AWS (aws-prod): routes to the internet ------------------------------------------------------

ROUTE = "aws:ec2/route:Route"
NAT = "aws:ec2/natGateway:NatGateway"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"


def lbs(plan: Plan) -> list[PlannedResource]:
    return [res(plan, "lb-alb", LB), res(plan, "lb-nlb", LB)]


def test_aws_tasks_need_a_default_route_out_of_their_subnets(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A private subnet whose table lost its route to the NAT gateway: the security groups still
    admit everything, but the tasks there reach nothing outside the VPC."""
    plan = copy_of(shipped, "aws-prod")
    quiet(gate, plan)
    remove(plan, res(plan, "network-private-1-egress", ROUTE))
    fire_on(
        gate,
        plan,
        services(plan),
        "cannot reach the internet, which it needs for the image pull from ECR",
        "AGENT_FLEET_SITES (",
        "subnet 'network-private-1' (route table 'network-private-rt-1') has no default route (0.0.0.0/0)",
    )
    assert "network-private-0" not in " ".join(f.message for f in check(gate, plan).of(RULE))


def test_aws_needs_served_by_vpc_endpoints_need_no_route_out(gate: Gate, shipped: dict[str, Plan]) -> None:
    """With interface endpoints for ECR, Logs and SQS and S3's gateway endpoint, a subnet without a
    route out still lacks the internet for the fleet's other sites, but no longer for the image
    pull or the logs; without the S3 gateway endpoint the image pull needs the internet again."""
    plan = copy_of(shipped, "aws-prod")
    endpoint, _ = _endpoint_for_secrets(plan)
    for service in ("ecr.api", "ecr.dkr", "logs", "sqs"):
        plan.resources.append(
            _planned(
                endpoint,
                "aws:ec2/vpcEndpoint:VpcEndpoint",
                f"network-{service}",
                {**endpoint.outputs, "serviceName": f"com.amazonaws.eu-west-1.{service}"},
            )
        )
    s3 = _planned(
        endpoint,
        "aws:ec2/vpcEndpoint:VpcEndpoint",
        "network-s3",
        {"id": "vpce-0s3", "serviceName": "com.amazonaws.eu-west-1.s3", "vpcEndpointType": "Gateway"},
    )
    plan.resources.append(s3)
    remove(plan, res(plan, "network-private-1-egress", ROUTE))
    found = " ".join(f.message for f in check(gate, plan).of(RULE))
    assert "cannot reach the internet, which it needs for AGENT_FLEET_SITES" in found
    assert "the image pull" not in found and "CloudWatch Logs" not in found
    plan.resources.remove(s3)
    found = " ".join(f.message for f in check(gate, plan).of(RULE))
    assert "cannot reach the internet, which it needs for the image pull from ECR" in found


def test_aws_a_subnet_without_association_uses_the_vpcs_bare_main_table(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "aws-prod")
    remove(plan, res(plan, "network-private-2", ASSOCIATION))
    fire_on(
        gate,
        plan,
        services(plan),
        "subnet 'network-private-2' (the main route table of VPC 'network-vpc') has no default route",
    )


def test_aws_the_nat_gateway_must_reach_an_internet_gateway(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The public table lost its route to the internet gateway: the NAT gateways in those subnets
    lead nowhere, and the internet-facing load balancers there cannot be reached."""
    plan = copy_of(shipped, "aws-prod")
    remove(plan, res(plan, "network-public-v4", ROUTE))
    fire_on(
        gate,
        plan,
        [*services(plan), *lbs(plan)],
        "subnet 'network-public-0' (route table 'network-public-rt') has no default route to an "
        "internet gateway",
    )
    checked = check(gate, plan)
    assert "routes to NAT gateway 'network-nat-0', whose subnet 'network-public-0'" in " ".join(
        f.message for f in checked.on(RULE, services(plan)[0])
    )
    assert "cannot be reached from the internet" in checked.on(RULE, lbs(plan)[1])[0].message


def test_aws_a_private_nat_gateway_does_not_reach_the_internet(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    edit(res(plan, "network-nat-0", NAT), lambda p: p.update(connectivityType="private"))
    fire_on(gate, plan, services(plan), "routes to NAT gateway 'network-nat-0', a private one (no internet)")


def test_aws_an_internet_gateway_route_needs_public_task_addresses(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "aws-prod")
    igw = res(plan, "network-igw", "aws:ec2/internetGateway:InternetGateway").outputs["id"]

    def to_gateway(p: dict[str, Any]) -> None:
        p.pop("natGatewayId")
        p["gatewayId"] = igw

    edit(res(plan, "network-private-0-egress", ROUTE), to_gateway)
    fire_on(gate, plan, services(plan), "routes to an internet gateway, but the tasks get no public IP")
    for svc in services(plan):
        edit(svc, lambda p: p["networkConfiguration"].update(assignPublicIp=True))
    quiet(gate, plan)


def test_aws_a_default_route_through_a_transit_gateway_is_not_judged(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "aws-prod")

    def through_transit(p: dict[str, Any]) -> None:
        p.pop("natGatewayId")
        p["transitGatewayId"] = "tgw-0123456789abcdef0"

    for i in range(3):
        edit(res(plan, f"network-private-{i}-egress", ROUTE), through_transit)
    quiet(gate, plan)


# -- AWS (aws-prod): network ACLs, stateless --------------------------------------------------------

NACL = "aws:ec2/networkAcl:NetworkAcl"
NACL_RULE = "aws:ec2/networkAclRule:NetworkAclRule"
NACL_ASSOCIATION = "aws:ec2/networkAclAssociation:NetworkAclAssociation"
DEFAULT_NACL = "aws:ec2/defaultNetworkAcl:DefaultNetworkAcl"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
VPC_CIDR = "10.40.0.0/16"
PUBLIC_CIDR = "10.40.0.0/20"  # the three public subnets (10.40.0.0/22, 4.0/22, 8.0/22)


def _entry(number: int, action: str, cidr: str, ports: tuple[int, int] | None = None) -> dict[str, Any]:
    """An ACL entry: TCP on ``ports``, or every protocol."""
    low, high = ports or (0, 0)
    return {
        "ruleNo": number,
        "action": action,
        "protocol": "tcp" if ports else "-1",
        "cidrBlock": cidr,
        "fromPort": low,
        "toPort": high,
    }


def _subnets(plan: Plan, tier: str) -> list[PlannedResource]:
    return [res(plan, f"network-{tier}-{i}", SUBNET) for i in range(3)]


def _acl(
    plan: Plan, name: str, tier: str, ingress: list[Any], egress: list[Any], *, associate: bool = False
) -> PlannedResource:
    """A network ACL on the VPC's ``tier`` subnets (private or public), named in its subnetIds or,
    with ``associate``, by a NetworkAclAssociation per subnet."""
    vpc = res(plan, "network-vpc", "aws:ec2/vpc:Vpc")
    subnets = [s.outputs["id"] for s in _subnets(plan, tier)]
    props = {"id": f"acl-{name}", "vpcId": vpc.outputs["id"], "ingress": ingress, "egress": egress}
    acl = _planned(vpc, NACL, name, {**props, "subnetIds": [] if associate else subnets})
    plan.resources.append(acl)
    for i, subnet in enumerate(subnets if associate else ()):
        association = {"id": f"aclassoc-{name}-{i}", "networkAclId": props["id"], "subnetId": subnet}
        plan.resources.append(_planned(vpc, NACL_ASSOCIATION, f"{name}-{i}", association))
    return acl


def _rule(
    acl: PlannedResource, number: int, egress: bool, action: str, cidr: str, ports: str
) -> PlannedResource:
    """A NetworkAclRule on ``acl`` for TCP ``ports`` ("6379"), written as strings as a program may."""
    props = {
        "networkAclId": acl.outputs["id"],
        "ruleNumber": number,
        "egress": egress,
        "protocol": "6",
        "ruleAction": action,
        "cidrBlock": cidr,
        "fromPort": ports,
        "toPort": ports,
    }
    return _planned(acl, NACL_RULE, f"{acl.name}-{number}", props)


# What AWS documents for a VPC with public and private subnets behind a NAT gateway: the VPC's
# own traffic, HTTPS (and the ALB's redirect) in from the internet, HTTPS out, and the replies
# of both directions on the ephemeral ports.
RECOMMENDED_INGRESS = [
    _entry(100, "allow", VPC_CIDR),
    _entry(110, "allow", "0.0.0.0/0", (80, 80)),
    _entry(120, "allow", "0.0.0.0/0", (443, 443)),
    _entry(130, "allow", "0.0.0.0/0", (1024, 65535)),
]
RECOMMENDED_EGRESS = [
    _entry(100, "allow", VPC_CIDR),
    _entry(110, "allow", "0.0.0.0/0", (443, 443)),
    _entry(120, "allow", "0.0.0.0/0", (1024, 65535)),
]


def test_aws_an_adopted_default_acl_without_entries_stops_every_path(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    """The VPC's default ACL adopted with no entries (DefaultNetworkAcl replaces AWS's entries
    with the program's): nothing crosses a subnet's edge. With AWS's recommended entries it is
    quiet again."""
    plan = copy_of(shipped, "aws-prod")
    vpc = res(plan, "network-vpc", "aws:ec2/vpc:Vpc")
    default = _planned(
        vpc,
        DEFAULT_NACL,
        "network-default-acl",
        {"id": vpc.outputs["defaultNetworkAclId"], "defaultNetworkAclId": vpc.outputs["defaultNetworkAclId"]},
    )
    plan.resources.append(default)
    cache = res(plan, "cache-redis", CACHE)
    fire_on(
        gate,
        plan,
        [*services(plan), cache, *lbs(plan)],
        "default network ACL 'network-default-acl' of subnet",
    )
    checked = check(gate, plan)
    assert_names(
        checked.on(RULE, cache),
        plan,
        RULE,
        cache,
        "does not admit ECS service 'service-api' on TCP 6379, which ECS service 'service-api' needs for "
        "AGENT_REDIS_URL",
        # Each subnet names the other subnets' blocks: its own crosses no ACL.
        "of subnet 'network-private-1' does not let it in: no rule admits TCP 6379 from 10.40.64.0/19, "
        "10.40.128.0/19 (the ACL's final deny)",
    )
    assert_names(
        checked.on(RULE, lbs(plan)[0]),
        plan,
        RULE,
        lbs(plan)[0],
        "cannot be reached from the internet on TCP 80:",
        "cannot be reached from the internet on TCP 443:",
    )
    api = " ".join(f.message for f in checked.on(RULE, services(plan)[0]))
    for text in (
        # The tasks' own subnets and, on the way on, their NAT gateways' subnets.
        "cannot reach the internet on TCP 443, which it needs for the image pull from ECR",
        "of subnets 'network-private-0', 'network-private-1', 'network-private-2', 'network-public-0', "
        "'network-public-1', 'network-public-2' does not let it out: no rule admits TCP 443 to a public "
        "address (the ACL's final deny)",
        "of subnet 'network-public-0' does not let it in: no rule admits TCP 443 from 10.40.64.0/19",
        "does not admit load balancer 'lb-alb' on TCP 8080",
    ):
        assert text in api, (text, api)
    for entries, way in ((RECOMMENDED_INGRESS, "ingress"), (RECOMMENDED_EGRESS, "egress")):
        edit(default, lambda p, e=entries, w=way: p.update({w: e}))
    quiet(gate, plan)


def test_aws_acl_replies_need_their_own_entries(gate: Gate, shipped: dict[str, Plan]) -> None:
    """ACLs are stateless: private subnets that let everything out but only the VPC in stop the
    replies from the internet, and so every request the tasks send out through the NAT gateway."""
    plan = copy_of(shipped, "aws-prod")
    acl = _acl(
        plan, "private-acl", "private", [_entry(100, "allow", VPC_CIDR)], [_entry(100, "allow", "0.0.0.0/0")]
    )
    fire_on(
        gate,
        plan,
        services(plan),
        "cannot reach the internet on TCP 443, which it needs for the image pull from ECR",
        "network ACL 'private-acl' of subnets 'network-private-0', 'network-private-1', 'network-private-2' "
        "does not let the replies in: no rule admits TCP 32768-60999 from a public address (the ACL's "
        "final deny)",
    )
    # Replies let in from a part of the internet only: which address a host has is not known.
    edit(acl, lambda p: p["ingress"].append(_entry(110, "allow", "52.0.0.0/8", (32768, 60999))))
    quiet(gate, plan)
    edit(acl, lambda p: p["ingress"].__setitem__(1, _entry(110, "allow", "0.0.0.0/0", (1024, 65535))))
    quiet(gate, plan)


def test_aws_acl_rule_resources_are_read_in_rule_number_order(gate: Gate, shipped: dict[str, Plan]) -> None:
    """NetworkAclRule resources on an ACL without inline entries: a deny numbered before the
    allow-all stops the cache port. A deny of part of the tasks' subnet stops the tasks there (a
    task may take any address); a deny of part of the cache's subnet is not judged (the node's
    address is not known)."""
    plan = copy_of(shipped, "aws-prod")
    acl = _acl(plan, "private-acl", "private", [], [])
    for egress in (False, True):
        plan.resources.append(_rule(acl, 100, egress, "allow", "0.0.0.0/0", "0"))
        edit(plan.resources[-1], lambda p: p.update(protocol="-1"))
    quiet(gate, plan)
    deny = _rule(acl, 50, False, "deny", VPC_CIDR, "6379")
    plan.resources.append(deny)
    cache = res(plan, "cache-redis", CACHE)
    fire_on(
        gate,
        plan,
        [cache],
        "ElastiCache replication group 'cache-redis' does not admit ECS service 'service-worker' on TCP 6379",
        "network ACL 'private-acl' of subnets 'network-private-0', 'network-private-1', 'network-private-2' "
        "does not let it in: its rule 50 denies TCP 6379 from 10.40.0.0/16",
    )
    edit(deny, lambda p: p.update(cidrBlock="10.40.64.0/24"))  # part of the tasks' network-private-0
    fire_on(
        gate,
        plan,
        [cache],
        "of subnets 'network-private-1', 'network-private-2' does not let it in: its rule 50 denies TCP 6379 "
        "from 10.40.64.0/24",
    )
    plan.resources.append(_rule(acl, 60, True, "deny", "10.40.96.0/24", "6379"))  # part of the cache's
    fire_on(gate, plan, [cache], "its rule 50 denies TCP 6379 from 10.40.64.0/24")
    edit(deny, lambda p: p.update(ruleNumber=150))
    quiet(gate, plan)


def test_aws_the_nat_gateways_subnets_acl_is_on_the_way_out(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The public subnets' ACL (associated by NetworkAclAssociation) written for the load
    balancers only: HTTPS in, the replies out, the targets' port to the VPC. The NAT gateways there
    cannot send the tasks' HTTPS on."""
    plan = copy_of(shipped, "aws-prod")
    ingress = [
        _entry(100, "allow", "0.0.0.0/0", (80, 80)),
        _entry(110, "allow", "0.0.0.0/0", (443, 443)),
        _entry(120, "allow", "0.0.0.0/0", (1024, 65535)),
    ]
    egress = [_entry(100, "allow", "0.0.0.0/0", (1024, 65535)), _entry(110, "allow", VPC_CIDR, (8080, 8080))]
    acl = _acl(plan, "public-acl", "public", ingress, egress, associate=True)
    fire_on(
        gate,
        plan,
        services(plan),
        "cannot reach the internet on TCP 443, which it needs for the image pull from ECR",
        "network ACL 'public-acl' of subnets 'network-public-0', 'network-public-1', 'network-public-2' "
        "does not let it out: no rule admits TCP 443 to a public address (the ACL's final deny)",
    )
    edit(acl, lambda p: p["egress"].append(_entry(120, "allow", "0.0.0.0/0", (443, 443))))
    quiet(gate, plan)


# Private and public ACLs admitting exactly what the app's paths need, replies included.
PRIVATE_IN = [
    _entry(100, "allow", PUBLIC_CIDR, (8080, 8080)),  # the ALB to the tasks
    _entry(110, "allow", VPC_CIDR, (6379, 6379)),  # the tasks to the cache
    _entry(120, "allow", "0.0.0.0/0", (32768, 60999)),  # replies to the tasks
]
PRIVATE_OUT = [
    _entry(100, "allow", "0.0.0.0/0", (443, 443)),
    _entry(110, "allow", VPC_CIDR, (6379, 6379)),
    _entry(120, "allow", PUBLIC_CIDR, (1024, 65535)),  # replies to the ALB
    _entry(130, "allow", VPC_CIDR, (32768, 60999)),  # the cache's replies to the tasks
]
PUBLIC_IN = [
    _entry(100, "allow", "0.0.0.0/0", (80, 80)),
    _entry(110, "allow", "0.0.0.0/0", (443, 443)),
    _entry(120, "allow", "0.0.0.0/0", (1024, 65535)),  # replies to the NAT gateways and the ALB
]
PUBLIC_OUT = [
    _entry(100, "allow", VPC_CIDR, (8080, 8080)),
    _entry(110, "allow", "0.0.0.0/0", (443, 443)),
    _entry(120, "allow", "0.0.0.0/0", (1024, 65535)),  # replies to clients and to the tasks
]


def test_aws_acl_replies_are_judged_on_each_hops_own_ports(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Each hop's replies return to the ports of whoever opened it: internet clients, NAT
    gateways and the ALB use 1024-65535, a task its kernel's range (Linux's 32768-60999 unless it
    sets net.ipv4.ip_local_port_range). Narrowing one entry fires on exactly the paths it stops."""
    plan = copy_of(shipped, "aws-prod")
    private = _acl(plan, "private-acl", "private", list(PRIVATE_IN), list(PRIVATE_OUT))
    public = _acl(plan, "public-acl", "public", list(PUBLIC_IN), list(PUBLIC_OUT), associate=True)
    quiet(gate, plan)

    def narrow(acl: PlannedResource, way: str, index: int, ports: tuple[int, int]) -> dict[str, Any]:
        old = copy.deepcopy(acl.outputs[way][index])
        edit(acl, lambda p: p[way][index].update(fromPort=ports[0], toPort=ports[1]))
        return old

    # Replies to internet clients from 32768 up only: the load balancers' listeners (clients use
    # 1024-65535); the NAT gateways' replies to the tasks (32768-60999) still pass.
    old = narrow(public, "egress", 2, (32768, 65535))
    fire_on(
        gate,
        plan,
        lbs(plan),
        "does not let the replies out: no rule admits TCP 1024-32767 to a public address",
    )
    edit(public, lambda p: p["egress"].__setitem__(2, copy.deepcopy(old)))
    # Replies from 32768 up only: the NAT gateways' (from the internet) and the ALB's (from the
    # tasks) both come to ports from 1024.
    old = narrow(public, "ingress", 2, (32768, 65535))
    fire_on(
        gate,
        plan,
        [*services(plan), lbs(plan)[0]],
        "does not let the replies in: no rule admits TCP 1024-32767 from",
    )
    checked = check(gate, plan)
    assert "load balancer 'lb-alb' cannot reach ECS service 'service-api' on TCP 8080" in (
        checked.on(RULE, lbs(plan)[0])[0].message
    )
    edit(public, lambda p: p["ingress"].__setitem__(2, copy.deepcopy(old)))
    quiet(gate, plan)
    # The cache's replies to the tasks on 49152 up only: not Linux's range, but the tasks' own
    # once they set it so.
    narrow(private, "egress", 3, (49152, 65535))
    cache = res(plan, "cache-redis", CACHE)
    fire_on(gate, plan, [cache], "does not let the replies out: no rule admits TCP 32768-49151 to 10.40.")

    def own_range(defs: list[dict[str, Any]]) -> None:
        for d in defs:
            d["systemControls"] = [{"namespace": "net.ipv4.ip_local_port_range", "value": "49152 60999"}]

    for role in ("api", "worker"):
        edit(res(plan, f"service-{role}", TASK_DEFINITION), containers_json(own_range))
    quiet(gate, plan)


# -- Kubernetes (onprem-prod): NetworkPolicies, both directions -----------------------------------


def _policy(plan: Plan, name: str) -> PlannedResource:
    return res(plan, name, NETPOL)


def _labels(peer: dict[str, Any]) -> str:
    return str(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", ""))


def _egress_to(role: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    """Apply ``change`` to the egress rule whose peer is ``role``'s pods (drop it if None)."""

    def apply(props: dict[str, Any]) -> None:
        rules = props["spec"]["egress"]
        for rule in list(rules):
            if any(_labels(t) == role for t in rule.get("to", [])) and change(rule) is None:
                rules.remove(rule)

    return apply


def _drop_peer(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], None]:
    """Take the ingress peers ``predicate`` picks out of a policy (and a rule left with none)."""

    def apply(props: dict[str, Any]) -> None:
        for rule in props["spec"]["ingress"]:
            rule["from"] = [p for p in rule["from"] if not predicate(p)]
        props["spec"]["ingress"] = [r for r in props["spec"]["ingress"] if r["from"]]

    return apply


def _namespace_is(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: (
        p.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": name}
    )


def _only_port(port: int) -> Callable[[dict[str, Any]], Any]:
    def change(rule: dict[str, Any]) -> dict[str, Any]:
        rule["ports"] = [p for p in rule["ports"] if p["port"] == port]
        return rule

    return change


API_EGRESS: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "no egress to redis": (
        _egress_to("redis", lambda rule: None),
        [
            "Deployment 'api' cannot reach the pods of StatefulSet 'redis' on TCP 6379 (redis-tls), which it "
            "needs for AGENT_REDIS_URL (redis-0.redis-headless.agent-app.svc.cluster.local:6379): no egress "
            "rule of the NetworkPolicies selecting its pods ('allow-dns', 'allow-api', 'default-deny') "
            "admits it",
            "Deployment 'api' cannot reach the pods of StatefulSet 'redis' on TCP 26379 (sentinel-tls), "
            f"which it needs for AGENT_REDIS_SENTINELS ({SENTINELS}): no egress rule",
        ],
    ),
    "egress to redis on 6379 only": (
        _egress_to("redis", _only_port(6379)),
        ["cannot reach the pods of StatefulSet 'redis' on TCP 26379 (sentinel-tls)", "AGENT_REDIS_SENTINELS"],
    ),
    "no egress to nats": (
        _egress_to("nats", lambda rule: None),
        [
            "Deployment 'api' cannot reach the pods of StatefulSet 'nats' on TCP 4222 (client), which it "
            "needs for AGENT_QUEUE_URL (nats.agent-app.svc:4222): no egress rule of the NetworkPolicies "
            "selecting its pods ('allow-dns', 'allow-api', 'default-deny') admits it"
        ],
    ),
    "egress to the redis pods, on the nats port": (
        _egress_to("redis", lambda rule: rule.update(ports=[{"protocol": "TCP", "port": 4222}]) or rule),
        ["on TCP 6379 (redis-tls)", "on TCP 26379 (sentinel-tls)"],
    ),
}


@pytest.mark.parametrize("plant", sorted(API_EGRESS))
def test_k8s_api_egress_to_its_stores(gate: Gate, shipped: dict[str, Plan], plant: str) -> None:
    plan = copy_of(shipped, "onprem-prod")
    quiet(gate, plan)
    change, text = API_EGRESS[plant]
    edit(_policy(plan, "netpol-api"), change)
    fires(gate, plan, RULE, res(plan, "api", DEPLOYMENT), *text, only=True)


def _dns_ports(ports: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    def apply(props: dict[str, Any]) -> None:
        props["spec"]["egress"][0]["ports"] = ports

    return apply


def _dns_peer_in_own_namespace(props: dict[str, Any]) -> None:
    props["spec"]["egress"][0]["to"][0].pop("namespaceSelector")


DNS_PLANTS: dict[str, tuple[Callable[[Plan], None], str]] = {
    "no DNS policy": (
        lambda plan: remove(plan, _policy(plan, "netpol-allow-dns")),
        "admits UDP 53 and TCP 53 to the cluster DNS in namespace kube-system",
    ),
    "UDP only": (
        lambda plan: edit(_policy(plan, "netpol-allow-dns"), _dns_ports([{"protocol": "UDP", "port": 53}])),
        "admits TCP 53 to the cluster DNS in namespace kube-system",
    ),
    "TCP only": (
        lambda plan: edit(_policy(plan, "netpol-allow-dns"), _dns_ports([{"protocol": "TCP", "port": 53}])),
        "admits UDP 53 to the cluster DNS in namespace kube-system",
    ),
    "kube-dns looked for in the app's namespace": (
        lambda plan: edit(_policy(plan, "netpol-allow-dns"), _dns_peer_in_own_namespace),
        "admits UDP 53 and TCP 53 to the cluster DNS in namespace kube-system",
    ),
}


@pytest.mark.parametrize("plant", sorted(DNS_PLANTS))
def test_k8s_dns_egress(gate: Gate, shipped: dict[str, Plan], plant: str) -> None:
    """Every name the app dials is resolved by the cluster DNS, over UDP and TCP 53."""
    plan = copy_of(shipped, "onprem-prod")
    change, text = DNS_PLANTS[plant]
    change(plan)
    fire_on(
        gate,
        plan,
        [res(plan, "api", DEPLOYMENT), res(plan, "worker", DEPLOYMENT)],
        "cannot resolve the names it dials (redis-0.redis-headless.agent-app.svc.cluster.local, "
        "redis-1.redis-headless.agent-app.svc.cluster.local, "
        "redis-2.redis-headless.agent-app.svc.cluster.local, nats.agent-app.svc, aws.agents.example.com, "
        "gcp.agents.example.com)",
        text,
    )


def test_k8s_ingress_controller_way_in_to_the_api(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The Ingress's class names the controller (ingress-nginx for nginx): the api's policy must
    admit its namespace on the container port the Service targets (Prometheus's is not it)."""
    plan = copy_of(shipped, "onprem-prod")
    api = res(plan, "api", DEPLOYMENT)
    edit(_policy(plan, "netpol-api"), _drop_peer(_namespace_is("ingress-nginx")))
    fires(
        gate,
        plan,
        RULE,
        api,
        "Deployment 'api' does not admit the ingress controller (class 'nginx', namespace 'ingress-nginx') "
        "on TCP 8080 (http), needed for Ingress 'api' routing onprem.agents.example.com/, "
        "api.agents.example.com/ to Service 'api' port 8080: no ingress rule of the NetworkPolicies "
        "selecting its pods ('allow-dns', 'allow-api', 'default-deny') admits it",
        only=True,
    )


def test_k8s_ingress_controller_of_an_unknown_class(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A class whose controller's namespace the config does not name: any source that may be
    outside the namespace counts; none at all does not."""
    plan = copy_of(shipped, "onprem-prod")
    api = res(plan, "api", DEPLOYMENT)
    edit(res(plan, "api", INGRESS), lambda p: p["spec"].update(ingressClassName="traefik"))
    edit(_policy(plan, "netpol-api"), _drop_peer(_namespace_is("ingress-nginx")))
    quiet(gate, plan)  # Prometheus's namespace may be the controller's, for all the plan says
    edit(_policy(plan, "netpol-api"), _drop_peer(_namespace_is("monitoring")))
    fires(
        gate,
        plan,
        RULE,
        api,
        "does not admit the ingress controller (class 'traefik') on TCP 8080",
        only=True,
    )


@pytest.mark.parametrize(
    ("policy", "server", "client", "text"),
    [
        (
            "netpol-redis",
            ("redis", STATEFULSET),
            "worker",
            "StatefulSet 'redis' does not admit the pods of Deployment 'worker' on TCP 6379 (redis-tls), "
            "which they need for AGENT_REDIS_URL (redis-0.redis-headless.agent-app.svc.cluster.local:6379): "
            "no ingress rule of the NetworkPolicies selecting its pods ('allow-dns', 'default-deny', "
            "'allow-redis') admits them",
        ),
        (
            "netpol-nats",
            ("nats", STATEFULSET),
            "api",
            "StatefulSet 'nats' does not admit the pods of Deployment 'api' on TCP 4222 (client), which they "
            "need for AGENT_QUEUE_URL (nats.agent-app.svc:4222)",
        ),
    ],
    ids=["redis from the worker", "nats from the api"],
)
def test_k8s_server_ingress_from_the_app(
    gate: Gate, shipped: dict[str, Plan], policy: str, server: tuple[str, str], client: str, text: str
) -> None:
    plan = copy_of(shipped, "onprem-prod")
    edit(_policy(plan, policy), _drop_peer(lambda p: _labels(p) == client))
    fires(gate, plan, RULE, res(plan, *server), text, only=True)


def test_k8s_fleet_https_egress_is_left_to_skyfleet_fleet_egress(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    """The other sites' 443 egress on Kubernetes is skyfleet-fleet-egress's finding, not this rule's."""
    plan = copy_of(shipped, "onprem-prod")

    def no_https(props: dict[str, Any]) -> None:
        props["spec"]["egress"] = [
            r for r in props["spec"]["egress"] if not any("ipBlock" in t for t in r["to"])
        ]

    edit(_policy(plan, "netpol-api"), no_https)
    assert [f.resource_name for f in check(gate, plan).of("skyfleet-fleet-egress")] == ["api"]
    quiet(gate, plan)


# -- Cloud Run (gcp-prod): VPC access to Memorystore -----------------------------------------------


def _run_services(plan: Plan) -> list[PlannedResource]:
    return [res(plan, "api", RUN), res(plan, "worker", RUN)]


def _vpc_access(plan: Plan, change: Callable[[dict[str, Any]], None]) -> None:
    for svc in _run_services(plan):
        edit(svc, lambda p: change(p["template"]))


MEMORYSTORE = "cannot reach Memorystore instance 'gcp-prod-sessions' at 10.41.0.13:6378 (AGENT_REDIS_URL)"


def test_run_without_vpc_access(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    quiet(gate, plan)
    _vpc_access(plan, lambda t: t.pop("vpcAccess"))
    fire_on(
        gate,
        plan,
        _run_services(plan),
        f"{MEMORYSTORE}: the instance is reachable only from VPC network 'gcp-prod-vpc' (its "
        "authorizedNetwork), and the service has no VPC access (template.vpcAccess: Direct VPC egress "
        "networkInterfaces or a connector)",
    )


def test_run_vpc_access_on_another_network(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")

    def elsewhere(template: dict[str, Any]) -> None:
        (interface,) = template["vpcAccess"]["networkInterfaces"]
        interface["network"] = "projects/skyfleet-prod-replace-me/global/networks/shared-vpc"
        interface["subnetwork"] = "projects/skyfleet-prod-replace-me/regions/europe-west1/subnetworks/shared"

    _vpc_access(plan, elsewhere)
    fire_on(
        gate,
        plan,
        _run_services(plan),
        f"{MEMORYSTORE}: its VPC access (interfaces) is on network 'shared-vpc', but the instance is "
        "reachable only from 'gcp-prod-vpc' (its authorizedNetwork)",
    )


def _firewall(plan: Plan, name: str, priority: int, action: str) -> PlannedResource:
    template = res(plan, "deny-all-ingress", FIREWALL)
    return _planned(
        template,
        FIREWALL,
        name,
        {
            "name": f"gcp-prod-{name}",
            "network": template.outputs["network"],
            "direction": "EGRESS",
            "priority": priority,
            "destinationRanges": ["10.41.0.0/16"],
            action: [{"protocol": "tcp", "ports": ["6378"]}],
        },
    )


def test_run_egress_firewall_denies_the_cache(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    plan.resources.append(_firewall(plan, "deny-cache", 1000, "denies"))
    fire_on(
        gate,
        plan,
        _run_services(plan),
        f"{MEMORYSTORE}: egress firewall rule 'deny-cache' (priority 1000) denies TCP 6378 to it",
    )
    plan.resources.append(_firewall(plan, "allow-cache", 900, "allows"))  # a higher-priority allow wins
    quiet(gate, plan)


def test_run_all_traffic_through_the_vpc_needs_cloud_nat(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Routing all egress into the VPC sends the other sites' traffic through a network with no NAT
    (the cache stays reachable; Pub/Sub goes by Private Google Access)."""
    plan = copy_of(shipped, "gcp-prod")
    _vpc_access(plan, lambda t: t["vpcAccess"].update(egress="ALL_TRAFFIC"))
    fire_on(
        gate,
        plan,
        _run_services(plan),
        "cannot reach AGENT_FLEET_SITES (aws.agents.example.com, onprem.agents.example.com) on TCP 443: its "
        "VPC egress is ALL_TRAFFIC, so that traffic leaves through network 'gcp-prod-vpc', which has no "
        "Cloud NAT (gcp.compute.RouterNat) in the stack",
    )
    network = res(plan, "vpc", "gcp:compute/network:Network")
    router = _planned(
        network,
        "gcp:compute/router:Router",
        "nat-router",
        {"name": "gcp-prod-nat", "network": network.outputs["id"], "region": "europe-west1"},
    )
    nat = _planned(
        network,
        "gcp:compute/routerNat:RouterNat",
        "nat",
        {"name": "gcp-prod-nat", "router": "gcp-prod-nat", "region": "europe-west1"},
    )
    plan.resources += [router, nat]
    quiet(gate, plan)
