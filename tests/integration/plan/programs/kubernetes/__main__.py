"""Manifest files (v1 and v2 ConfigFile: expanded offline), a manifest at a URL, a Helm v3
chart and a Helm v4 chart (downloaded or rendered at deployment, so not expanded offline) and
a Service whose load-balancer address the program exports."""

import pulumi
import pulumi_kubernetes as k8s

namespace = pulumi.Config().require("namespace")

app = k8s.yaml.ConfigFile("app", file="manifests/app.yaml")
workers = k8s.yaml.v2.ConfigFile("workers", file="manifests/workers.yaml")
# A manifest the SDK would download at deployment: never fetched offline, reported instead.
crds = k8s.yaml.ConfigFile("crds", file="https://manifests.example.invalid/crds.yaml")
ingress = k8s.helm.v3.Chart(
    "ingress",
    k8s.helm.v3.ChartOpts(
        chart="ingress-nginx",
        version="4.10.0",
        namespace=namespace,
        fetch_opts=k8s.helm.v3.FetchOpts(repo="https://kubernetes.github.io/ingress-nginx"),
    ),
)
metrics = k8s.helm.v4.Chart(
    "metrics",
    chart="oci://registry-1.docker.io/bitnamicharts/metrics-server",
    namespace=namespace,
)
front = k8s.core.v1.Service(
    "front",
    metadata={"namespace": namespace, "labels": {"app": "front"}},
    spec={
        "type": "LoadBalancer",
        "selector": {"app": "front"},
        "ports": [{"port": 443, "target_port": 8443}],
    },
)

pulumi.export("frontIp", front.status.load_balancer.ingress[0].ip)
pulumi.export("workerObjects", workers.resources.apply(lambda objects: len(objects or [])))
pulumi.export("cartReplicas", app.get_resource("apps/v1/Deployment", "cart", "shop").spec.replicas)
