"""An ``aws`` site stack in the lab: its ECS tasks as pods, ElastiCache, SQS and the ALB.

- **ECS**: every service's task definition runs as pods (``desiredCount`` replicas, capped by
  the lab's option), each container as its definition says; Secrets Manager values are
  injected as variables, as ECS does at task start. The platform gives each task its region
  and credentials for the lab's SQS.
- **ElastiCache**: the replication group's nodes (``numCacheClusters``), TLS only, the group's
  AUTH token, its port; with automatic failover a replica is promoted when the primary is lost
  and the primary endpoint's name moves to it. The certificate is a publicly trusted one for
  the endpoint names, as ElastiCache's is.
- **SQS**: moto's server, behind the regional endpoint's name over HTTPS, in the stack's
  account, with the plan's queues (visibility, retention, long polling, redrive to the DLQ).
- **ALB**: the HTTPS listener's certificate and HSTS header, the target group's health check, the
  load balancer's idle timeout; an NLB that passes TCP through to it answers at the ALB twin's
  addresses (one per Elastic IP).
"""

from __future__ import annotations

from collections.abc import Mapping

import boto3
from botocore.config import Config

from agent_app.contract import DEFAULT_PORT
from skyfleet.lab.errors import LabError
from skyfleet.lab.lb import Backend, Check, LoadBalancerSpec
from skyfleet.lab.model import plain, pods
from skyfleet.lab.targets.base import Context, ServiceProcess, SiteTwin, managed_cache, one, redis_version
from skyfleet.plan import PlannedResource

REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
QUEUE = "aws:sqs/queue:Queue"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
TARGET_GROUP_ATTACHMENT = "aws:lb/targetGroupAttachment:TargetGroupAttachment"
EIP = "aws:ec2/eip:Eip"
LISTENER = "aws:lb/listener:Listener"
CERTIFICATE = "aws:acm/certificate:Certificate"
VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
ALB = "aws:lb/loadBalancer:LoadBalancer"
# The ALB's idle timeout where the plan sets none (idle_timeout.timeout_seconds): it closes a
# connection, either side, silent this long, and answers 504 for a target that is.
ALB_IDLE_TIMEOUT = 60
# AWS's fixed time for an ALB to connect to a target, not a setting: "The load balancer failed to
# establish a connection to the target before the connection timeout expired (10 seconds)" (504;
# AWS knowledge center, "How do I troubleshoot 504 errors ... Application Load Balancer").
ALB_CONNECT_TIMEOUT = 10
# The HTTPS listener's HSTS header value (routing.http.response.strict_transport_security.
# header_value); unset, the ALB adds none.
HSTS = "routingHttpResponseStrictTransportSecurityHeaderValue"
# Credentials the lab's SQS accepts; ECS would hand the task role's through its agent.
LAB_ACCESS_KEY = "AKIASKYFLEETLAB00000"
LAB_SECRET_KEY = "skyfleet-lab-secret-key-not-a-real-one"


def _passthrough_fronts(site: SiteTwin, alb: PlannedResource, https: PlannedResource) -> None:
    """An NLB that passes TCP through to the ALB's HTTPS listener adds no behaviour the lab
    must run (TLS, routing and checks are the ALB's): its name answers with the ALB twin's
    addresses, one per Elastic IP. Any other NLB cannot be twinned faithfully, and the
    addresses the stack exports must be its Elastic IPs: otherwise ``lab up`` stops."""
    plan = site.plan
    groups = {str(t.outputs.get("arn")): t for t in plan.of_type(TARGET_GROUP)}
    attached = {str(a.inputs.get("targetGroupArn")): a for a in plan.of_type(TARGET_GROUP_ATTACHMENT)}
    eips = {str(e.outputs.get("allocationId") or e.outputs.get("id")): e for e in plan.of_type(EIP)}
    alb_arn = str(alb.outputs.get("arn"))
    https_port = https.inputs.get("port")
    fronted: list[str] = []
    for nlb in plan.of_type(ALB):
        if nlb.inputs.get("loadBalancerType") != "network":
            continue
        listeners = [
            r for r in plan.of_type(LISTENER) if r.inputs.get("loadBalancerArn") == nlb.outputs.get("arn")
        ]
        ends = [
            (listener, groups.get(arn := str(a.get("targetGroupArn"))), attached.get(arn))
            for listener in listeners
            for a in listener.inputs.get("defaultActions") or [{}]
        ]
        if not ends or not all(
            listener.inputs.get("protocol") == "TCP"
            and listener.inputs.get("port") == https_port
            and group is not None
            and group.inputs.get("targetType") == "alb"
            and attachment is not None
            and str(attachment.inputs.get("targetId")) == alb_arn
            and attachment.inputs.get("port") == https_port
            for listener, group, attachment in ends
        ):
            raise LabError(
                f"{site.stack}: NLB {nlb.name!r} does not only pass TCP {int(https_port or 0)} through "
                "to the ALB's HTTPS listener; the lab twins only such an NLB"
            )
        for mapping in nlb.inputs.get("subnetMappings") or []:
            eip = eips.get(str(mapping.get("allocationId")))
            if eip is not None:
                fronted.append(str(eip.outputs.get("publicIp")))
        site.names[str(nlb.outputs["dnsName"])] = ["lb"]
        site.deviations.append(
            f"NLB {nlb.name!r} (TCP {int(https_port or 0)} passed through to the ALB) is not run: "
            "its name and its Elastic IPs reach the ALB's twin directly"
        )
    exported = [str(a) for a in plan.outputs.get("endpointAddresses") or []]
    if sorted(exported) != sorted(fronted):
        raise LabError(
            f"{site.stack}: the stack exports endpointAddresses {exported}, but the Elastic IPs of its "
            f"NLB in front of the ALB are {fronted}: an edge would answer addresses that do not reach it"
        )


def declare(site: SiteTwin, ctx: Context) -> None:
    site.app_pods = [site.cap(p, ctx.max_replicas) for p in pods(site.plan)]
    group = one(site.plan, REPLICATION_GROUP)
    nodes = [f"cache-{n:03d}" for n in range(1, int(group.inputs.get("numCacheClusters", 1)) + 1)]
    site.service_pods = [*nodes, "sqs", "control", "lb"]


def render(site: SiteTwin, ctx: Context, addresses: Mapping[str, str]) -> None:
    plan, values = site.plan, ctx.values
    region = str(site.config("region"))
    account = str(site.config("accountId"))

    # ElastiCache: the group's own values; its certificate from the "public" CA.
    group = one(plan, REPLICATION_GROUP)
    nodes = [p for p in site.service_pods if p.startswith("cache-")]
    port = int(group.inputs.get("port", 6379))
    password = values.secret(plain(group.inputs.get("authToken")))
    endpoints = [
        str(group.outputs[k])
        for k in ("primaryEndpointAddress", "readerEndpointAddress")
        if group.outputs.get(k)
    ]
    certs = {}
    for node in nodes:
        issued = ctx.public_ca.issue([*endpoints, f"{node}.{group.outputs.get('id')}.cache.amazonaws.com"])
        certs[node] = (issued.cert_pem, issued.key_pem)
    managed_cache(
        site,
        service="elasticache",
        nodes=nodes,
        port=port,
        password=password,
        server_pem=certs,
        ca_pem=ctx.public_ca.pem,
        failover=bool(group.inputs.get("automaticFailoverEnabled")),
        endpoint_names=endpoints[:1],
        addresses=addresses,
        hosts_file=ctx.hosts_file(site.site),
        control_pod="control",
        state_dir=ctx.state_dir,
    )
    if len(endpoints) > 1:
        site.names[endpoints[1]] = nodes[1:] or nodes
    engine = str(group.inputs.get("engineVersion", "?"))
    site.deviations.append(
        f"ElastiCache engine {engine} runs as this machine's redis-server {redis_version()}; failover "
        "after 5 s of a lost primary (the lab's Sentinels; ElastiCache publishes no figure)"
    )

    # SQS: moto's server behind the regional endpoint's name, over TLS.
    host = f"sqs.{region}.amazonaws.com"
    # The pod's address too: the lab itself creates the queues from outside the site.
    issued = ctx.public_ca.issue([host, f"{region}.queue.amazonaws.com", addresses["sqs"]])
    folder = ctx.state_dir / "services" / site.site / "sqs"
    site.services.append(
        ServiceProcess(
            pod="sqs",
            name="sqs",
            kind="queue",
            argv=[
                "moto_server",
                "-H",
                addresses["sqs"],
                "-p",
                "443",
                "-c",
                str(folder / "sqs.crt"),
                "-k",
                str(folder / "sqs.key"),
            ],
            files={folder / "sqs.crt": issued.cert_pem + issued.ca_pem, folder / "sqs.key": issued.key_pem},
            env={"MOTO_ACCOUNT_ID": account},
            port=443,
            tls=True,
        )
    )
    site.names[host] = ["sqs"]
    site.names[f"{region}.queue.amazonaws.com"] = ["sqs"]
    site.platform_env.update(
        {
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": LAB_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LAB_SECRET_KEY,
        }
    )
    site.deviations.append(
        "SQS is moto's server: IAM is not enforced and the task role's credentials are the lab's "
        "static keys (ECS hands the role's own through its agent)"
    )
    queues = sorted(plan.of_type(QUEUE), key=lambda q: "redrivePolicy" in q.inputs)  # DLQs first

    def create_queues(addrs: Mapping[str, str]) -> None:
        client = boto3.client(
            "sqs",
            region_name=region,
            endpoint_url=f"https://{addrs['sqs']}",
            aws_access_key_id=LAB_ACCESS_KEY,
            aws_secret_access_key=LAB_SECRET_KEY,
            verify=str(ctx.state_dir / "secrets" / "public-ca.pem"),
            config=Config(retries={"max_attempts": 10, "mode": "standard"}),
        )
        for q in queues:
            attrs = {
                "VisibilityTimeout": q.inputs.get("visibilityTimeoutSeconds"),
                "MessageRetentionPeriod": q.inputs.get("messageRetentionSeconds"),
                "ReceiveMessageWaitTimeSeconds": q.inputs.get("receiveWaitTimeSeconds"),
                "RedrivePolicy": q.inputs.get("redrivePolicy"),
            }
            client.create_queue(
                QueueName=str(q.inputs["name"]),
                Attributes={
                    k: str(int(v)) if isinstance(v, float) else str(v)
                    for k, v in attrs.items()
                    if v is not None
                },
            )

    site.after_services.append(create_queues)

    # The ALB: the HTTPS listener's certificate and HSTS header, the target group's health check,
    # the load balancer's idle timeout.
    https = next(r for r in plan.of_type(LISTENER) if r.inputs.get("protocol") == "HTTPS")
    alb = next(lb for lb in plan.of_type(ALB) if lb.outputs.get("arn") == https.inputs.get("loadBalancerArn"))
    planned_idle = alb.inputs.get("idleTimeout")
    idle = float(ALB_IDLE_TIMEOUT if planned_idle is None else planned_idle)
    hsts = https.inputs.get(HSTS)
    cert_arn = str(https.inputs.get("certificateArn"))
    validated = {str(v.outputs.get("certificateArn")): v for v in plan.of_type(VALIDATION)}
    cert = next(
        (c for c in plan.of_type(CERTIFICATE) if str(c.outputs.get("arn")) in (cert_arn, *validated)), None
    )
    if cert is not None:
        source = f"{cert.type} {cert.name!r}"
        names = [
            str(cert.inputs["domainName"]),
            *(str(n) for n in cert.inputs.get("subjectAlternativeNames") or []),
        ]
    else:
        names = [str(n) for n in plan.outputs.get("hostNames") or []]
        source = f"certificate {cert_arn} (not in the plan)"
        site.deviations.append(
            f"the HTTPS listener uses certificate {cert_arn}, which is not in the plan: the lab serves "
            f"one for the names the stack says it serves ({names})"
        )
    # The api's target group: the one the HTTPS listener forwards to.
    forward = str(((https.inputs.get("defaultActions") or [{}])[0]).get("targetGroupArn"))
    tg = next(t for t in plan.of_type(TARGET_GROUP) if str(t.outputs.get("arn")) == forward)
    hc = tg.inputs.get("healthCheck") or {}
    site.lb = LoadBalancerSpec(
        site=site.site,
        kind="alb",
        names=names,
        certificate=source,
        issuer="public",
        hosts=None,
        check=Check(
            path=str(hc.get("path", "/")),
            interval_s=float(hc.get("interval", 30)),
            timeout_s=float(hc.get("timeout", 5)),
            fall=int(hc.get("unhealthyThreshold", 2)),
            rise=int(hc.get("healthyThreshold", 5)),
            expect_status=str(hc.get("matcher", "200")),
        ),
        retries=0,
        # The idle timeout bounds both connections: a client's and a target's silence.
        connect_timeout_s=ALB_CONNECT_TIMEOUT,
        server_timeout_s=idle,
        client_timeout_s=idle,
        keep_alive_s=idle,
        hsts=str(hsts) if hsts else None,
        max_body_bytes=None,  # an ALB sets no limit on a request body to IP targets
    )
    site.names[str(alb.outputs["dnsName"])] = ["lb"]
    _passthrough_fronts(site, alb, https)
    # The tasks behind the target group: the service whose load balancer names it.
    for spec in site.app_pods:
        service = next(
            (s for s in plan.of_type("aws:ecs/service:Service") if str(s.inputs.get("name")) == spec.name),
            None,
        )
        attached = service is not None and any(
            str(lb.get("targetGroupArn")) == str(tg.outputs.get("arn"))
            for lb in service.inputs.get("loadBalancers") or []
        )
        if attached:
            port = next(
                int(lb.get("containerPort", DEFAULT_PORT))
                for lb in service.inputs["loadBalancers"]  # type: ignore[index]
            )
            site.lb.backends += [
                Backend(f"{site.site}/{spec.name}-{i}", addresses[f"{spec.name}-{i}"], port)
                for i in range(spec.replicas)
            ]
