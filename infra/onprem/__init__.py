"""The onprem site: the agent app on a Kubernetes cluster reached through a kubeconfig context.

Top to bottom: the provider for the spec's context, then the namespace and its policies, the
secrets, Redis and NATS JetStream (both TLS, with volumes), the api and worker, the Ingress and
the alarms. Data stores get their TLS certificates from the cluster's private CA issuer (clients
verify them against its CA); the Ingress from a publicly trusted issuer.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from agent_app import contract
from agent_app.contract import Env
from infra import workload
from infra.onprem.alarms import Alarms, AlarmsArgs
from infra.onprem.cache import Cache, CacheArgs
from infra.onprem.load_balancer import LoadBalancer, LoadBalancerArgs
from infra.onprem.network import Network, NetworkArgs
from infra.onprem.queue import DLQ_STREAM, STREAMS_USER, Queue, QueueArgs
from infra.onprem.secrets import Secrets, SecretsArgs
from infra.onprem.service import QUEUE_CA_FILE, REDIS_CA_FILE, Service, ServiceArgs
from infra.spec import Environment, OnpremStack


def deploy(spec: OnpremStack) -> dict[str, Any]:
    cluster, app = spec.cluster, spec.app
    prod = spec.environment is Environment.PROD

    # Every object goes to this cluster context; nothing relies on the ambient kubeconfig.
    provider = k8s.Provider(
        "onprem",
        context=cluster.context,
        kubeconfig=cluster.kubeconfig,
        enable_server_side_apply=True,
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    labels = spec.labels()

    model_backend = app.env.get(Env.MODEL_BACKEND.value, "offline")
    network = Network(
        "network",
        NetworkArgs(
            namespace=cluster.namespace,
            labels=labels,
            ingress_namespace=cluster.ingress_namespace,
            monitoring_namespace=cluster.monitoring_namespace,
            model_egress=model_backend != "offline",
            fleet_egress=spec.fleet is not None,
            protect=spec.deletion_protection,
        ),
        opts,
    )
    place = network.place

    # Generated passwords: Redis AUTH, and one per NATS user (each app role, the setup Job).
    nats_users = {user: f"nats-{user}" for user in ("api", "worker", STREAMS_USER)}
    secrets = Secrets(
        "secrets",
        SecretsArgs(
            place=place,
            values=workload.secret_values(spec),
            generated=(workload.REDIS_AUTH, *nats_users.values()),
        ),
        opts,
    )

    cache = Cache(
        "cache",
        CacheArgs(
            place=place,
            image=cluster.redis_image,
            ha=spec.cache.ha,
            size_gb=spec.cache.size_gb,
            issuer=cluster.internal_issuer,
            password=secrets.refs[workload.REDIS_AUTH],
            topology_key=cluster.topology_key,
            storage_class=cluster.storage_class,
            strict_hosts=prod,
            protect=spec.deletion_protection,
            depends_on=secrets.objects,
        ),
        opts,
    )

    queue = Queue(
        "queue",
        QueueArgs(
            place=place,
            users={user: secrets.refs[logical] for user, logical in nats_users.items()},
            image=cluster.nats_image,
            box_image=cluster.nats_box_image,
            exporter_image=cluster.nats_exporter_image,
            replicas=3 if prod else 1,
            storage_gb=cluster.queue_storage_gb,
            issuer=cluster.internal_issuer,
            max_delivery_attempts=spec.queue.max_delivery_attempts,
            retention_seconds=spec.queue.retention_seconds,
            dlq_retention_seconds=spec.queue.dlq_retention_seconds,
            topology_key=cluster.topology_key,
            storage_class=cluster.storage_class,
            strict_hosts=prod,
            protect=spec.deletion_protection,
        ),
        opts,
    )

    api, worker = workload.workloads(
        spec,
        redis_url=cache.url,
        queue_url=queue.urls["api"],
        # Each process as its own NATS user.
        role_env={role: {Env.QUEUE_URL.value: queue.urls[role]} for role in ("api", "worker")},
        role_secret_env={role: {Env.QUEUE_PASSWORD.value: nats_users[role]} for role in ("api", "worker")},
        api_keys_as_file=True,
        extra_env={
            Env.REDIS_CA_FILE.value: REDIS_CA_FILE,
            Env.QUEUE_CA_FILE.value: QUEUE_CA_FILE,
            # The primary is whichever pod the Sentinels elected (HA); the URL gives TLS and,
            # without Sentinels, the one pod's address.
            **(
                {
                    Env.REDIS_SENTINELS.value: ",".join(cache.sentinels),
                    Env.REDIS_SENTINEL_MASTER.value: cache.master_name,
                }
                if cache.sentinels
                else {}
            ),
        },
    )
    service = Service(
        "service",
        ServiceArgs(
            place=place,
            image=app.image,
            api=api,
            worker=worker,
            secrets=secrets.refs,
            redis_tls_secret=cache.tls_secret,
            queue_tls_secret=queue.tls_secret,
            cpu_target_percent=app.autoscaling.cpu_target_percent,
            topology_key=cluster.topology_key,
            log_forward=cluster.log_forward,
            strict_hosts=prod,
            depends_on=[*secrets.objects, cache.stateful_set, queue.job],
        ),
        opts,
    )

    lb = LoadBalancer(
        "load-balancer",
        LoadBalancerArgs(
            place=place,
            hosts=spec.domain.host_names,
            ingress_class=cluster.ingress_class,
            cert_issuer=cluster.ingress_issuer,
            service=service.service.metadata.apply(lambda m: m.name or "api"),
        ),
        opts,
    )

    Alarms(
        "alarms",
        AlarmsArgs(place=place, dlq_stream=DLQ_STREAM, monitoring_labels=cluster.monitoring_labels),
        opts,
    )

    return {
        "target": spec.target.value,
        "environment": spec.environment.value,
        "site": spec.site_name,
        "endpoint": lb.endpoint,
        "endpointHost": spec.domain.name,
        "endpointAddresses": lb.addresses,
        "hostNames": spec.domain.host_names,
        "healthCheckPath": contract.READINESS_PATH,
        "namespace": place.namespace_ref,
        "kubeContext": cluster.context,
        "apiDeployment": service.deployments["api"].metadata.apply(lambda m: m.name or "api"),
        "workerDeployment": service.deployments["worker"].metadata.apply(lambda m: m.name or "worker"),
        "ingressAddress": lb.address,
    }
