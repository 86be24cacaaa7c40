"""The ``gcp`` site target: the agent app on Cloud Run behind a global HTTPS load balancer,
with Memorystore for sessions and Pub/Sub for tasks, all in one project and region.

Top to bottom: APIs -> network -> cache -> secrets -> queue -> services -> load balancer ->
alerts. Every resource is a child of one capability component; every labelable resource
carries the spec's labels.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp

from agent_app import contract
from agent_app.contract import Env
from agent_app.queues.base import RESERVED_DELIVERIES, broker_deliveries
from infra.config import Problem, SpecError, stack_file
from infra.gcp.alarms import Alarms, AlarmsArgs
from infra.gcp.apis import Apis, ApisArgs
from infra.gcp.cache import Cache, CacheArgs
from infra.gcp.load_balancer import LoadBalancer, LoadBalancerArgs
from infra.gcp.network import Network, NetworkArgs
from infra.gcp.queue import MAX_DELIVERY_ATTEMPTS, MIN_DELIVERY_ATTEMPTS, Queue, QueueArgs
from infra.gcp.secrets import Secrets, SecretsArgs
from infra.gcp.service import (
    MIN_MEMORY_FOR_CPU,
    REDIS_CA,
    REDIS_CA_FILE,
    Service,
    ServiceArgs,
    cloud_run_limits,
)
from infra.gcp.site import Site
from infra.spec import GcpStack
from infra.workload import REDIS_AUTH, secret_values, workloads

# Cloud Logging keeps a bucket's logs at most this long.
MAX_LOG_RETENTION_DAYS = 3650


def check(spec: GcpStack) -> None:
    """Refuse values GCP cannot honour before any resource is registered."""
    problems: list[Problem] = []
    q = spec.queue
    if not MIN_DELIVERY_ATTEMPTS <= broker_deliveries(q.max_delivery_attempts) <= MAX_DELIVERY_ATTEMPTS:
        low, high = MIN_DELIVERY_ATTEMPTS - RESERVED_DELIVERIES, MAX_DELIVERY_ATTEMPTS - RESERVED_DELIVERIES
        problems.append(
            Problem(
                "skyfleet:queue.maxDeliveryAttempts",
                str(q.max_delivery_attempts),
                f"{low}..{high} (Pub/Sub's dead-letter policy allows {MIN_DELIVERY_ATTEMPTS}.."
                f"{MAX_DELIVERY_ATTEMPTS} deliveries, {RESERVED_DELIVERIES} of them the worker's reserve)",
            )
        )
    if spec.log_retention_days > MAX_LOG_RETENTION_DAYS:
        problems.append(
            Problem(
                "skyfleet:logRetentionDays",
                str(spec.log_retention_days),
                f"<= {MAX_LOG_RETENTION_DAYS} (Cloud Logging bucket retention)",
            )
        )
    cpus = int(cloud_run_limits(spec.app.cpu, spec.app.memory)["cpu"])
    if spec.app.memory < MIN_MEMORY_FOR_CPU.get(cpus, 0):
        problems.append(
            Problem(
                "skyfleet:app.memory",
                str(spec.app.memory),
                f">= {MIN_MEMORY_FOR_CPU[cpus]} (Cloud Run's least memory for {cpus} vCPUs, which "
                f"skyfleet:app.cpu {spec.app.cpu} rounds up to)",
            )
        )
    if not spec.network.private_subnet_cidrs:
        problems.append(
            Problem("skyfleet:network.privateSubnetCidrs", "[]", "one CIDR for Cloud Run's Direct VPC egress")
        )
    if problems:
        source = str(stack_file(pulumi.get_stack(), "."))
        raise SpecError(source, problems)


def deploy(spec: GcpStack) -> dict[str, Any]:
    check(spec)
    site = Site.from_spec(spec)

    # One explicit provider: every resource in the site's project and region, nothing from
    # ambient gcloud defaults.
    provider = gcp.Provider("gcp", project=site.project, region=site.region)
    apis = Apis("apis", ApisArgs(site=site), pulumi.ResourceOptions(provider=provider))
    # Every resource below waits for the API it calls (a fresh project has none enabled).
    opts = pulumi.ResourceOptions(provider=provider, transformations=[apis.needs_api])

    network = Network("network", NetworkArgs(site=site, network=spec.network), opts)

    cache = Cache(
        "cache",
        CacheArgs(
            site=site,
            cache=spec.cache,
            network=network.vpc.id,
            reserved_range=network.services_range.name,
            depends_on=[network.services_connection],
        ),
        opts,
    )

    secrets = Secrets(
        "secrets",
        SecretsArgs(
            site=site,
            values={
                **secret_values(spec),
                REDIS_AUTH: cache.auth_string,
                REDIS_CA: cache.ca_certs,
            },
        ),
        opts,
    )

    queue = Queue("queue", QueueArgs(site=site, queue=spec.queue), opts)

    api, worker = workloads(
        spec,
        redis_url=cache.url,
        queue_url=queue.url,
        api_keys_as_file=True,
        extra_env={
            Env.REDIS_CA_FILE.value: REDIS_CA_FILE,
            # Memorystore's certificate names its IP in the CN only; the chain is still checked
            # against the instance's own CA (mounted above), which signs nothing else.
            Env.REDIS_TLS_CHECK_HOSTNAME.value: "false",
        },
    )
    service = Service(
        "service",
        ServiceArgs(
            site=site,
            image=spec.app.image,
            workloads=(api, worker),
            secrets=secrets.secrets,
            secret_versions=secrets.versions,
            network=network.vpc.id,
            subnet=network.subnet.id,
            topic=queue.topic,
            subscription=queue.subscription,
            dead_letter_topic=queue.dead_letter_topic,
            log_retention_days=spec.log_retention_days,
            cpu_target_percent=spec.app.autoscaling.cpu_target_percent,
        ),
        opts,
    )

    lb = LoadBalancer(
        "load-balancer",
        LoadBalancerArgs(
            site=site,
            host_names=spec.domain.host_names,
            api=service.api,
            cloud_armor=spec.cloud_armor,
            rate_limit_per_minute=spec.rate_limit_per_minute,
        ),
        opts,
    )

    Alarms(
        "alarms",
        AlarmsArgs(
            site=site,
            https_forwarding_rule=lb.https_rule.name,
            api_service=service.api.name,
            dead_letter_subscription=queue.dead_letter_subscription.name,
            cache_instance=cache.instance.id,
            alert_email=spec.alert_email,
        ),
        opts,
    )

    return {
        "target": spec.target.value,
        "environment": spec.environment.value,
        "site": site.name,
        "endpoint": f"https://{spec.domain.name}",
        "endpointHost": spec.domain.name,
        # The global forwarding rules' one anycast address.
        "endpointAddresses": [lb.ip_address],
        "hostNames": spec.domain.host_names,
        "healthCheckPath": contract.READINESS_PATH,
        "region": site.region,
        "project": site.project,
        "apiServiceName": service.api.name,
        "workerServiceName": service.services["worker"].name,
        "ipAddress": lb.ip_address,
        # CNAMEs that prove control of each name to Certificate Manager (name, type, data): the
        # edge stack creates them in its Route 53 zone; the certificate is issued once they resolve.
        "dnsAuthorizations": lb.dns_authorizations,
        "taskTopic": queue.topic.name,
        "deadLetterSubscription": queue.dead_letter_subscription.name,
    }
