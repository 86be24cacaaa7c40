# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""Cluster add-ons: a log shipper (DaemonSet reading the nodes' logs), a nightly backup CronJob,
an operator with its ServiceAccount and RBAC, and a metrics Service. `hardened` picks the
careful settings; the others are planted violations (planted.yaml)."""

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
hardened = config.require_bool("hardened")
NS = "platform"
labels = {
    "app.kubernetes.io/part-of": "platform",
    "owner": "sre",
    "environment": "prod",
    "cost-center": "cc-2",
}


def pick(good, bad):
    return good if hardened else bad


def meta(name, namespace=NS):
    return {"name": name, "namespace": namespace, "labels": {**labels, "app.kubernetes.io/name": name}}


def container_context(**overrides):
    base = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "capabilities": {"drop": ["ALL"]},
    }
    return {**base, **overrides}


def pod(name, containers, **spec):
    return {
        "metadata": {"labels": {**labels, "app.kubernetes.io/name": name}},
        "spec": {
            "serviceAccountName": name,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": containers,
            **spec,
        },
    }


k8s.core.v1.Namespace("platform", metadata={"name": NS, "labels": labels})
k8s.core.v1.ServiceAccount(
    "default-sa",
    metadata={"name": "default", "namespace": NS, "labels": labels},
    automount_service_account_token=False,
)
for name in ("log-shipper", "backup", "operator"):
    k8s.core.v1.ServiceAccount(name, metadata=meta(name), automount_service_account_token=name == "operator")
k8s.networking.v1.NetworkPolicy(
    "default-deny",
    metadata=meta("default-deny"),
    spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
)

shipper = {
    "name": "fluent-bit",
    "image": "cr.fluentbit.io/fluent/fluent-bit:3.1.9",
    "securityContext": container_context(
        runAsUser=0, runAsNonRoot=False, capabilities={"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    )
    if not hardened
    else container_context(),  # planted: root with an added capability
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
    "ports": [
        pick(
            {"containerPort": 2020, "name": "metrics"},
            {"containerPort": 2020, "hostPort": 2020, "name": "metrics"},
        )
    ],  # planted: host port
    "livenessProbe": {"httpGet": {"path": "/", "port": 2020}},
    "readinessProbe": {"httpGet": {"path": "/api/v1/health", "port": 2020}},
    "volumeMounts": [{"name": "varlog", "mountPath": "/var/log", "readOnly": True}],
}
k8s.apps.v1.DaemonSet(
    "log-shipper",
    metadata=meta("log-shipper"),
    spec={
        "selector": {"matchLabels": {"app.kubernetes.io/name": "log-shipper"}},
        "template": pod(
            "log-shipper",
            [shipper],
            volumes=[{"name": "varlog", "hostPath": {"path": "/var/log"}}],  # read-only log directory
            hostPID=pick(False, True),  # planted: the node's process namespace
            automountServiceAccountToken=False,
        ),
    },
)

backup = {
    "name": "backup",
    "image": "ghcr.io/acme/pg-backup@sha256:" + "e" * 64,
    "args": ["--bucket", "gs://acme-backups", "--compress"],
    "securityContext": container_context(allowPrivilegeEscalation=pick(False, True)),  # planted
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
}
k8s.batch.v1.CronJob(
    "nightly-backup",
    metadata=meta("nightly-backup"),
    spec={
        "schedule": "30 2 * * *",
        "concurrencyPolicy": "Forbid",
        "jobTemplate": {
            "spec": {
                "backoffLimit": 2,
                "template": pod(
                    "backup",
                    [backup],
                    restartPolicy="OnFailure",
                    automountServiceAccountToken=False,
                    volumes=[{"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}}],
                ),
            }
        },
    },
)

# The operator watches its custom resources and manages Deployments and Services.
rules = [
    {
        "apiGroups": ["platform.acme.io"],
        "resources": ["backups", "backups/status"],
        "verbs": ["get", "list", "watch", "update", "patch"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services", "configmaps"],
        "verbs": ["get", "list", "watch", "create", "update"],
    },
    pick(
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["operator-webhook-tls"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
    ),  # planted
]
if not hardened:
    rules.append({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})  # planted: wildcard grant
    rules.append({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]})  # planted: exec
k8s.rbac.v1.ClusterRole("operator", metadata={"name": "platform-operator", "labels": labels}, rules=rules)
k8s.rbac.v1.ClusterRoleBinding(
    "operator",
    metadata={"name": "platform-operator", "labels": labels},
    # planted: the operator is a cluster administrator
    role_ref={
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": pick("platform-operator", "cluster-admin"),
    },
    subjects=[{"kind": "ServiceAccount", "name": "operator", "namespace": NS}],
)
k8s.rbac.v1.RoleBinding(
    "operator-view",
    metadata=meta("operator-view"),
    role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
    # planted: every pod without its own account gets the role
    subjects=[{"kind": "ServiceAccount", "name": pick("operator", "default"), "namespace": NS}],
)
k8s.apps.v1.Deployment(
    "operator",
    metadata=meta("operator"),
    spec={
        "replicas": 2,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "operator"}},
        "template": pod(
            "operator",
            [
                {
                    "name": "operator",
                    "image": "ghcr.io/acme/platform-operator:1.8.2",
                    "securityContext": container_context(),
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "ports": [
                        {"containerPort": 9443, "name": "webhook"},
                        {"containerPort": 8080, "name": "metrics"},
                    ],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8081}},
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8081}},
                }
            ],
        ),
    },
)
k8s.networking.v1.NetworkPolicy(
    "operator-webhook",
    metadata=meta("operator-webhook"),
    spec={
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "operator"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": 9443}]}],
    },
)
metrics_spec = {
    "selector": {"app.kubernetes.io/name": "operator"},
    "ports": [{"name": "metrics", "port": 8080}],
}
if not hardened:
    metrics_spec.update(type="NodePort", externalIPs=["198.51.100.7"])  # planted: node port and external IP
k8s.core.v1.Service("operator-metrics", metadata=meta("operator-metrics"), spec=metrics_spec)
