# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""A web shop on Kubernetes: a storefront Deployment behind an Ingress, Postgres in a
StatefulSet, settings in a ConfigMap, credentials in a Secret, and network policies. Objects
without a namespace land in the provider's namespace. `hardened` picks the careful settings; the
others are planted violations (planted.yaml)."""

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
hardened = config.require_bool("hardened")
NS = "shop"
labels = {"app.kubernetes.io/part-of": "shop", "owner": "web", "environment": "prod", "cost-center": "cc-21"}


def pick(good, bad):
    return good if hardened else bad


provider = k8s.Provider("cluster", namespace=NS)
opts = pulumi.ResourceOptions(provider=provider)
k8s.core.v1.Namespace(
    "shop",
    metadata={"name": NS, "labels": {**labels, "pod-security.kubernetes.io/enforce": "restricted"}},
    opts=opts,
)


def meta(name, **extra):
    return {"name": name, "labels": {**labels, "app.kubernetes.io/name": name}, **extra}


def secure_context(uid):
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "capabilities": {"drop": ["ALL"]},
    }


k8s.core.v1.ConfigMap(
    "storefront-settings",
    metadata=meta("storefront-settings"),
    data={
        "LOG_LEVEL": "info",
        "SESSION_TTL_SECONDS": "1800",
        "PAYMENT_PROVIDER": "stripe",
        # planted: the database URL, password included, in a ConfigMap
        "DATABASE_URL": pick(
            "postgres://storefront@postgres.shop.svc:5432/shop?sslmode=require",
            "postgres://storefront:S3cure-Passw0rd@postgres.shop.svc:5432/shop",
        ),
    },
    opts=opts,
)
k8s.core.v1.Secret(
    "db-credentials",
    metadata=meta("db-credentials"),
    string_data={"password": config.require_secret("dbPassword")},
    opts=opts,
)
k8s.core.v1.ServiceAccount(
    "storefront", metadata=meta("storefront"), automount_service_account_token=False, opts=opts
)

storefront_container = {
    "name": "storefront",
    "image": pick("ghcr.io/acme/storefront@sha256:" + "d" * 64, "ghcr.io/acme/storefront:latest"),  # planted
    "ports": [{"containerPort": 8080, "name": "http"}],
    "envFrom": [{"configMapRef": {"name": "storefront-settings"}}],
    "env": [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}},
        # planted: a live API key as a literal
        pick(
            {"name": "PAYMENT_API_KEY", "valueFrom": {"secretKeyRef": {"name": "payment", "key": "api-key"}}},
            {"name": "PAYMENT_API_KEY", "value": "sk_live_51NzQkL2eZvKYlo2C8rX4tP0"},
        ),
    ],
    "securityContext": pick(
        secure_context(10001), {**secure_context(10001), "privileged": True, "allowPrivilegeEscalation": True}
    ),  # planted
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
}
volumes = [{"name": "tmp", "emptyDir": {}}]
if not hardened:
    storefront_container["volumeMounts"].append({"name": "docker", "mountPath": "/var/run/docker.sock"})
    volumes.append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})  # planted
k8s.apps.v1.Deployment(
    "storefront",
    metadata=meta("storefront"),
    spec={
        "replicas": 3,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "storefront"}},
        "template": {
            "metadata": {"labels": {**labels, "app.kubernetes.io/name": "storefront"}},
            "spec": {
                "serviceAccountName": "storefront",
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True},
                "hostNetwork": pick(False, True),  # planted: the node's network namespace
                "containers": [storefront_container],
                "volumes": volumes,
            },
        },
    },
    opts=opts,
)
k8s.policy.v1.PodDisruptionBudget(
    "storefront",
    metadata=meta("storefront"),
    spec={"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "storefront"}}},
    opts=opts,
)

postgres_context = (
    secure_context(999) if hardened else {**secure_context(999), "runAsUser": 0, "runAsNonRoot": False}
)  # planted: root
k8s.apps.v1.StatefulSet(
    "postgres",
    metadata=meta("postgres"),
    spec={
        "serviceName": "postgres",
        "replicas": 2,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}},
        "template": {
            "metadata": {"labels": {**labels, "app.kubernetes.io/name": "postgres"}},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 999},
                "containers": [
                    {
                        "name": "postgres",
                        "image": "docker.io/library/postgres:16.4",
                        "ports": [{"containerPort": 5432}],
                        "env": [
                            {
                                "name": "POSTGRES_PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}},
                            },
                            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                        ],
                        "securityContext": postgres_context,
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "1Gi"},
                            "limits": {"cpu": "2", "memory": "2Gi"},
                        },
                        "livenessProbe": {"exec": {"command": ["pg_isready"]}},
                        "readinessProbe": {"exec": {"command": ["pg_isready"]}},
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
                            {"name": "run", "mountPath": "/var/run/postgresql"},
                        ],
                    }
                ],
                "volumes": [{"name": "run", "emptyDir": {}}],
            },
        },
        "volumeClaimTemplates": [
            {
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}},
            }
        ],
    },
    opts=opts,
)

k8s.core.v1.Service(
    "storefront",
    metadata=meta("storefront"),
    spec={
        "selector": {"app.kubernetes.io/name": "storefront"},
        "ports": [{"port": 80, "targetPort": "http"}],
    },
    opts=opts,
)
k8s.core.v1.Service(
    "postgres",
    metadata=meta("postgres"),
    spec=pick(
        {"selector": {"app.kubernetes.io/name": "postgres"}, "ports": [{"port": 5432}], "clusterIP": "None"},
        # planted: the database on an internet-facing load balancer
        {
            "selector": {"app.kubernetes.io/name": "postgres"},
            "ports": [{"port": 5432}],
            "type": "LoadBalancer",
        },
    ),
    opts=opts,
)
ingress_spec = {
    "ingressClassName": "nginx",
    "rules": [
        {
            "host": "shop.example.com",
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "storefront", "port": {"number": 80}}},
                    }
                ]
            },
        }
    ],
}
if hardened:
    ingress_spec["tls"] = [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]  # planted: no TLS
k8s.networking.v1.Ingress(
    "storefront",
    metadata=meta("storefront", annotations={"cert-manager.io/cluster-issuer": "letsencrypt"}),
    spec=ingress_spec,
    opts=opts,
)

if hardened:  # planted: no network policies at all
    k8s.networking.v1.NetworkPolicy(
        "default-deny",
        metadata=meta("default-deny"),
        spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        opts=opts,
    )
    k8s.networking.v1.NetworkPolicy(
        "storefront-from-ingress",
        metadata=meta("storefront-from-ingress"),
        spec={
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "storefront"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                            }
                        }
                    ],
                    "ports": [{"port": 8080}],
                }
            ],
        },
        opts=opts,
    )
    k8s.networking.v1.NetworkPolicy(
        "postgres-from-storefront",
        metadata=meta("postgres-from-storefront"),
        spec={
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "storefront"}}}],
                    "ports": [{"port": 5432}],
                }
            ],
        },
        opts=opts,
    )
