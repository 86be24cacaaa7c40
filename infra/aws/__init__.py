"""The ``aws`` site target: the agent app on ECS Fargate behind an ALB, with ElastiCache,
SQS and Secrets Manager, in its own VPC. Components top to bottom: Secrets (its KMS key
encrypts everything else), Network, Queue, Cache, LoadBalancer, Service, Alarms.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from agent_app import contract
from infra.aws.alarms import Alarms, AlarmsArgs
from infra.aws.cache import Cache, CacheArgs
from infra.aws.load_balancer import LoadBalancer, LoadBalancerArgs
from infra.aws.network import FLOW_LOGS, Network, NetworkArgs
from infra.aws.queue import Queue, QueueArgs
from infra.aws.secrets import Secrets, SecretsArgs
from infra.aws.service import Service, ServiceArgs
from infra.aws.site import AwsSite, AwsSpecError, check_spec
from infra.spec import AwsStack
from infra.workload import secret_values, workloads

ROLES = ("api", "worker")


def deploy(spec: AwsStack) -> dict[str, Any]:
    """Create the site and return its stack outputs (infra.outputs.SiteOutputs keys)."""
    try:
        check_spec(spec)
    except AwsSpecError as exc:
        # Nothing is registered yet: fail the whole program with every problem at once.
        raise pulumi.RunError(f"stacks/Pulumi.{pulumi.get_stack()}.yaml:\n{exc}") from None

    # The site's provider: its region, and only the configured account (a stray profile
    # pointing at another account fails instead of deploying there).
    provider = aws.Provider(
        "aws",
        region=spec.region,
        allowed_account_ids=[spec.account_id],
    )
    site = AwsSite.from_spec(spec)
    opts = pulumi.ResourceOptions(providers={"aws": provider})

    secrets = Secrets(
        "secrets", SecretsArgs(site=site, values=secret_values(spec), log_roles=(*ROLES, FLOW_LOGS)), opts
    )
    network = Network(
        "network",
        NetworkArgs(
            site=site,
            network=spec.network,
            kms_key_arn=secrets.key.arn,
            log_retention_days=spec.log_retention_days,
        ),
        opts,
    )
    queue = Queue("queue", QueueArgs(site=site, queue=spec.queue), opts)
    cache = Cache(
        "cache",
        CacheArgs(
            site=site,
            cache=spec.cache,
            subnet_ids=network.private_subnet_ids,
            security_group_id=network.cache_sg.id,
            auth_token=secrets.redis_auth_token,
            kms_key_arn=secrets.key.arn,
        ),
        opts,
    )
    lb = LoadBalancer(
        "lb",
        LoadBalancerArgs(
            site=site,
            domain=spec.domain,
            vpc_id=network.vpc.id,
            subnet_ids=network.public_subnet_ids,
            security_group_id=network.alb_sg.id,
            nlb_security_group_id=network.nlb_sg.id,
            deletion_protection=spec.deletion_protection,
            log_retention_days=spec.log_retention_days,
            internet=network.internet,
        ),
        opts,
    )
    api, worker = workloads(
        spec,
        redis_url=cache.url,
        queue_url=queue.queue.url.apply(contract.sqs_queue_url),
        # ECS injects secrets only as variables: the API keys arrive as AGENT_API_KEYS.
        api_keys_as_file=False,
    )
    service = Service(
        "service",
        ServiceArgs(
            site=site,
            image=spec.app.image,
            workloads=(api, worker),
            autoscaling=spec.app.autoscaling,
            log_retention_days=spec.log_retention_days,
            subnet_ids=network.private_subnet_ids,
            security_group_id=network.task_sg.id,
            kms_key_arn=secrets.key.arn,
            secret_arns=secrets.secret_arns,
            secret_versions=secrets.versions,
            queue_arn=queue.queue.arn,
            queue_name=queue.queue.name,
            dlq_arn=queue.dlq.arn,
            target_group_arn=lb.target_group.arn,
            request_count_label=pulumi.Output.concat(lb.alb.arn_suffix, "/", lb.target_group.arn_suffix),
            listener=lb.https_listener,
        ),
        opts,
    )
    alarms = Alarms(
        "alarms",
        AlarmsArgs(
            site=site,
            kms_key_arn=secrets.key.arn,
            alb_arn_suffix=lb.alb.arn_suffix,
            target_group_arn_suffix=lb.target_group.arn_suffix,
            dlq_name=queue.dlq.name,
            cache_member_ids=cache.member_ids,
        ),
        opts,
    )

    return {
        "target": spec.target.value,
        "environment": spec.environment.value,
        "site": spec.site_name,
        "endpoint": lb.endpoint,
        "endpointHost": lb.alb.dns_name,
        "endpointAddresses": lb.addresses,
        # A multivalue edge checks the site where clients of those addresses arrive: the NLB.
        "addressesHost": lb.nlb.dns_name,
        "hostNames": spec.domain.host_names,
        "healthCheckPath": contract.READINESS_PATH,
        "region": spec.region,
        "clusterName": service.cluster.name,
        "apiServiceName": service.services[api.role].name,
        "workerServiceName": service.services[worker.role].name,
        "taskSecurityGroupId": network.task_sg.id,
        "alarmTopicArn": alarms.topic.arn,
        "queueUrl": queue.queue.url,
    }
