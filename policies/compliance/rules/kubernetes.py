"""Kubernetes workloads (Pods and the pod templates of Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs and CronJobs), PDBs, namespaces and network policies. The pod checks follow
the Pod Security Standards "restricted" profile and the CIS Kubernetes Benchmark section 5."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._docs import looks_secret
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, truthy

POD = "kubernetes:core/v1:Pod"
TEMPLATED = (
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:apps/v1:ReplicaSet",
    "kubernetes:batch/v1:Job",
)
CRONJOB = "kubernetes:batch/v1:CronJob"
WORKLOADS = (POD, *TEMPLATED, CRONJOB)
SCALABLE = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
PDB = ("kubernetes:policy/v1:PodDisruptionBudget",)
HPA = ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler",)
NAMESPACE = ("kubernetes:core/v1:Namespace",)
NETPOL = ("kubernetes:networking.k8s.io/v1:NetworkPolicy",)
NAMESPACED = (
    *WORKLOADS,
    *PDB,
    *HPA,
    *NETPOL,
    "kubernetes:core/v1:Service",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:ServiceAccount",
    "kubernetes:core/v1:PersistentVolumeClaim",
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:rbac.authorization.k8s.io/v1:Role",
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
)
CACHE_IMAGES = ("redis", "valkey")


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if resource_type == POD:
        return get_path(props, "spec")
    if resource_type == CRONJOB:
        return get_path(props, "spec", "jobTemplate", "spec", "template", "spec")
    return get_path(props, "spec", "template", "spec")


def pod_labels(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any]:
    if resource_type == POD:
        return get_path(props, "metadata", "labels") or {}
    return get_path(props, "spec", "template", "metadata", "labels") or {}


def containers(spec: Mapping[str, Any] | None, init: bool = True) -> list[Mapping[str, Any]]:
    if spec is None:
        return []
    found = as_list(spec.get("containers"))
    return found + as_list(spec.get("initContainers")) if init else found


PodCheck = Callable[[Mapping[str, Any]], Iterator[str]]
ContainerCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], Iterator[str]]


def pod_rule(check: PodCheck) -> Callable[[Subject], Iterator[str]]:
    def run(s: Subject) -> Iterator[str]:
        spec = pod_spec(s.type, s.props)
        if spec is not None:
            yield from check(spec)

    return run


def container_rule(check: ContainerCheck, init: bool = True) -> Callable[[Subject], Iterator[str]]:
    """Apply a check to every container; it gets the pod spec for pod-level defaults."""

    def run(s: Subject) -> Iterator[str]:
        spec = pod_spec(s.type, s.props)
        for c in containers(spec, init):
            for problem in check(c, spec or {}):
                yield f"container {c.get('name', '?')!r}: {problem}"

    return run


def _sc(c: Mapping[str, Any], key: str) -> Any:
    return get_path(c, "securityContext", key)


def _privileged(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    if truthy(_sc(c, "privileged")):
        yield "securityContext.privileged is true"


def _escalation(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    if _sc(c, "allowPrivilegeEscalation") is not False:
        yield "securityContext.allowPrivilegeEscalation must be false"


def _non_root(c: Mapping[str, Any], pod: Mapping[str, Any]) -> Iterator[str]:
    user = _sc(c, "runAsUser")
    user = user if user is not None else get_path(pod, "securityContext", "runAsUser")
    non_root = _sc(c, "runAsNonRoot")
    non_root = non_root if non_root is not None else get_path(pod, "securityContext", "runAsNonRoot")
    if user == 0:
        yield "runs as UID 0"
    elif non_root is not True and not (isinstance(user, int | float) and user > 0):
        yield "set runAsNonRoot: true (or a non-zero runAsUser)"


def _drop_all(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    drop = [str(x) for x in as_list(get_path(c, "securityContext", "capabilities", "drop"))]
    add = [str(x) for x in as_list(get_path(c, "securityContext", "capabilities", "add"))]
    if "ALL" not in drop:
        yield "securityContext.capabilities.drop must include ALL"
    extra = [a for a in add if a != "NET_BIND_SERVICE"]
    if extra:
        yield f"adds capabilities {', '.join(extra)}"


def _seccomp(c: Mapping[str, Any], pod: Mapping[str, Any]) -> Iterator[str]:
    kind = get_path(c, "securityContext", "seccompProfile", "type") or get_path(
        pod, "securityContext", "seccompProfile", "type"
    )
    if kind not in ("RuntimeDefault", "Localhost"):
        yield f"seccompProfile.type is {kind or 'unset'}; use RuntimeDefault"


def _readonly(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    if _sc(c, "readOnlyRootFilesystem") is not True:
        yield "securityContext.readOnlyRootFilesystem must be true (mount an emptyDir for scratch)"


def _host_namespaces(spec: Mapping[str, Any]) -> Iterator[str]:
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if truthy(spec.get(key)):
            yield f"{key} is true"


def _limits(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    limits = get_path(c, "resources", "limits") or {}
    missing = [k for k in ("cpu", "memory") if not limits.get(k)]
    if missing:
        yield f"no {' and '.join(missing)} limit"


def image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def _image(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    image = str(c.get("image") or "")
    if not image_pinned(image):
        yield f"image {image!r} is not pinned by digest or a non-latest tag"


def _token(spec: Mapping[str, Any]) -> Iterator[str]:
    if spec.get("automountServiceAccountToken") is not False:
        yield "automountServiceAccountToken must be false unless the pod calls the Kubernetes API"


def _env_secrets(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    for env in as_list(c.get("env")):
        name = str(get_path(env, "name") or "")
        if looks_secret(name) and get_path(env, "value"):
            yield f"env {name!r} holds a literal value; use valueFrom.secretKeyRef"


def _probes(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    missing = [p for p in ("livenessProbe", "readinessProbe") if not c.get(p)]
    if missing:
        yield f"no {' and '.join(missing)}"


def _namespace(s: Subject) -> Iterator[str]:
    ns = get_path(s.props, "metadata", "namespace")
    if not ns and s.provider is not None:
        ns = s.provider.props.get("namespace")
    if not ns or ns == "default":
        yield "the resource lands in the default namespace; set metadata.namespace to the app's namespace"


def _pdb(s: Subject) -> Iterator[str]:
    spec = s.props.get("spec") or {}
    max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
    if max_unavailable is None and min_available is None:
        yield "neither minAvailable nor maxUnavailable is set"
    if max_unavailable in (0, "0", "0%"):
        yield "maxUnavailable 0 blocks every voluntary disruption (node drains hang)"
    if min_available == "100%":
        yield "minAvailable 100% blocks every voluntary disruption (node drains hang)"


# -- stack rules --------------------------------------------------------------------------------


def namespace_of(r: PolicyResource) -> str:
    ns = get_path(r.props, "metadata", "namespace")
    if not ns and r.provider is not None:
        ns = r.provider.props.get("namespace")
    return str(ns or "default")


def _namespace_names(view: StackView) -> dict[str, str | None]:
    """namespace name -> URN of its Namespace resource (None when only workloads mention it)."""
    names: dict[str, str | None] = {}
    for r in view.of_type(*WORKLOADS):
        names.setdefault(namespace_of(r), None)
    for ns in view.of_type(*NAMESPACE):
        names[str(get_path(ns.props, "metadata", "name") or ns.name)] = ns.urn
    return names


def _namespace_netpol(view: StackView) -> Iterator[tuple[str, str | None]]:
    covered = {namespace_of(p) for p in view.of_type(*NETPOL)}
    for name, urn in sorted(_namespace_names(view).items()):
        if name not in covered:
            yield f"namespace {name!r} has no NetworkPolicy (add a default-deny policy)", urn


def _selects(policy: PolicyResource, labels: Mapping[str, Any]) -> bool:
    wanted = get_path(policy.props, "spec", "podSelector", "matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _cache_ingress(view: StackView) -> Iterator[tuple[str, str | None]]:
    for w in view.of_type(*WORKLOADS):
        images = [str(c.get("image") or "") for c in containers(pod_spec(w.resource_type, w.props), False)]
        if not any(any(k in i.rsplit("/", 1)[-1] for k in CACHE_IMAGES) for i in images):
            continue
        labels = pod_labels(w.resource_type, w.props)
        policies = [
            p
            for p in view.of_type(*NETPOL)
            if namespace_of(p) == namespace_of(w)
            and _selects(p, labels)
            and "Ingress" in as_list(get_path(p.props, "spec", "policyTypes") or ["Ingress"])
        ]
        if not policies:
            yield "no NetworkPolicy restricts ingress to the cache pods", w.urn
        for p in policies:
            for rule in as_list(get_path(p.props, "spec", "ingress")):
                peers = as_list(get_path(rule, "from"))
                if not peers:
                    yield f"NetworkPolicy {p.name!r} admits every source to the cache", p.urn
                elif any(get_path(peer, "ipBlock") or not get_path(peer, "podSelector") for peer in peers):
                    yield f"NetworkPolicy {p.name!r} admits the cache from outside the service's pods", p.urn


def _prod_replicas(view: StackView) -> Iterator[tuple[str, str | None]]:
    hpa_min: dict[str, Any] = {}
    for h in view.of_type(*HPA):
        target = get_path(h.props, "spec", "scaleTargetRef", "name")
        hpa_min[f"{namespace_of(h)}/{target}"] = get_path(h.props, "spec", "minReplicas") or 1
    for w in view.of_type(*SCALABLE):
        key = f"{namespace_of(w)}/{get_path(w.props, 'metadata', 'name') or w.name}"
        replicas = hpa_min.get(key, get_path(w.props, "spec", "replicas"))
        replicas = 1 if replicas is None else replicas
        if isinstance(replicas, int | float) and replicas < 2:
            source = "HPA minReplicas" if key in hpa_min else "spec.replicas"
            yield f"{w.name!r} runs {replicas:g} replica(s) ({source}); prod needs at least 2", w.urn


def _pss(cis: str) -> Controls:
    return Controls(cis=(f"K8s-{cis}",), nist=("AC-6", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",))


RULES = [
    Rule(
        "k8s-no-privileged",
        "Containers do not run privileged.",
        Severity.CRITICAL,
        _pss("5.2.2"),
        "Remove securityContext.privileged or set it to false.",
        WORKLOADS,
        container_rule(_privileged),
    ),
    Rule(
        "k8s-no-privilege-escalation",
        "Containers set allowPrivilegeEscalation: false.",
        Severity.HIGH,
        _pss("5.2.6"),
        "Set securityContext.allowPrivilegeEscalation: false on every container.",
        WORKLOADS,
        container_rule(_escalation),
    ),
    Rule(
        "k8s-run-as-non-root",
        "Containers run as a non-root user.",
        Severity.HIGH,
        _pss("5.2.7"),
        "Set securityContext.runAsNonRoot: true and a non-zero runAsUser (pod or container level).",
        WORKLOADS,
        container_rule(_non_root),
    ),
    Rule(
        "k8s-drop-all-capabilities",
        "Containers drop ALL capabilities (adding back NET_BIND_SERVICE at most).",
        Severity.MEDIUM,
        _pss("5.2.9"),
        "Set securityContext.capabilities.drop: [ALL].",
        WORKLOADS,
        container_rule(_drop_all),
    ),
    Rule(
        "k8s-seccomp-runtime-default",
        "Containers use the RuntimeDefault seccomp profile.",
        Severity.MEDIUM,
        _pss("5.7.2"),
        "Set securityContext.seccompProfile.type: RuntimeDefault on the pod.",
        WORKLOADS,
        container_rule(_seccomp),
    ),
    Rule(
        "k8s-readonly-root-filesystem",
        "Containers have a read-only root filesystem.",
        Severity.MEDIUM,
        Controls(nist=("CM-7", "SI-7"), soc2=("CC6.8",)),
        "Set securityContext.readOnlyRootFilesystem: true and mount emptyDir volumes for writable paths.",
        WORKLOADS,
        container_rule(_readonly),
    ),
    Rule(
        "k8s-no-host-namespaces",
        "Pods do not share the host's network, PID or IPC namespaces.",
        Severity.HIGH,
        Controls(
            cis=("K8s-5.2.3", "K8s-5.2.4", "K8s-5.2.5"),
            nist=("SC-7", "AC-6"),
            soc2=("CC6.1",),
            pci=("2.2.1",),
        ),
        "Remove hostNetwork, hostPID and hostIPC from the pod spec.",
        WORKLOADS,
        pod_rule(_host_namespaces),
    ),
    Rule(
        "k8s-resource-limits",
        "Containers have CPU and memory limits.",
        Severity.MEDIUM,
        Controls(nist=("SC-6", "SC-5"), soc2=("A1.1",)),
        "Set resources.limits.cpu and resources.limits.memory (and requests) on every container.",
        WORKLOADS,
        container_rule(_limits),
    ),
    Rule(
        "k8s-image-pinned",
        "Container images are pinned by digest or a non-latest tag.",
        Severity.MEDIUM,
        Controls(nist=("CM-2", "SI-7"), soc2=("CC8.1",), pci=("6.3.2",)),
        "Reference images as repo@sha256:<digest> (built by CI) or an immutable version tag.",
        WORKLOADS,
        container_rule(_image),
    ),
    Rule(
        "k8s-no-service-account-token",
        "Pods do not automount a service account token unless they need it.",
        Severity.MEDIUM,
        Controls(cis=("K8s-5.1.6",), nist=("AC-6", "IA-5"), soc2=("CC6.1",)),
        "Set automountServiceAccountToken: false in the pod spec; exclude pods that call the API, with a "
        "justification.",
        WORKLOADS,
        pod_rule(_token),
    ),
    Rule(
        "k8s-no-literal-secrets-in-env",
        "Containers take credentials from Secrets, not literal env values.",
        Severity.HIGH,
        Controls(cis=("K8s-5.4.1",), nist=("IA-5(7)", "SC-28"), soc2=("CC6.1",), pci=("8.6.2",)),
        "Store the value in a Secret and use env[].valueFrom.secretKeyRef (or a mounted file).",
        WORKLOADS,
        container_rule(_env_secrets),
    ),
    Rule(
        "k8s-no-default-namespace",
        "Namespaced resources are not placed in the default namespace.",
        Severity.LOW,
        Controls(cis=("K8s-5.7.4",), nist=("SC-7", "AC-4"), soc2=("CC6.1",)),
        "Create a Namespace for the app and set metadata.namespace on every resource.",
        NAMESPACED,
        _namespace,
    ),
    Rule(
        "k8s-probes",
        "Containers have liveness and readiness probes.",
        Severity.LOW,
        Controls(nist=("SI-6", "CP-10"), soc2=("A1.2",)),
        "Add livenessProbe (/livez) and readinessProbe (/readyz) to every long-running container.",
        WORKLOADS,
        container_rule(_probes, init=False),
        enforcement=EnforcementLevel.ADVISORY,
    ),
    Rule(
        "k8s-pdb-allows-disruption",
        "PodDisruptionBudgets allow voluntary disruption.",
        Severity.MEDIUM,
        Controls(nist=("CP-10",), soc2=("A1.2",)),
        "Use maxUnavailable: 1 (or minAvailable below the replica count).",
        PDB,
        _pdb,
    ),
    Rule(
        "k8s-namespace-network-policy",
        "Every namespace the stack uses has a NetworkPolicy.",
        Severity.HIGH,
        Controls(cis=("K8s-5.3.2",), nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Add a default-deny NetworkPolicy (podSelector: {}, policyTypes [Ingress, Egress]) per namespace, "
        "then allow rules for the app's flows.",
        stack_check=_namespace_netpol,
    ),
    Rule(
        "k8s-cache-ingress-from-service",
        "Only the service's pods may reach the cache pods.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Add a NetworkPolicy selecting the cache pods whose ingress admits only the app's podSelector on "
        "the cache port.",
        stack_check=_cache_ingress,
    ),
    Rule(
        "k8s-prod-replicas",
        "Prod Deployments and StatefulSets run at least 2 replicas (or an HPA keeps them there).",
        Severity.MEDIUM,
        Controls(nist=("CP-10", "SC-36"), soc2=("A1.2",)),
        "Set spec.replicas >= 2, or an HPA with minReplicas >= 2, in prod.",
        stack_check=_prod_replicas,
        prod_only=True,
    ),
]
