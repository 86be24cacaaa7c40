"""Mock outputs for AWS resources: the ids, ARNs, DNS names and endpoints AWS computes on
create, in the formats AWS really uses, so the aws target's apply-chains (autoscaling resource
labels, alarm dimensions, rediss:// and sqs:// URLs, IAM policies naming exact ARNs) resolve to
values a reviewer can recognise.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from typing import Any

from skyfleet.plan.mocks import MockContext

# Route 53 hosted-zone ids of ALBs per region (aliases point at them); others get a fake one.
_ALB_ZONES = {
    "us-east-1": "Z35SXDOTRQ7X7K",
    "us-east-2": "Z3AADJGX6KTTL2",
    "us-west-2": "Z1H1FL5HABSF5",
    "eu-west-1": "Z32O12XQLNTSW2",
    "eu-west-2": "ZHURV8PSTC4K8",
    "eu-central-1": "Z215JYRZR1TBD5",
}


def _region(inputs: dict[str, Any], ctx: MockContext) -> str:
    return str(inputs.get("region") or ctx.region)


def _arn(
    ctx: MockContext, inputs: dict[str, Any], service: str, resource: str, *, regional: bool = True
) -> str:
    partition = "aws-cn" if ctx.region.startswith("cn-") else "aws"
    region = _region(inputs, ctx) if regional else ""
    return f"arn:{partition}:{service}:{region}:{ctx.account}:{resource}"


def _hex(ctx: MockContext, name: str, n: int) -> str:
    return ctx.uid(f"aws/{name}", n)


def _digits(ctx: MockContext, name: str, n: int) -> str:
    return str(int(_hex(ctx, name + "digits", n), 16))[:n].zfill(n)


def _uuid(ctx: MockContext, name: str) -> str:
    h = _hex(ctx, name, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _name(inputs: dict[str, Any], name: str, key: str = "name") -> str:
    """The physical name: the given one, else Pulumi's auto-name (logical name + suffix)."""
    given = inputs.get(key)
    return str(given) if given else name


def _autoname(inputs: dict[str, Any], name: str, ctx: MockContext, limit: int = 255) -> str:
    """The given name, else what Pulumi's auto-naming makes: logical name, dash, 7 hex."""
    given = inputs.get("name")
    return str(given) if given else f"{name[: limit - 8]}-{_hex(ctx, name + 'auto', 7)}"


def _last(arn_or_name: object) -> str:
    return str(arn_or_name).rsplit("/", 1)[-1]


# --- per type -------------------------------------------------------------------------------


def _provider(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    # The provider fixes the site's account and region: every ARN below carries them.
    accounts = inputs.get("allowedAccountIds")
    if isinstance(accounts, str) and accounts.startswith("["):
        import json

        accounts = json.loads(accounts)
    if isinstance(accounts, list) and accounts:
        ctx.account = str(accounts[0])
    if inputs.get("region"):
        ctx.region = str(inputs["region"])
    return {"id": f"{name}-provider"}


def _vpc(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    vid = f"vpc-{_hex(ctx, name, 17)}"
    # An Amazon-assigned /56 from 2a05:d018::/36 (the eu-west-1 pool), stable per stack.
    base = ipaddress.ip_network("2a05:d018::/36")
    v6 = ipaddress.ip_network((int(base.network_address) + (int(_hex(ctx, name, 5), 16) << 72), 56))
    return {
        "id": vid,
        "arn": _arn(ctx, inputs, "ec2", f"vpc/{vid}"),
        "ipv6CidrBlock": str(v6),
        "ipv6AssociationId": f"vpc-cidr-assoc-{_hex(ctx, name + 'v6', 17)}",
        "defaultSecurityGroupId": f"sg-{_hex(ctx, name + 'default', 17)}",
        "mainRouteTableId": f"rtb-{_hex(ctx, name + 'main', 17)}",
        "defaultNetworkAclId": f"acl-{_hex(ctx, name + 'acl', 17)}",
        "ownerId": ctx.account,
    }


def _prefixed(
    prefix: str, arn_kind: str | None
) -> Callable[[str, dict[str, Any], MockContext], dict[str, Any]]:
    """Resources whose id is ``<prefix>-<17 hex>`` and whose ARN (if any) is ``ec2:<kind>/<id>``."""

    def make(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
        rid = f"{prefix}-{_hex(ctx, name, 17)}"
        out: dict[str, Any] = {"id": rid, "ownerId": ctx.account}
        if arn_kind:
            out["arn"] = _arn(ctx, inputs, "ec2", f"{arn_kind}/{rid}")
        return out

    return make


def _eip(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    n = int(_hex(ctx, name, 4), 16)
    return {
        "id": f"eipalloc-{_hex(ctx, name, 17)}",
        "allocationId": f"eipalloc-{_hex(ctx, name, 17)}",
        "publicIp": f"52.{n % 200 + 16}.{(n >> 8) % 256}.{n % 254 + 1}",
        "domain": "vpc",
    }


def _nat(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    return {"id": f"nat-{_hex(ctx, name, 17)}", "publicIp": "52.16.0.1", "privateIp": "10.0.0.10"}


def _security_group(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    sid = f"sg-{_hex(ctx, name, 17)}"
    return {"id": sid, "arn": _arn(ctx, inputs, "ec2", f"security-group/{sid}"), "ownerId": ctx.account}


def _sg_rule(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    rid = f"sgr-{_hex(ctx, name, 17)}"
    return {
        "id": rid,
        "securityGroupRuleId": rid,
        "arn": _arn(ctx, inputs, "ec2", f"security-group-rule/{rid}"),
    }


def _kms_key(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    kid = _uuid(ctx, name)
    return {"id": kid, "keyId": kid, "arn": _arn(ctx, inputs, "kms", f"key/{kid}")}


def _kms_alias(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    alias = _name(inputs, f"alias/{name}")
    return {"id": alias, "arn": _arn(ctx, inputs, "kms", alias), "targetKeyArn": ""}


def _secret(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    # A namePrefix gets the provider's unique suffix (a timestamp and a counter, 26 digits).
    prefix = inputs.get("namePrefix")
    physical = (
        f"{prefix}{_digits(ctx, name, 26)}" if prefix and not inputs.get("name") else _name(inputs, name)
    )
    # Secrets Manager appends six random characters to the name in the ARN.
    arn = _arn(ctx, inputs, "secretsmanager", f"secret:{physical}-{_hex(ctx, name, 6)}")
    return {"id": arn, "arn": arn, "name": physical}


def _secret_version(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    version = _uuid(ctx, name)
    return {
        "id": f"{inputs.get('secretId', name)}|{version}",
        "versionId": version,
        "arn": inputs.get("secretId"),
    }


def _queue(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    qname = _name(inputs, name)
    url = f"https://sqs.{_region(inputs, ctx)}.amazonaws.com/{ctx.account}/{qname}"
    return {"id": url, "url": url, "name": qname, "arn": _arn(ctx, inputs, "sqs", qname)}


def _queue_attachment(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    return {"id": str(inputs.get("queueUrl", name))}


def _replication_group(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    gid = _name(inputs, name, "replicationGroupId")
    short = _hex(ctx, name, 6)
    region = _region(inputs, ctx)
    # Region codes in ElastiCache host names drop the dashes' vowels: eu-west-1 -> euw1.
    code = "".join(p[0] if not p.isdigit() else p for p in region.split("-"))
    nodes = int(inputs.get("numCacheClusters") or 1)
    out: dict[str, Any] = {
        "id": gid,
        "arn": _arn(ctx, inputs, "elasticache", f"replicationgroup:{gid}"),
        "memberClusters": [f"{gid}-{n:03d}" for n in range(1, nodes + 1)],
        "engineVersionActual": f"{inputs.get('engineVersion', '7.1')}.0",
        "clusterEnabled": inputs.get("clusterMode") == "enabled",
    }
    if out["clusterEnabled"]:
        out["configurationEndpointAddress"] = f"clustercfg.{gid}.{short}.{code}.cache.amazonaws.com"
    else:
        out["primaryEndpointAddress"] = f"master.{gid}.{short}.{code}.cache.amazonaws.com"
        out["readerEndpointAddress"] = f"replica.{gid}.{short}.{code}.cache.amazonaws.com"
    return out


def _cache_subnet_group(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    gname = _name(inputs, name)
    return {"id": gname, "name": gname, "arn": _arn(ctx, inputs, "elasticache", f"subnetgroup:{gname}")}


def _load_balancer(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    lname = _autoname(inputs, name, ctx, 32)
    network = inputs.get("loadBalancerType") == "network"
    suffix = f"{'net' if network else 'app'}/{lname}/{_hex(ctx, name, 16)}"
    arn = _arn(ctx, inputs, "elasticloadbalancing", f"loadbalancer/{suffix}")
    region = _region(inputs, ctx)
    if network:
        # NLBs: "<name>-<16 hex>.elb.<region>.amazonaws.com".
        dns = f"{lname}-{_hex(ctx, name, 16)}.elb.{region}.amazonaws.com"
    else:
        # The same DNS name for ipv4 and dualstack ALBs (clients may prefix "dualstack.").
        dns = f"{lname}-{int(_hex(ctx, name, 8), 16) % 10**10}.{region}.elb.amazonaws.com"
    return {
        "id": arn,
        "arn": arn,
        "arnSuffix": suffix,
        "name": lname,
        "dnsName": dns,
        "zoneId": _ALB_ZONES.get(region, "Z0000000ALBEXAMPLE"),
        "vpcId": "",
    }


def _target_group(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    tname = _autoname(inputs, name, ctx, 32)
    suffix = f"targetgroup/{tname}/{_hex(ctx, name, 16)}"
    arn = _arn(ctx, inputs, "elasticloadbalancing", suffix)
    return {"id": arn, "arn": arn, "arnSuffix": suffix, "name": tname}


def _listener(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    lb = str(inputs.get("loadBalancerArn") or "")
    lb_part = (
        lb.split(":loadbalancer/", 1)[-1] if ":loadbalancer/" in lb else f"app/{name}/{_hex(ctx, 'lb', 16)}"
    )
    arn = _arn(ctx, inputs, "elasticloadbalancing", f"listener/{lb_part}/{_hex(ctx, name, 16)}")
    return {"id": arn, "arn": arn}


def _certificate(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    arn = _arn(ctx, inputs, "acm", f"certificate/{_uuid(ctx, name)}")
    domains = [str(inputs.get("domainName") or "example.com")]
    domains += [str(d) for d in inputs.get("subjectAlternativeNames") or [] if str(d) not in domains]
    # One validation record per name, as ACM answers for DNS validation.
    return {
        "id": arn,
        "arn": arn,
        "status": "ISSUED",
        "domainValidationOptions": [
            {
                "domainName": domain,
                "resourceRecordName": f"_{_hex(ctx, name + 'dv' + domain, 32)}.{domain}.",
                "resourceRecordType": "CNAME",
                "resourceRecordValue": (
                    f"_{_hex(ctx, name + 'dvv' + domain, 32)}.mhbtsbpdnt.acm-validations.aws."
                ),
            }
            for domain in domains
        ],
    }


def _certificate_validation(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    return {"id": "2026-01-01 00:00:00 +0000 UTC", "certificateArn": inputs.get("certificateArn")}


def _record(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    rname = str(inputs.get("name") or name)
    return {"id": f"{inputs.get('zoneId')}_{rname}_{inputs.get('type')}", "fqdn": rname.rstrip(".")}


def _bucket(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    bucket = str(inputs.get("bucket") or f"{name}-{_hex(ctx, name + 'auto', 7)}")
    region = _region(inputs, ctx)
    return {
        "id": bucket,
        "bucket": bucket,
        "arn": f"arn:aws:s3:::{bucket}",
        "bucketDomainName": f"{bucket}.s3.amazonaws.com",
        "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
        "hostedZoneId": "Z1BKCTXD74EZPE",
        "region": region,
    }


def _bucket_part(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    return {"id": str(inputs.get("bucket") or name)}


def _ecs_cluster(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    cname = _name(inputs, name)
    arn = _arn(ctx, inputs, "ecs", f"cluster/{cname}")
    return {"id": arn, "arn": arn, "name": cname}


def _task_definition(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    family = _name(inputs, name, "family")
    base = _arn(ctx, inputs, "ecs", f"task-definition/{family}")
    return {"id": family, "arn": f"{base}:1", "arnWithoutRevision": base, "revision": 1}


def _ecs_service(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    sname = _name(inputs, name)
    cluster = _last(inputs.get("cluster") or "default")
    arn = _arn(ctx, inputs, "ecs", f"service/{cluster}/{sname}")
    return {"id": arn, "arn": arn, "name": sname}


def _log_group(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    gname = _name(inputs, name)
    return {"id": gname, "name": gname, "arn": _arn(ctx, inputs, "logs", f"log-group:{gname}")}


def _role(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    rname = _autoname(inputs, name, ctx, 64)
    return {
        "id": rname,
        "name": rname,
        "arn": _arn(ctx, inputs, "iam", f"role/{rname}", regional=False),
        "uniqueId": f"AROA{_hex(ctx, name, 17).upper()}",
    }


def _role_policy(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    return {"id": f"{inputs.get('role', 'role')}:{_name(inputs, name)}"}


def _scaling_target(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    rid = str(inputs.get("resourceId") or name)
    arn = _arn(ctx, inputs, "application-autoscaling", f"scalable-target/{_hex(ctx, name, 34)}")
    return {"id": rid, "arn": arn}


def _scaling_policy(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    pname = _name(inputs, name)
    rid = inputs.get("resourceId", "")
    arn = _arn(
        ctx,
        inputs,
        "autoscaling",
        f"scalingPolicy:{_uuid(ctx, name)}:resource/ecs/{rid}:policyName/{pname}",
    )
    return {"id": pname, "name": pname, "arn": arn, "alarmArns": []}


def _alarm(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    aname = _name(inputs, name)
    return {"id": aname, "arn": _arn(ctx, inputs, "cloudwatch", f"alarm:{aname}")}


def _graphql_api(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    api_id = _hex(ctx, name, 26)
    host = f"{_hex(ctx, name + 'host', 26)}.appsync-api.{_region(inputs, ctx)}.amazonaws.com"
    return {
        "id": api_id,
        "arn": _arn(ctx, inputs, "appsync", f"apis/{api_id}"),
        # Programs read the endpoints by key.
        "uris": {
            "GRAPHQL": f"https://{host}/graphql",
            "REALTIME": f"wss://{host.replace('appsync-api', 'appsync-realtime-api')}/graphql",
        },
    }


def _topic(name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any]:
    arn = _arn(ctx, inputs, "sns", _name(inputs, name))
    return {"id": arn, "arn": arn, "owner": ctx.account}


_HANDLERS: dict[str, Callable[[str, dict[str, Any], MockContext], dict[str, Any]]] = {
    "pulumi:providers:aws": _provider,
    "aws:ec2/vpc:Vpc": _vpc,
    "aws:ec2/subnet:Subnet": _prefixed("subnet", "subnet"),
    "aws:ec2/internetGateway:InternetGateway": _prefixed("igw", "internet-gateway"),
    "aws:ec2/routeTable:RouteTable": _prefixed("rtb", "route-table"),
    "aws:ec2/route:Route": _prefixed("r", None),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _prefixed("rtbassoc", None),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": _security_group,
    "aws:ec2/eip:Eip": _eip,
    "aws:ec2/flowLog:FlowLog": _prefixed("fl", "vpc-flow-log"),
    "aws:ec2/natGateway:NatGateway": _nat,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _sg_rule,
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _sg_rule,
    "aws:kms/key:Key": _kms_key,
    "aws:kms/alias:Alias": _kms_alias,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:secretsmanager/secretVersion:SecretVersion": _secret_version,
    "aws:sqs/queue:Queue": _queue,
    "aws:sqs/redrivePolicy:RedrivePolicy": _queue_attachment,
    "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy": _queue_attachment,
    "aws:sqs/queuePolicy:QueuePolicy": _queue_attachment,
    "aws:elasticache/replicationGroup:ReplicationGroup": _replication_group,
    "aws:elasticache/subnetGroup:SubnetGroup": _cache_subnet_group,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:lb/listener:Listener": _listener,
    "aws:acm/certificate:Certificate": _certificate,
    "aws:acm/certificateValidation:CertificateValidation": _certificate_validation,
    "aws:route53/record:Record": _record,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": _bucket_part,
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": _bucket_part,
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": _bucket_part,
    "aws:s3/bucketVersioning:BucketVersioning": _bucket_part,
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": _bucket_part,
    "aws:s3/bucketPolicy:BucketPolicy": _bucket_part,
    "aws:ecs/cluster:Cluster": _ecs_cluster,
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    "aws:ecs/service:Service": _ecs_service,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:iam/role:Role": _role,
    "aws:iam/rolePolicy:RolePolicy": _role_policy,
    "aws:appautoscaling/target:Target": _scaling_target,
    "aws:appautoscaling/policy:Policy": _scaling_policy,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _alarm,
    "aws:sns/topic:Topic": _topic,
    "aws:appsync/graphQLApi:GraphQLApi": _graphql_api,
}


def outputs(typ: str, name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    handler = _HANDLERS.get(typ)
    return handler(name, inputs, ctx) if handler else None


def call(token: str, args: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    """Invokes whose answer depends on the region, or has a format programs parse (the common
    ones live in mocks.py; the rest are synthesized from the SDK's result types)."""
    if token in (
        "aws:ecr/getAuthorizationToken:getAuthorizationToken",
        "aws:ecr/getCredentials:getCredentials",
    ):
        # A base64 "AWS:<password>" token, as ECR gives (programs split it into user/password).
        password = _hex(ctx, "ecr-token", 64)
        return {
            "authorizationToken": base64.b64encode(f"AWS:{password}".encode()).decode(),
            "userName": "AWS",
            "password": password,
            "proxyEndpoint": f"https://{ctx.account}.dkr.ecr.{_region(args, ctx)}.amazonaws.com",
            "expiresAt": "2026-01-01T12:00:00Z",
            "registryId": str(args.get("registryId") or ctx.account),
            "id": _region(args, ctx),
        }
    if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
        region = str(args.get("region") or ctx.region)
        code = "".join(p[0] if not p.isdigit() else p for p in region.split("-"))
        return {
            "names": [f"{region}{z}" for z in "abc"],
            "zoneIds": [f"{code}-az{i}" for i in (1, 2, 3)],
            "groupNames": [region],
            "id": region,
        }
    return None
