"""The aws target's security and HA properties, read from offline plans of the shipped stacks
exactly as a policy would see them (wire-form inputs), plus the values the mocks computed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi_aws
import pytest
import yaml

from agent_app import contract
from agent_app.contract import Env
from infra.aws.cache import node_type_for
from infra.aws.service import SCRATCH_INIT
from infra.capabilities import COMPONENTS
from infra.outputs import SiteOutputs
from infra.spec import CacheSpec
from skyfleet.plan import ConfigError, Plan, PlannedResource, plan_stack

ROOT = Path(__file__).resolve().parents[3]
AWS_STACKS = ("aws-dev", "aws-prod")
TLS_POLICY_PREFIX = "ELBSecurityPolicy-TLS13-1-2"
# Allow statements whose Resource must be "*" because the action has no resource-level
# permissions (documented in infra/aws/service.py).
STAR_RESOURCE_ALLOWED = {"ecr:GetAuthorizationToken"}
SECRET_SIG = "4dabf18193072939515e22adb298388d"


# --- helpers ----------------------------------------------------------------------------------


def spec_of(stack: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    return {k.removeprefix("skyfleet:"): v for k, v in doc["config"].items()}


def of(plan: Plan, typ: str) -> list[PlannedResource]:
    found = plan.of_type(typ)
    assert found, f"{plan.stack}: no {typ}"
    return found


def one(plan: Plan, typ: str, name: str | None = None) -> PlannedResource:
    found = [r for r in of(plan, typ) if name is None or r.name == name]
    assert len(found) == 1, f"{plan.stack}: expected one {typ} {name or ''}, got {[r.name for r in found]}"
    return found[0]


def plain(value: Any) -> Any:
    """A wire value with Pulumi's secret wrapper removed."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return value.get("value")
    return value


def listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(policy: str | dict[str, Any]) -> list[dict[str, Any]]:
    doc = json.loads(policy) if isinstance(policy, str) else policy
    return listify(doc["Statement"])


def component_type(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


def task_containers(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Each task definition's containers, by the role its family names."""
    return {
        td.inputs["family"].rsplit("-", 1)[-1]: json.loads(td.inputs["containerDefinitions"])
        for td in of(plan, "aws:ecs/taskDefinition:TaskDefinition")
    }


def containers(plan: Plan) -> dict[str, dict[str, Any]]:
    """The app's container of each task definition (the one named for its role)."""
    return {role: next(c for c in cs if c["name"] == role) for role, cs in task_containers(plan).items()}


def by_id(plan: Plan, typ: str) -> dict[str, PlannedResource]:
    return {r.outputs["id"]: r for r in of(plan, typ)}


@pytest.fixture(params=AWS_STACKS)
def plan(request: pytest.FixtureRequest, plans: dict[str, Plan]) -> Plan:
    return plans[request.param]


@pytest.fixture
def prod(plans: dict[str, Plan]) -> Plan:
    return plans["aws-prod"]


def app_lb(plan: Plan) -> PlannedResource:
    (found,) = [
        r
        for r in of(plan, "aws:lb/loadBalancer:LoadBalancer")
        if r.inputs["loadBalancerType"] == "application"
    ]
    return found


def net_lb(plan: Plan) -> PlannedResource:
    (found,) = [
        r for r in of(plan, "aws:lb/loadBalancer:LoadBalancer") if r.inputs["loadBalancerType"] == "network"
    ]
    return found


def api_target_group(plan: Plan) -> PlannedResource:
    (found,) = [r for r in of(plan, "aws:lb/targetGroup:TargetGroup") if r.inputs["targetType"] == "ip"]
    return found


def alb_listeners(plan: Plan) -> list[PlannedResource]:
    arn = app_lb(plan).outputs["arn"]
    return [r for r in of(plan, "aws:lb/listener:Listener") if r.inputs["loadBalancerArn"] == arn]


# --- load balancer: HTTPS only ------------------------------------------------------------------


def test_https_listener_uses_tls12_plus_and_a_certificate(plan: Plan) -> None:
    https = [r for r in of(plan, "aws:lb/listener:Listener") if r.inputs["protocol"] == "HTTPS"]
    assert len(https) == 1
    listener = https[0].inputs
    assert listener["port"] == 443
    assert listener["sslPolicy"].startswith(TLS_POLICY_PREFIX)
    assert listener["certificateArn"].startswith("arn:aws:acm:")
    (action,) = listener["defaultActions"]
    tg = api_target_group(plan)
    assert action == {"type": "forward", "targetGroupArn": tg.outputs["arn"]}


def test_http_listener_only_redirects_to_https(plan: Plan) -> None:
    others = [r for r in alb_listeners(plan) if r.inputs["protocol"] != "HTTPS"]
    assert [r.inputs["port"] for r in others] == [80]
    (action,) = others[0].inputs["defaultActions"]
    assert action["type"] == "redirect"
    assert action["redirect"] == {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}
    assert "targetGroupArn" not in action and "forward" not in action


def test_certificate_covers_every_host_name_each_dns_validated_in_the_stack_zone(plan: Plan) -> None:
    domain = spec_of(plan.stack)["domain"]
    names = [domain["name"], *domain.get("aliases", [])]
    cert = one(plan, "aws:acm/certificate:Certificate")
    assert cert.inputs["domainName"] == domain["name"]
    assert cert.inputs.get("subjectAlternativeNames", []) == names[1:]
    assert plan.outputs["hostNames"] == names
    assert cert.inputs["validationMethod"] == "DNS"
    records = of(plan, "aws:route53/record:Record")
    validation = [r for r in records if r.inputs["type"] == "CNAME"]
    assert {r.inputs["zoneId"] for r in validation} == {domain["zoneId"]}
    wanted = {o["resourceRecordName"] for o in cert.outputs["domainValidationOptions"]}
    assert len(wanted) == len(names) and {r.inputs["name"] for r in validation} == wanted
    fqdns = one(plan, "aws:acm/certificateValidation:CertificateValidation").inputs["validationRecordFqdns"]
    assert len(fqdns) == len(names)
    https = next(r for r in of(plan, "aws:lb/listener:Listener") if r.inputs["protocol"] == "HTTPS")
    assert https.inputs["certificateArn"] == cert.outputs["arn"]
    aliases = {r.inputs["type"] for r in records if r.inputs.get("aliases")}
    assert aliases == {"A", "AAAA"}


def test_nlb_gives_fixed_addresses_and_passes_tls_through_to_the_alb(plan: Plan) -> None:
    """A multivalue edge answers with addresses: the NLB has one Elastic IP per public subnet
    and passes TCP 443 to the ALB, whose HTTPS listener still ends TLS."""
    front = net_lb(plan)
    subnets = by_id(plan, "aws:ec2/subnet:Subnet")
    eips = {e.outputs["allocationId"]: e for e in of(plan, "aws:ec2/eip:Eip") if "nlb" in e.name}
    mappings = front.inputs["subnetMappings"]
    assert front.inputs["internal"] is False and front.inputs["ipAddressType"] == "ipv4"
    assert {subnets[m["subnetId"]].inputs["tags"]["tier"] for m in mappings} == {"public"}
    assert sorted(subnets[m["subnetId"]].outputs["id"] for m in mappings) == sorted(
        app_lb(plan).inputs["subnets"]
    )
    assert {m["allocationId"] for m in mappings} == set(eips) and len(eips) == len(mappings)
    assert front.inputs["enableDeletionProtection"] is (plan.stack == "aws-prod")
    assert len(front.inputs["securityGroups"]) == 1
    listeners = [
        r.inputs
        for r in of(plan, "aws:lb/listener:Listener")
        if r.inputs["loadBalancerArn"] == front.outputs["arn"]
    ]
    assert [(r["port"], r["protocol"]) for r in listeners] == [(443, "TCP")]
    (action,) = listeners[0]["defaultActions"]
    tg = next(
        t for t in of(plan, "aws:lb/targetGroup:TargetGroup") if t.outputs["arn"] == action["targetGroupArn"]
    )
    assert (tg.inputs["targetType"], tg.inputs["protocol"], tg.inputs["port"]) == ("alb", "TCP", 443)
    assert tg.inputs["healthCheck"]["protocol"] == "HTTPS"
    assert tg.inputs["healthCheck"]["path"] == contract.READINESS_PATH
    (attachment,) = of(plan, "aws:lb/targetGroupAttachment:TargetGroupAttachment")
    assert attachment.inputs["targetGroupArn"] == tg.outputs["arn"]
    assert attachment.inputs["targetId"] == app_lb(plan).outputs["arn"] and attachment.inputs["port"] == 443
    # Where TLS ends: the ALB's HTTPS listener on the port the NLB forwards to.
    assert any(r.inputs["protocol"] == "HTTPS" and r.inputs["port"] == 443 for r in alb_listeners(plan))


def test_target_group_health_checks_readiness(plan: Plan) -> None:
    tg = api_target_group(plan).inputs
    assert tg["targetType"] == "ip"
    assert tg["port"] == contract.DEFAULT_PORT
    assert tg["healthCheck"]["path"] == contract.READINESS_PATH
    assert tg["healthCheck"]["enabled"] is True


def test_alb_is_public_only_in_public_subnets_and_hardened(plan: Plan) -> None:
    alb = app_lb(plan).inputs
    subnets = by_id(plan, "aws:ec2/subnet:Subnet")
    assert alb["internal"] is False
    assert {subnets[s].inputs["tags"]["tier"] for s in alb["subnets"]} == {"public"}
    assert len({subnets[s].inputs["availabilityZone"] for s in alb["subnets"]}) >= 2
    assert alb["dropInvalidHeaderFields"] is True
    assert alb["enableDeletionProtection"] is (plan.stack == "aws-prod")
    bucket = one(plan, "aws:s3/bucket:Bucket")
    assert alb["accessLogs"]["enabled"] is True
    assert alb["accessLogs"]["bucket"] == bucket.outputs["id"]


def test_access_log_bucket_is_private_encrypted_versioned_and_tls_only(plan: Plan) -> None:
    bucket = one(plan, "aws:s3/bucket:Bucket").outputs
    block = one(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert block["bucket"] == bucket["id"]
    assert all(
        block[k] is True
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    sse = one(plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in (
        "AES256",
        "aws:kms",
    )
    versioning = one(plan, "aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    policy = statements(one(plan, "aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    deny = [s for s in policy if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (put,) = [s for s in policy if s["Effect"] == "Allow"]
    assert put["Action"] == "s3:PutObject"
    assert put["Resource"].startswith(f"{bucket['arn']}/alb/AWSLogs/{spec_of(plan.stack)['accountId']}/")
    assert put["Principal"] != "*"


# --- network and compute -------------------------------------------------------------------------


def test_vpc_spans_two_zones_with_private_subnets_routed_through_nat(plan: Plan) -> None:
    subnets = of(plan, "aws:ec2/subnet:Subnet")
    private = [s for s in subnets if s.inputs["tags"]["tier"] == "private"]
    public = [s for s in subnets if s.inputs["tags"]["tier"] == "public"]
    assert len({s.inputs["availabilityZone"] for s in private}) >= 2
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    nats = by_id(plan, "aws:ec2/natGateway:NatGateway")
    assert {n.inputs["subnetId"] for n in nats.values()} <= {s.outputs["id"] for s in public}
    routes = of(plan, "aws:ec2/route:Route")
    assoc = {
        a.inputs["subnetId"]: a.inputs["routeTableId"]
        for a in of(plan, "aws:ec2/routeTableAssociation:RouteTableAssociation")
    }
    for s in private:
        table = assoc[s.outputs["id"]]
        default = [
            r
            for r in routes
            if r.inputs["routeTableId"] == table and r.inputs.get("destinationCidrBlock") == "0.0.0.0/0"
        ]
        assert len(default) == 1 and default[0].inputs.get("natGatewayId") in nats
        assert not any(r.inputs["routeTableId"] == table and r.inputs.get("gatewayId") for r in routes)
    expected_nats = len(private) if plan.stack == "aws-prod" else 1
    assert len(nats) == expected_nats
    (flow,) = of(plan, "aws:ec2/flowLog:FlowLog")
    assert flow.inputs["vpcId"] == one(plan, "aws:ec2/vpc:Vpc").outputs["id"]
    assert flow.inputs["trafficType"] == "ALL"
    assert flow.inputs["logDestination"] in {
        g.outputs["arn"] for g in of(plan, "aws:cloudwatch/logGroup:LogGroup")
    }


def test_tasks_have_no_public_ip_and_sit_in_private_subnets(plan: Plan) -> None:
    subnets = by_id(plan, "aws:ec2/subnet:Subnet")
    task_sg = plan.outputs["taskSecurityGroupId"]
    for svc in of(plan, "aws:ecs/service:Service"):
        net = svc.inputs["networkConfiguration"]
        assert net["assignPublicIp"] is False
        assert {subnets[s].inputs["tags"]["tier"] for s in net["subnets"]} == {"private"}
        assert net["securityGroups"] == [task_sg]
        assert svc.inputs["launchType"] == "FARGATE"
        assert svc.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_api_and_worker_run_the_contract_commands_from_one_image(plan: Plan) -> None:
    c = containers(plan)
    assert set(c) == {"api", "worker"}
    assert c["api"]["command"] == list(contract.API_COMMAND)
    assert c["worker"]["command"] == list(contract.WORKER_COMMAND)
    assert c["api"]["image"] == c["worker"]["image"] == spec_of(plan.stack)["app"]["image"]
    services = {s.inputs["name"]: s for s in of(plan, "aws:ecs/service:Service")}
    assert services["api"].inputs["loadBalancers"][0]["containerPort"] == contract.DEFAULT_PORT
    assert "loadBalancers" not in services["worker"].inputs


def test_containers_are_hardened(plan: Plan) -> None:
    for name, c in containers(plan).items():
        assert c["readonlyRootFilesystem"] is True, name
        assert c["user"].split(":")[0] == str(contract.RUN_AS_UID), name
        assert c.get("privileged") is not True, name
        assert c["linuxParameters"]["capabilities"]["drop"] == ["ALL"], name
        assert {m["containerPath"] for m in c["mountPoints"]} == {contract.SCRATCH_DIR}, name
        # Fargate's bind mount is root's: the app starts only once the init container opened it.
        assert c["dependsOn"] == [{"containerName": SCRATCH_INIT, "condition": "SUCCESS"}], name
        log = c["logConfiguration"]
        assert log["logDriver"] == "awslogs"
        assert log["options"]["awslogs-group"] in {
            g.inputs["name"] for g in of(plan, "aws:cloudwatch/logGroup:LogGroup")
        }


def test_scratch_dir_is_made_writable_for_the_app_user_before_it_starts(plan: Plan) -> None:
    """A Fargate bind mount is created root-owned 0755: uid 10001 could not write its scratch
    dir. A non-essential init container opens it up (as /tmp is: sticky, world-writable)."""
    for role, cs in task_containers(plan).items():
        (init,) = [c for c in cs if c["name"] == SCRATCH_INIT]
        assert [c["name"] for c in cs] == [SCRATCH_INIT, role]
        assert init["essential"] is False and init["image"] == containers(plan)[role]["image"]
        assert init["readonlyRootFilesystem"] is True
        assert init["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
        assert init["mountPoints"] == [
            {"sourceVolume": "scratch", "containerPath": contract.SCRATCH_DIR, "readOnly": False}
        ]
        assert init["command"][-1] == f"import os; os.chmod({contract.SCRATCH_DIR!r}, 0o1777)"
        assert not init.get("secrets") and not init.get("environment")


def test_secrets_reach_containers_only_by_reference(plan: Plan) -> None:
    secret_arns = {
        s.outputs["arn"]: s.inputs["namePrefix"] for s in of(plan, "aws:secretsmanager/secret:Secret")
    }
    secret_env = {e.value for e in contract.SECRET_ENV}
    for name, c in containers(plan).items():
        env = {e["name"]: e["value"] for e in c["environment"]}
        assert not secret_env & set(env), f"{name} has a secret in plain env"
        refs = {s["name"]: s["valueFrom"] for s in c["secrets"]}
        assert Env.REDIS_PASSWORD.value in refs
        # Only the api serves clients, so only it reads their keys.
        assert (Env.API_KEYS.value in refs) is (name == "api"), name
        assert set(refs.values()) <= set(secret_arns), name
        assert secret_arns[refs[Env.REDIS_PASSWORD.value]].endswith("/redis-auth-")


def test_app_env_points_at_this_sites_cache_and_queue(plan: Plan) -> None:
    group = one(plan, "aws:elasticache/replicationGroup:ReplicationGroup").outputs
    queue = next(q for q in of(plan, "aws:sqs/queue:Queue") if not q.inputs["name"].endswith("-dlq"))
    for c in containers(plan).values():
        env = {e["name"]: e["value"] for e in c["environment"]}
        assert env[Env.REDIS_URL.value] == f"rediss://{group['primaryEndpointAddress']}:6379"
        assert env[Env.QUEUE_URL.value] == contract.sqs_queue_url(queue.outputs["url"])
        assert isinstance(contract.parse_queue_url(env[Env.QUEUE_URL.value]), contract.SqsQueue)
        assert env[Env.SITE.value] == spec_of(plan.stack)["site"]


def test_the_app_ends_its_shutdown_before_ecs_kills_it(plan: Plan) -> None:
    for c in containers(plan).values():
        env = {e["name"]: e["value"] for e in c["environment"]}
        grace = int(env[Env.SHUTDOWN_GRACE_SECONDS.value])
        assert 0 < grace + contract.SHUTDOWN_EXIT_SECONDS <= c["stopTimeout"]


def test_logs_are_retained_and_encrypted_with_a_rotating_key(plan: Plan) -> None:
    key = one(plan, "aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    retention = spec_of(plan.stack).get("logRetentionDays", 14)
    for group in of(plan, "aws:ecs/cluster:Cluster"):
        assert {"name": "containerInsights", "value": "enabled"} in group.inputs["settings"]
    for group in of(plan, "aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs["retentionInDays"] == retention
        assert group.inputs["kmsKeyId"] == key.outputs["arn"]


def test_key_policy_has_no_star_principal_and_scopes_logs_to_these_groups(plan: Plan) -> None:
    key = one(plan, "aws:kms/key:Key")
    policy = statements(key.inputs["policy"])
    assert all(s["Principal"] != "*" and "*" not in listify(s["Principal"].get("AWS", [])) for s in policy)
    assert all("*" not in a for s in policy for a in listify(s["Action"]))
    logs = [s for s in policy if "logs." in str(s["Principal"].get("Service", ""))]
    assert len(logs) == 1
    arns = set(listify(logs[0]["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]))
    assert arns == {g.outputs["arn"] for g in of(plan, "aws:cloudwatch/logGroup:LogGroup")}


# --- cache, queue, secrets -----------------------------------------------------------------------


def test_cache_is_encrypted_with_auth_from_secrets_manager(plan: Plan) -> None:
    group = one(plan, "aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert group["atRestEncryptionEnabled"] is True
    assert group["transitEncryptionEnabled"] is True
    assert group["transitEncryptionMode"] == "required"
    assert SECRET_SIG in group["authToken"], "the AUTH token must be a Pulumi secret"
    redis_secret = next(
        s
        for s in of(plan, "aws:secretsmanager/secret:Secret")
        if s.inputs["namePrefix"].endswith("/redis-auth-")
    )
    version = next(
        v
        for v in of(plan, "aws:secretsmanager/secretVersion:SecretVersion")
        if v.inputs["secretId"] == redis_secret.outputs["id"]
    )
    assert plain(group["authToken"]) == plain(version.inputs["secretString"])
    assert len(plain(group["authToken"])) >= 16


def test_cache_is_private_and_reachable_only_from_tasks(plan: Plan) -> None:
    group = one(plan, "aws:elasticache/replicationGroup:ReplicationGroup").inputs
    subnet_group = one(plan, "aws:elasticache/subnetGroup:SubnetGroup")
    assert group["subnetGroupName"] == subnet_group.outputs["name"] != "default"
    subnets = by_id(plan, "aws:ec2/subnet:Subnet")
    assert {subnets[s].inputs["tags"]["tier"] for s in subnet_group.inputs["subnetIds"]} == {"private"}
    (cache_sg,) = group["securityGroupIds"]
    ingress = [
        r.inputs
        for r in of(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == cache_sg
    ]
    assert ingress == [
        {
            **ingress[0],
            "fromPort": 6379,
            "toPort": 6379,
            "referencedSecurityGroupId": plan.outputs["taskSecurityGroupId"],
        }
    ]
    assert "cidrIpv4" not in ingress[0] and "cidrIpv6" not in ingress[0]


def test_prod_cache_is_multi_az_with_failover_and_snapshots(prod: Plan) -> None:
    group = one(prod, "aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert group["multiAzEnabled"] is True
    assert group["automaticFailoverEnabled"] is True
    assert group["numCacheClusters"] >= 2
    assert group["snapshotRetentionLimit"] == spec_of("aws-prod")["cache"]["snapshotRetentionDays"]


@pytest.mark.parametrize(
    ("size_gb", "node_type"),
    [
        # AWS's node memory less the default 25 % reserved-memory-percent: a 1.37 GiB t4g.small
        # holds 1.03 GiB of data, a 6.38 GiB m7g.large 4.79 (not 5), a 419.09 GiB r7g.16xlarge 314.
        (1, "cache.t4g.small"),
        (4.7, "cache.m7g.large"),
        (5, "cache.m7g.xlarge"),
        (300, "cache.r7g.16xlarge"),
    ],
)
def test_the_cache_node_holds_the_spec_size_beside_the_memory_redis_reserves(
    size_gb: float, node_type: str
) -> None:
    assert node_type_for(CacheSpec.model_validate({"sizeGb": size_gb, "ha": True})) == node_type


def test_dlq_is_wired_with_max_receives_from_config(plan: Plan) -> None:
    queues = {q.inputs["name"]: q for q in of(plan, "aws:sqs/queue:Queue")}
    (dlq_name,) = [n for n in queues if n.endswith("-dlq")]
    (main_name,) = [n for n in queues if n != dlq_name]
    policy = json.loads(queues[main_name].inputs["redrivePolicy"])
    attempts = spec_of(plan.stack).get("queue", {}).get("maxDeliveryAttempts", 5)
    # One receive more than the attempts: the worker's, to find a run lost with its worker.
    assert policy == {"deadLetterTargetArn": queues[dlq_name].outputs["arn"], "maxReceiveCount": attempts + 1}
    allow = json.loads(queues[dlq_name].inputs["redriveAllowPolicy"])
    assert allow == {"redrivePermission": "byQueue", "sourceQueueArns": [queues[main_name].outputs["arn"]]}
    for q in queues.values():
        assert q.inputs.get("sqsManagedSseEnabled") is True or q.inputs.get("kmsMasterKeyId")
    spec_queue = spec_of(plan.stack).get("queue", {})
    if "visibilityTimeoutSeconds" in spec_queue:
        assert queues[main_name].inputs["visibilityTimeoutSeconds"] == spec_queue["visibilityTimeoutSeconds"]


def test_secrets_are_encrypted_with_the_site_key(plan: Plan) -> None:
    key = one(plan, "aws:kms/key:Key").outputs["arn"]
    secrets = of(plan, "aws:secretsmanager/secret:Secret")
    assert {s.inputs["namePrefix"].rsplit("/", 1)[-1] for s in secrets} >= {"api-keys-", "redis-auth-"}
    # No fixed name: a deleted secret keeps its name through its recovery window, and a stack
    # deployed again within it could not create the secret under the same name.
    assert not [s.name for s in secrets if s.inputs.get("name")]
    assert all(s.inputs["kmsKeyId"] == key for s in secrets)
    assert all(
        SECRET_SIG in v.inputs["secretString"]
        for v in of(plan, "aws:secretsmanager/secretVersion:SecretVersion")
    )


# --- IAM -------------------------------------------------------------------------------------------


def _role_statements(plan: Plan, role_suffix: str) -> list[dict[str, Any]]:
    roles = {r.outputs["id"]: r for r in of(plan, "aws:iam/role:Role")}
    out = []
    for p in of(plan, "aws:iam/rolePolicy:RolePolicy"):
        if roles[p.inputs["role"]].name.endswith(role_suffix):
            out += statements(p.inputs["policy"])
    assert out, f"no policy for role *{role_suffix}"
    return out


def test_iam_policies_have_no_wildcard_actions_or_stray_star_resources(plan: Plan) -> None:
    for p in of(plan, "aws:iam/rolePolicy:RolePolicy"):
        for s in statements(p.inputs["policy"]):
            assert s["Effect"] == "Allow"
            actions = listify(s["Action"])
            assert all("*" not in a for a in actions), f"{p.name}: {actions}"
            if "*" in listify(s["Resource"]):
                assert set(actions) <= STAR_RESOURCE_ALLOWED, f"{p.name}: {actions} on *"
    services = {
        "service-api-task": "ecs-tasks",
        "service-worker-task": "ecs-tasks",
        "service-execution": "ecs-tasks",
        "network-flow-logs": "vpc-flow-logs",
    }
    roles = of(plan, "aws:iam/role:Role")
    assert {r.name for r in roles} == set(services)
    for r in roles:
        (trust,) = statements(r.inputs["assumeRolePolicy"])
        assert trust["Principal"] == {"Service": f"{services[r.name]}.amazonaws.com"}
        assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == spec_of(plan.stack)["accountId"]


def test_each_process_task_role_uses_exactly_its_calls_on_this_queue(plan: Plan) -> None:
    queues = {q.inputs["name"].endswith("-dlq"): q.outputs["arn"] for q in of(plan, "aws:sqs/queue:Queue")}
    queue, dlq = queues[False], queues[True]
    # The api sends; the worker receives, acknowledges and extends, sends back a copy of what
    # it hands back on shutdown, and sends what it dead-letters to the DLQ: the api may do none
    # of the worker's.
    wanted = {
        "api": {queue: {"sqs:SendMessage", "sqs:GetQueueAttributes"}},
        "worker": {
            queue: {
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
                "sqs:SendMessage",
            },
            dlq: {"sqs:SendMessage"},
        },
    }
    roles = {r.outputs["arn"]: r.name for r in of(plan, "aws:iam/role:Role")}
    for role, on in wanted.items():
        granted = {s["Resource"]: set(listify(s["Action"])) for s in _role_statements(plan, f"-{role}-task")}
        assert granted == on, role
        task = one(plan, "aws:ecs/taskDefinition:TaskDefinition", f"service-{role}")
        assert roles[task.inputs["taskRoleArn"]] == f"service-{role}-task"


def test_execution_role_reads_exactly_these_secrets(plan: Plan) -> None:
    stmts = _role_statements(plan, "-execution")
    reads = [s for s in stmts if "secretsmanager:GetSecretValue" in listify(s["Action"])]
    assert len(reads) == 1
    assert set(listify(reads[0]["Resource"])) == {
        s.outputs["arn"] for s in of(plan, "aws:secretsmanager/secret:Secret")
    }
    (decrypt,) = [s for s in stmts if "kms:Decrypt" in listify(s["Action"])]
    assert decrypt["Resource"] == one(plan, "aws:kms/key:Key").outputs["arn"]
    assert "kms:ViaService" in decrypt["Condition"]["StringEquals"]


def test_each_service_starts_tasks_only_once_its_grants_and_secret_values_exist(plan: Plan) -> None:
    """Nothing the service references leads to the roles' policies or the secrets' values: an
    update that adds a secret would otherwise start tasks that cannot read it."""
    by_urn = {r.urn: r for r in plan.resources}
    version_of = {
        v.inputs["secretId"]: v.name for v in of(plan, "aws:secretsmanager/secretVersion:SecretVersion")
    }
    version_by_arn = {
        s.outputs["arn"]: version_of[s.outputs["id"]] for s in of(plan, "aws:secretsmanager/secret:Secret")
    }
    definitions = {r.outputs["arn"]: r for r in of(plan, "aws:ecs/taskDefinition:TaskDefinition")}
    for svc in of(plan, "aws:ecs/service:Service"):
        deps = {by_urn[d].name for d in svc.dependencies}
        role = svc.inputs["name"]
        assert {"service-execution", f"service-{role}-task-queue"} <= deps, (role, deps)
        definition = definitions[svc.inputs["taskDefinition"]]
        app = next(c for c in json.loads(definition.inputs["containerDefinitions"]) if c["name"] == role)
        needed = {version_by_arn[ref["valueFrom"]] for ref in app["secrets"]}
        assert needed and needed <= deps, (role, needed - deps)


# --- security groups ---------------------------------------------------------------------------------


def test_security_groups_chain_internet_alb_tasks(plan: Plan) -> None:
    groups = {
        g.inputs["name"].rsplit("-", 1)[-1]: g.outputs["id"]
        for g in of(plan, "aws:ec2/securityGroup:SecurityGroup")
    }
    assert all(
        not g.inputs.get("ingress") and not g.inputs.get("egress")
        for g in of(plan, "aws:ec2/securityGroup:SecurityGroup")
    )
    ingress = [r.inputs for r in of(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]
    alb_in = {
        (r["fromPort"], r.get("cidrIpv4") or r.get("cidrIpv6"))
        for r in ingress
        if r["securityGroupId"] == groups["alb"]
    }
    assert alb_in == {(443, "0.0.0.0/0"), (443, "::/0"), (80, "0.0.0.0/0"), (80, "::/0"), (443, None)}
    assert [
        r["referencedSecurityGroupId"]
        for r in ingress
        if r["securityGroupId"] == groups["alb"] and not r.get("cidrIpv4") and not r.get("cidrIpv6")
    ] == [groups["nlb"]]
    nlb_in = [r for r in ingress if r["securityGroupId"] == groups["nlb"]]
    assert [(r["fromPort"], r["toPort"], r.get("cidrIpv4"), r.get("cidrIpv6")) for r in nlb_in] == [
        (443, 443, "0.0.0.0/0", None)
    ]
    task_in = [r for r in ingress if r["securityGroupId"] == groups["tasks"]]
    assert [(r["fromPort"], r["toPort"], r.get("referencedSecurityGroupId")) for r in task_in] == [
        (contract.DEFAULT_PORT, contract.DEFAULT_PORT, groups["alb"])
    ]
    assert groups["tasks"] == plan.outputs["taskSecurityGroupId"]
    egress = [r.inputs for r in of(plan, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")]
    open_egress = [r for r in egress if r.get("cidrIpv4") or r.get("cidrIpv6")]
    assert [(r["securityGroupId"], r["fromPort"]) for r in open_egress] == [(groups["tasks"], 443)]
    assert not [r for r in egress if r["securityGroupId"] == groups["cache"]]
    default = one(plan, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup").inputs
    assert not default.get("ingress") and not default.get("egress")


# --- autoscaling and replicas ---------------------------------------------------------------------


def test_autoscaling_api_on_cpu_and_requests_worker_on_queue_depth(plan: Plan) -> None:
    targets = {t.inputs["resourceId"]: t.inputs for t in of(plan, "aws:appautoscaling/target:Target")}
    cluster = plan.outputs["clusterName"]
    api, worker = f"service/{cluster}/api", f"service/{cluster}/worker"
    assert set(targets) == {api, worker}
    app = spec_of(plan.stack)["app"]
    if "replicas" in app:
        assert (targets[api]["minCapacity"], targets[api]["maxCapacity"]) == (
            app["replicas"]["min"],
            app["replicas"]["max"],
        )
    policies: dict[str, list[dict[str, Any]]] = {}
    for p in of(plan, "aws:appautoscaling/policy:Policy"):
        policies.setdefault(p.inputs["resourceId"], []).append(
            p.inputs["targetTrackingScalingPolicyConfiguration"]
        )
    api_metrics = {c["predefinedMetricSpecification"]["predefinedMetricType"] for c in policies[api]}
    assert api_metrics == {"ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"}
    label = next(c for c in policies[api] if "resourceLabel" in c["predefinedMetricSpecification"])
    alb = app_lb(plan).outputs["arnSuffix"]
    tg = api_target_group(plan).outputs["arnSuffix"]
    assert label["predefinedMetricSpecification"]["resourceLabel"] == f"{alb}/{tg}"
    (backlog,) = policies[worker]
    metrics = backlog["customizedMetricSpecification"]["metrics"]
    sqs = [m for m in metrics if "metricStat" in m and m["metricStat"]["metric"]["namespace"] == "AWS/SQS"]
    assert sqs and sqs[0]["metricStat"]["metric"]["metricName"] == "ApproximateNumberOfMessagesVisible"
    queue = next(q for q in of(plan, "aws:sqs/queue:Queue") if not q.inputs["name"].endswith("-dlq"))
    assert sqs[0]["metricStat"]["metric"]["dimensions"] == [
        {"name": "QueueName", "value": queue.outputs["name"]}
    ]
    assert sum(1 for m in metrics if m.get("returnData")) == 1


def test_prod_runs_at_least_two_tasks_of_each_process(prod: Plan) -> None:
    for svc in of(prod, "aws:ecs/service:Service"):
        assert svc.inputs["desiredCount"] >= 2, svc.inputs["name"]
    for t in of(prod, "aws:appautoscaling/target:Target"):
        assert t.inputs["minCapacity"] >= 2


# --- alarms ------------------------------------------------------------------------------------------


def test_alarms_cover_5xx_unhealthy_hosts_dlq_and_cache(plan: Plan) -> None:
    alarms = of(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")
    metrics = {a.inputs.get("metricName") for a in alarms}
    assert {
        "UnHealthyHostCount",
        "ApproximateNumberOfMessagesVisible",
        "EngineCPUUtilization",
        "DatabaseMemoryUsagePercentage",
    } <= metrics
    rate = [a for a in alarms if a.inputs.get("metricQueries")]
    assert rate and "5XX" in json.dumps(rate[0].inputs["metricQueries"])
    dlq = next(q for q in of(plan, "aws:sqs/queue:Queue") if q.inputs["name"].endswith("-dlq"))
    (depth,) = [
        a.inputs for a in alarms if a.inputs.get("metricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert depth["dimensions"] == {"QueueName": dlq.outputs["name"]}
    assert (depth["comparisonOperator"], depth["threshold"]) == ("GreaterThanThreshold", 0)
    members = one(plan, "aws:elasticache/replicationGroup:ReplicationGroup").outputs["memberClusters"]
    cache_dims = {
        a.inputs["dimensions"]["CacheClusterId"]
        for a in alarms
        if a.inputs.get("namespace") == "AWS/ElastiCache"
    }
    assert cache_dims == set(members)
    topic = one(plan, "aws:sns/topic:Topic")
    assert topic.inputs["kmsMasterKeyId"]
    assert all(a.inputs["alarmActions"] == [topic.outputs["arn"]] for a in alarms)


# --- structure: components, parents, tags, outputs ----------------------------------------------------


def test_every_component_is_present_and_every_resource_is_parented_to_one(plan: Plan) -> None:
    components = {r.urn: r.type for r in plan.resources if not r.custom}
    assert {f"skyfleet:aws:{c}" for c in COMPONENTS} <= set(components.values())
    for r in plan.resources:
        if r.custom and not r.type.startswith("pulumi:providers:"):
            assert r.parent in components, f"{r.urn} is not parented to a component"
            assert components[r.parent].startswith("skyfleet:aws:")
            if r.type.startswith("aws:"):
                assert r.provider and "pulumi:providers:aws::aws" in r.provider, (
                    f"{r.urn}: not the site provider"
                )


def _taggable(typ: str) -> bool:
    """Whether the provider's resource takes tags, read from the SDK's source (not a hand-kept
    list, and without importing: the plan runner may have unloaded provider modules)."""
    if not typ.startswith("aws:"):
        return False
    module, cls = typ.split(":")[1].split("/")[0], typ.split(":")[2]
    source = (
        Path(pulumi_aws.__file__).parent / module / f"{re.sub(r'(?<!^)(?=[A-Z])', '_', cls).lower()}.py"
    ).read_text()
    init = source[source.index("def _internal_init(") :]
    return "tags:" in init[: init.index("):")]


def test_every_taggable_resource_carries_the_site_tags(plan: Plan) -> None:
    spec = spec_of(plan.stack)
    want = {
        "owner": spec["tags"]["owner"],
        "cost-center": spec["tags"]["costCenter"],
        "environment": spec["environment"],
        "app": "agent-app",
        "managed-by": "skyfleet",
    }
    taggable = [r for r in plan.resources if r.custom and _taggable(r.type)]
    assert len(taggable) > 30
    for r in taggable:
        tags = r.inputs.get("tags") or {}
        assert want.items() <= tags.items(), f"{r.type} {r.name} lacks tags: {tags}"


def test_stack_outputs_follow_the_site_contract(plan: Plan) -> None:
    out = SiteOutputs.model_validate(plan.outputs)
    spec = spec_of(plan.stack)
    assert out.target == "aws"
    assert out.endpoint == f"https://{spec['domain']['name']}"
    # CNAMEs (failover, weighted) name the dual-stack ALB; a multivalue edge checks the NLB,
    # where clients of the fixed addresses arrive.
    assert out.endpoint_host == app_lb(plan).outputs["dnsName"]
    assert out.addresses_host == net_lb(plan).outputs["dnsName"]
    assert out.endpoint_addresses == [
        e.outputs["publicIp"] for e in of(plan, "aws:ec2/eip:Eip") if "nlb" in e.name
    ]
    assert out.health_check_path == contract.READINESS_PATH
    assert out.cluster_name == one(plan, "aws:ecs/cluster:Cluster").outputs["name"]
    assert (out.api_service_name, out.worker_service_name) == ("api", "worker")
    assert out.region == spec["region"]


def test_preview_plans_without_computed_values(previews: dict[str, Plan]) -> None:
    preview = previews["aws-prod"]
    assert {r.type for r in preview.resources} >= {
        "aws:ecs/service:Service",
        "aws:elasticache/replicationGroup:ReplicationGroup",
    }


# --- config the aws target refuses before registering anything -----------------------------------------


def _variant(edit: Callable[[dict[str, Any]], None]) -> str:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.aws-dev.yaml").read_text())
    edit(doc["config"])
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.__setitem__("skyfleet:logRetentionDays", 10), "skyfleet:logRetentionDays: given 10"),
        (lambda c: c["skyfleet:app"].__setitem__("memory", 4096), "skyfleet:app.memory: given 4096"),
        (lambda c: c["skyfleet:app"].__setitem__("cpu", 300), "skyfleet:app.cpu: given 300"),
        (lambda c: c.pop("skyfleet:accountId"), "accountId"),
        (lambda c: c["skyfleet:domain"].pop("zoneId"), "zoneId"),
    ],
    ids=["retention", "fargate-memory", "fargate-cpu", "no-account", "no-cert-source"],
)
def test_bad_aws_config_is_refused_with_nothing_created(
    temp_project: Callable[[str, str], Path], edit: Callable[[dict[str, Any]], None], needle: str
) -> None:
    project = temp_project("aws-bad", _variant(edit))
    with pytest.raises(ConfigError) as info:
        plan_stack(project, "aws-bad")
    assert needle in str(info.value)
    assert info.value.registered == 0


def _walk(value: Any) -> Iterator[Any]:
    """Every value in a wire structure, not looking inside Pulumi secrets."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def test_no_plain_secret_value_appears_in_any_input(plan: Plan) -> None:
    token = plain(one(plan, "aws:elasticache/replicationGroup:ReplicationGroup").inputs["authToken"])
    for r in plan.resources:
        for v in _walk(r.inputs):
            if isinstance(v, str):
                assert token not in v, f"{r.type} {r.name} carries the AUTH token in plain text"


def test_existing_certificate_and_model_key_variant(temp_project: Callable[[str, str], Path]) -> None:
    """With certificateArn and no zone: no ACM certificate or DNS records are made, the listener
    uses the given certificate; a model key becomes one more secret the tasks read by reference."""
    existing = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-1111-2222-3333-444444444444"

    def edit(c: dict[str, Any]) -> None:
        c["skyfleet:domain"] = {"name": "aws-dev.agents.example.com", "certificateArn": existing}
        c["skyfleet:modelApiKey"] = dict(c["skyfleet:apiKeys"])

    plan = plan_stack(temp_project("aws-cert", _variant(edit)), "aws-cert")
    assert not plan.of_type("aws:acm/certificate:Certificate")
    assert not plan.of_type("aws:route53/record:Record")
    https = next(r for r in of(plan, "aws:lb/listener:Listener") if r.inputs["protocol"] == "HTTPS")
    assert https.inputs["certificateArn"] == existing
    secrets = {
        s.inputs["namePrefix"].rsplit("/", 1)[-1].removesuffix("-"): s.outputs["arn"]
        for s in of(plan, "aws:secretsmanager/secret:Secret")
    }
    assert set(secrets) == {"api-keys", "redis-auth", "model-api-key"}
    for c in containers(plan).values():
        refs = {s["name"]: s["valueFrom"] for s in c["secrets"]}
        assert refs[Env.MODEL_API_KEY.value] == secrets["model-api-key"]
    reads = [
        s
        for s in _role_statements(plan, "-execution")
        if "secretsmanager:GetSecretValue" in listify(s["Action"])
    ]
    assert set(listify(reads[0]["Resource"])) == set(secrets.values())
