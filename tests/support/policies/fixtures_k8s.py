"""Kubernetes objects of the compliant baseline beyond the Skyfleet site (RBAC, a service
account), and the one-property flips that break the workload, Service, Ingress and RBAC rules."""

from __future__ import annotations

from skyfleet.plan import PlannedResource
from tests.support.policies.kit import DELETE, K8S_LABELS, C, Flip, P, append, chain, res, setp


def _meta(name: str) -> dict[str, object]:
    return {"name": name, "namespace": "agents", "labels": K8S_LABELS}


def extra() -> list[PlannedResource]:
    return [
        res(
            "kubernetes:core/v1:ServiceAccount",
            "api-sa",
            {"metadata": _meta("api"), "automountServiceAccountToken": False},
        ),
        res(
            "kubernetes:core/v1:Secret",
            "cache-auth",
            {"metadata": _meta("cache-auth"), "stringData": {"password": "t7Vq2mZx9LpR4wNc8bJ1sKd6"}},
        ),
        res(
            "kubernetes:rbac.authorization.k8s.io/v1:Role",
            "api-config-reader",
            {
                "metadata": _meta("api-config-reader"),
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "verbs": ["get", "watch"],
                        "resourceNames": ["agent-settings"],
                    },
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "verbs": ["get"],
                        "resourceNames": ["agent-tls"],
                    },
                ],
            },
        ),
        res(
            "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
            "api-config-reader-binding",
            {
                "metadata": _meta("api-config-reader"),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "api-config-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "config-reader", "namespace": "agents"}],
            },
        ),
    ]


HOST_SOCKET = {"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}

# (rule, resource, flip, label)
CASES: list[tuple[str, str, Flip, str]] = [
    ("k8s-no-host-path", "api", append(f"{P}.volumes", HOST_SOCKET), "docker socket"),
    ("k8s-no-host-path", "api", append(f"{P}.volumes", {"name": "etc", "hostPath": {"path": "/etc"}}), "etc"),
    ("k8s-no-host-port", "api", setp(f"{C}.ports", [{"containerPort": 8080, "hostPort": 8080}]), "host port"),
    (
        "k8s-pod-security-baseline",
        "api",
        setp(f"{P}.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "65536"}]),
        "sysctl",
    ),
    ("k8s-pod-security-baseline", "api", setp(f"{C}.securityContext.procMount", "Unmasked"), "proc"),
    ("k8s-resource-requests", "api", setp(f"{C}.resources", {}), "no requests"),
    ("k8s-resource-limits", "redis", setp(f"{C}.resources.limits", {"memory": "1Gi"}), "no cpu limit"),
    (
        "k8s-drop-all-capabilities",
        "api",
        setp(f"{C}.securityContext.capabilities.add", ["SYS_ADMIN"]),
        "sys_admin",
    ),
    (
        "k8s-no-literal-secrets-in-env",
        "api",
        append(f"{C}.env", {"name": "DATABASE_URL", "value": "postgres://app:pa55w0rd@db:5432/app"}),
        "url password",
    ),
    (
        "k8s-no-literal-secrets-in-env",
        "api",
        setp(f"{C}.args", ["--token=ghp_" + "A1b2C3d4E5f6" * 3]),
        "args",
    ),
    ("k8s-no-secrets-in-configmap", "tasks-dlq-stream", setp("data.NATS_TOKEN", "s3cr3t-t0ken"), "token"),
    ("database-password-strength", "cache-auth", setp("stringData.password", "Adm1n!2024-Pass"), "secret"),
    ("k8s-service-not-exposed", "api-svc", setp("spec.type", "NodePort"), "node port"),
    (
        "k8s-service-not-exposed",
        "api-svc",
        chain(setp("spec.type", "LoadBalancer"), setp("spec.ports", [{"port": 5432}])),
        "public db port",
    ),
    ("k8s-no-external-ips", "api-svc", setp("spec.externalIPs", ["203.0.113.10"]), "external ip"),
    ("k8s-ingress-tls", "api-ingress", setp("spec.tls", DELETE), "no tls"),
    ("k8s-ingress-tls", "api-ingress", setp("spec.rules", [{"host": "admin.example.com"}]), "host uncovered"),
    (
        "k8s-ingress-no-snippets",
        "api-ingress",
        setp(
            "metadata.annotations",
            {"nginx.ingress.kubernetes.io/server-snippet": "location /x { return 200; }"},
        ),
        "snippet",
    ),
    ("k8s-rbac-no-wildcards", "api-config-reader", setp("rules.0.verbs", ["*"]), "verbs"),
    (
        "k8s-rbac-no-escalation",
        "api-config-reader",
        setp("rules.0", {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}),
        "exec",
    ),
    ("k8s-rbac-no-secret-read", "api-config-reader", setp("rules.1.resourceNames", DELETE), "all secrets"),
    (
        "k8s-rbac-no-admin-binding",
        "api-config-reader-binding",
        setp("roleRef", {"kind": "ClusterRole", "name": "cluster-admin"}),
        "admin",
    ),
    (
        "k8s-default-service-account",
        "api-config-reader-binding",
        setp("subjects.0.name", "default"),
        "default sa",
    ),
    (
        "k8s-workload-network-policy",
        "default-deny",
        setp("spec.podSelector", {"matchLabels": {"app": "none"}}),
        "unselected",
    ),
    ("k8s-no-service-account-token", "api-sa", setp("automountServiceAccountToken", True), "sa token"),
]
