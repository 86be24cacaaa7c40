"""Kubernetes workloads (Pods and the pod templates of Deployments, StatefulSets, DaemonSets,
ReplicaSets, ReplicationControllers, Jobs and CronJobs), Services and Ingresses, RBAC, service
accounts, PDBs, namespaces and network policies. The pod checks follow the Pod Security
Standards ("baseline" and "restricted") and the CIS Kubernetes Benchmark section 5.

Settings made by another object count: a ServiceAccount with automountServiceAccountToken:
false covers the pods that use it, a namespace LimitRange gives containers default limits, a
NetworkPolicy selects pods by label.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._net import is_world
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, num, truthy
from ._secrets import secret_in_variable, secrets_in_text

POD = "kubernetes:core/v1:Pod"
TEMPLATED = (
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:apps/v1:ReplicaSet",
    "kubernetes:core/v1:ReplicationController",
    "kubernetes:batch/v1:Job",
)
CRONJOB = "kubernetes:batch/v1:CronJob"
WORKLOADS = (POD, *TEMPLATED, CRONJOB)
RUN_TO_COMPLETION = ("kubernetes:batch/v1:Job", CRONJOB)
SCALABLE = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
PDB = ("kubernetes:policy/v1:PodDisruptionBudget",)
HPA = ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler",)
NAMESPACE = ("kubernetes:core/v1:Namespace",)
NETPOL = ("kubernetes:networking.k8s.io/v1:NetworkPolicy",)
SERVICE = ("kubernetes:core/v1:Service",)
INGRESS = ("kubernetes:networking.k8s.io/v1:Ingress",)
CONFIGMAP = ("kubernetes:core/v1:ConfigMap",)
SERVICE_ACCOUNT = ("kubernetes:core/v1:ServiceAccount",)
LIMIT_RANGE = ("kubernetes:core/v1:LimitRange",)
ROLES = (
    "kubernetes:rbac.authorization.k8s.io/v1:Role",
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
)
BINDINGS = (
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
)
NAMESPACED = (
    *WORKLOADS,
    *PDB,
    *HPA,
    *NETPOL,
    *SERVICE,
    *CONFIGMAP,
    "kubernetes:core/v1:Secret",
    *SERVICE_ACCOUNT,
    *LIMIT_RANGE,
    "kubernetes:core/v1:PersistentVolumeClaim",
    *INGRESS,
    "kubernetes:rbac.authorization.k8s.io/v1:Role",
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
)
CACHE_IMAGES = ("redis", "valkey")
CACHE_PORT = 6379
CACHE_SERVERS = ("redis-server", "valkey-server")


def is_cache_container(c: Mapping[str, Any]) -> bool:
    """A container that runs Redis or Valkey: it serves its port, runs its server, or runs its
    image (the repository's own name, not a name that merely mentions it, as php-redis does)."""
    name = str(c.get("image") or "").rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0].lower()
    words = " ".join(str(x) for x in as_list(c.get("command")) + as_list(c.get("args")))
    ports = {get_path(p, "containerPort") for p in as_list(c.get("ports"))}
    return (
        name in CACHE_IMAGES
        or name.startswith(tuple(f"{i}-" for i in CACHE_IMAGES))
        or CACHE_PORT in ports
        or any(server in words for server in CACHE_SERVERS)
    )


def is_cache(resource_type: str, props: Mapping[str, Any]) -> bool:
    """Pods with a container that runs Redis or Valkey."""
    return any(is_cache_container(c) for c in containers(pod_spec(resource_type, props), False))


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if resource_type == POD:
        return get_path(props, "spec")
    if resource_type == CRONJOB:
        return get_path(props, "spec", "jobTemplate", "spec", "template", "spec")
    return get_path(props, "spec", "template", "spec")


def pod_meta(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any]:
    if resource_type == POD:
        return get_path(props, "metadata") or {}
    if resource_type == CRONJOB:
        return get_path(props, "spec", "jobTemplate", "spec", "template", "metadata") or {}
    return get_path(props, "spec", "template", "metadata") or {}


def pod_labels(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any]:
    return get_path(pod_meta(resource_type, props), "labels") or {}


def containers(spec: Mapping[str, Any] | None, init: bool = True) -> list[Mapping[str, Any]]:
    if spec is None:
        return []
    found = as_list(spec.get("containers"))
    return (
        found + as_list(spec.get("initContainers")) + as_list(spec.get("ephemeralContainers"))
        if init
        else found
    )


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
    drop = [str(x).upper() for x in as_list(get_path(c, "securityContext", "capabilities", "drop"))]
    add = [str(x).upper() for x in as_list(get_path(c, "securityContext", "capabilities", "add"))]
    if "ALL" not in drop:
        yield "securityContext.capabilities.drop must include ALL"
    extra = [a for a in add if a.removeprefix("CAP_") != "NET_BIND_SERVICE"]
    if extra:
        yield f"adds capabilities {', '.join(extra)} (allowed: NET_BIND_SERVICE)"


def _seccomp(c: Mapping[str, Any], pod: Mapping[str, Any]) -> Iterator[str]:
    kind = get_path(c, "securityContext", "seccompProfile", "type") or get_path(
        pod, "securityContext", "seccompProfile", "type"
    )
    if norm(kind) not in ("runtimedefault", "localhost"):
        yield f"seccompProfile.type is {kind or 'unset'}; allowed: RuntimeDefault, Localhost"


def _readonly(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    if _sc(c, "readOnlyRootFilesystem") is not True:
        yield "securityContext.readOnlyRootFilesystem must be true (mount an emptyDir for scratch)"


def _host_namespaces(spec: Mapping[str, Any]) -> Iterator[str]:
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if truthy(spec.get(key)):
            yield f"{key} is true"


# Host paths a log shipper may read (read-only) without reaching past the node's logs.
LOG_PATHS = ("/var/log", "/var/lib/docker/containers")
RUNTIME_SOCKETS = ("docker.sock", "containerd.sock", "crio.sock", "cri-dockerd.sock")


def _host_path(spec: Mapping[str, Any]) -> Iterator[str]:
    mounts: dict[str, list[bool]] = {}
    for c in containers(spec):
        for m in as_list(c.get("volumeMounts")):
            mounts.setdefault(str(get_path(m, "name")), []).append(truthy(get_path(m, "readOnly")))
    for volume in as_list(spec.get("volumes")):
        path = get_path(volume, "hostPath", "path")
        if path is None:
            continue
        path = str(path).rstrip("/") or "/"
        name = str(get_path(volume, "name"))
        if any(path.endswith(sock) for sock in RUNTIME_SOCKETS):
            yield f"volume {name!r} mounts the container runtime socket {path}: full control of the node"
        elif path.startswith(LOG_PATHS) and mounts.get(name) and all(mounts[name]):
            continue
        else:
            yield f"volume {name!r} mounts the node's {path} (hostPath)"


def _host_port(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    for port in as_list(c.get("ports")):
        host = get_path(port, "hostPort")
        if host not in (None, 0):
            yield f"binds hostPort {num(host)} on the node"


SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")


def _baseline(spec: Mapping[str, Any]) -> Iterator[str]:
    for sysctl in as_list(get_path(spec, "securityContext", "sysctls")):
        name = str(get_path(sysctl, "name"))
        if name not in SAFE_SYSCTLS:
            yield f"sets the unsafe sysctl {name}"
    contexts = [("pod", get_path(spec, "securityContext") or {})]
    contexts += [
        (f"container {c.get('name', '?')!r}", c.get("securityContext") or {}) for c in containers(spec)
    ]
    for where, sc in contexts:
        if norm(get_path(sc, "procMount")) not in ("", "default"):
            yield f"{where}: procMount {get_path(sc, 'procMount')} unmasks /proc"
        if norm(get_path(sc, "appArmorProfile", "type")) == "unconfined":
            yield f"{where}: AppArmor profile is Unconfined"
        selinux = get_path(sc, "seLinuxOptions") or {}
        if (
            norm(get_path(selinux, "type")) not in SELINUX_TYPES
            or get_path(selinux, "user")
            or get_path(selinux, "role")
        ):
            yield f"{where}: custom SELinux options {dict(selinux) if hasattr(selinux, 'keys') else selinux}"
        if truthy(get_path(sc, "windowsOptions", "hostProcess")):
            yield f"{where}: windowsOptions.hostProcess runs on the host"


def _limits(c: Mapping[str, Any], _pod: Mapping[str, Any], defaults: set[str] | None = None) -> Iterator[str]:
    limits = get_path(c, "resources", "limits") or {}
    missing = [k for k in ("cpu", "memory") if not limits.get(k) and k not in (defaults or set())]
    if missing:
        yield f"no {' and '.join(missing)} limit"


def _requests(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    resources = c.get("resources") or {}
    requests, limits = get_path(resources, "requests") or {}, get_path(resources, "limits") or {}
    # Kubernetes takes the limit as the request when only the limit is set.
    missing = [k for k in ("cpu", "memory") if not requests.get(k) and not limits.get(k)]
    if missing:
        yield f"no {' and '.join(missing)} request"


def image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1].lower() not in ("", "latest")


def _image(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    image = str(c.get("image") or "")
    if not image_pinned(image):
        yield f"image {image!r} is not pinned by digest or a non-latest tag"


def _env_secrets(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    for env in as_list(c.get("env")):
        name = str(get_path(env, "name") or "")
        what = secret_in_variable(name, get_path(env, "value"))
        if what is not None:
            yield f"env {name!r} holds {what}; use valueFrom.secretKeyRef (or a mounted Secret)"
    for arg in as_list(c.get("args")) + as_list(c.get("command")):
        for what in secrets_in_text(str(arg)):
            yield f"command/args contain {what}"


def _probes(c: Mapping[str, Any], _pod: Mapping[str, Any]) -> Iterator[str]:
    missing = [p for p in ("livenessProbe", "readinessProbe") if not c.get(p)]
    if missing:
        yield f"no {' and '.join(missing)}"


def _long_running(check: Callable[[Subject], Iterator[str]]) -> Callable[[Subject], Iterator[str]]:
    def run(s: Subject) -> Iterator[str]:
        if s.type not in RUN_TO_COMPLETION:
            yield from check(s)

    return run


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


# -- Services and Ingresses ---------------------------------------------------------------------

INTERNAL_LB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": ("true", "0.0.0.0/0"),
    "service.beta.kubernetes.io/aws-load-balancer-scheme": ("internal",),
    "networking.gke.io/load-balancer-type": ("internal",),
    "cloud.google.com/load-balancer-type": ("internal",),
    "service.beta.kubernetes.io/azure-load-balancer-internal": ("true",),
}
WEB_PORTS = (80, 443)


def _internal_lb(props: Mapping[str, Any]) -> bool:
    annotations = get_path(props, "metadata", "annotations") or {}
    return (
        any(norm(annotations.get(k)) in v for k, v in INTERNAL_LB_ANNOTATIONS.items())
        if hasattr(annotations, "get")
        else False
    )


def _service_exposure(s: Subject) -> Iterator[str]:
    spec = s.props.get("spec") or {}
    kind = norm(spec.get("type") or "ClusterIP")
    ports = as_list(spec.get("ports"))
    if kind == "nodeport":
        opened = ", ".join(num(get_path(p, "nodePort") or get_path(p, "port")) for p in ports) or "a port"
        yield (
            f"type NodePort opens {opened} on every node; expose through an Ingress or an internal "
            "load balancer"
        )
    elif kind == "loadbalancer" and not _internal_lb(s.props):
        ranges = [str(r) for r in as_list(spec.get("loadBalancerSourceRanges"))]
        if ranges and not any(is_world(r) for r in ranges):
            return
        other = [num(get_path(p, "port")) for p in ports if get_path(p, "port") not in WEB_PORTS]
        if other:
            yield (
                f"an internet-facing LoadBalancer exposes port(s) {', '.join(other)}; only 80/443 "
                "may face the "
                "internet (add loadBalancerSourceRanges or the internal load balancer annotation)"
            )


def _external_ips(s: Subject) -> Iterator[str]:
    ips = as_list(get_path(s.props, "spec", "externalIPs"))
    if ips:
        yield (
            f"spec.externalIPs {', '.join(str(i) for i in ips)} can intercept traffic for those "
            "addresses (CVE-2020-8554)"
        )


def _ingress_tls(s: Subject) -> Iterator[str]:
    spec = s.props.get("spec") or {}
    if not as_list(spec.get("tls")):
        yield "the Ingress has no spec.tls: it serves plain HTTP"
        return
    covered = {str(h) for t in as_list(spec.get("tls")) for h in as_list(get_path(t, "hosts"))}
    for rule in as_list(spec.get("rules")):
        host = get_path(rule, "host")
        if (
            host
            and covered
            and str(host) not in covered
            and not any(c.startswith("*.") and str(host).endswith(c[1:]) for c in covered)
        ):
            yield f"host {host!r} is not covered by spec.tls"


SNIPPET_ANNOTATIONS = ("-snippet",)


def _ingress_snippets(s: Subject) -> Iterator[str]:
    annotations = get_path(s.props, "metadata", "annotations") or {}
    for key in annotations if hasattr(annotations, "keys") else []:
        if str(key).startswith("nginx.ingress.kubernetes.io/") and str(key).endswith(SNIPPET_ANNOTATIONS):
            yield f"annotation {key} injects raw NGINX configuration (CVE-2021-25742)"


# -- RBAC -----------------------------------------------------------------------------------------

# (verbs, resources) that let a subject gain more than it was granted.
ESCALATION = (
    (("bind", "escalate", "impersonate"), ("*",)),
    (("create", "*"), ("pods/exec", "pods/attach", "nodes/proxy", "serviceaccounts/token")),
    (("get", "*"), ("nodes/proxy",)),
    (("update", "patch", "*"), ("services/status",)),
    (
        ("create", "update", "patch", "*"),
        ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"),
    ),
    (("update", "patch", "*"), ("certificatesigningrequests/approval",)),
    (("approve", "*"), ("signers",)),
)


def _role_rules(s: Subject) -> Iterator[tuple[set[str], set[str], list[str]]]:
    for rule in as_list(s.props.get("rules")):
        verbs = {norm(v) for v in as_list(get_path(rule, "verbs"))}
        resources = {norm(r) for r in as_list(get_path(rule, "resources"))}
        names = [str(n) for n in as_list(get_path(rule, "resourceNames"))]
        yield verbs, resources, names


def _rbac_wildcards(s: Subject) -> Iterator[str]:
    for verbs, resources, _ in _role_rules(s):
        if "*" in verbs:
            yield f"grants every verb ('*') on {', '.join(sorted(resources)) or 'resources'}"
        if "*" in resources:
            yield f"grants {', '.join(sorted(verbs))} on every resource ('*')"


def _rbac_escalation(s: Subject) -> Iterator[str]:
    for verbs, resources, _ in _role_rules(s):
        if "*" in verbs:
            continue  # reported by k8s-rbac-no-wildcards
        for wanted_verbs, wanted_resources in ESCALATION:
            hit_verbs = verbs & set(wanted_verbs)
            hit_resources = resources if "*" in wanted_resources else resources & {*wanted_resources, "*"}
            if hit_verbs and hit_resources:
                yield (
                    f"grants {', '.join(sorted(hit_verbs))} on {', '.join(sorted(hit_resources))}: a path to "
                    "more privilege"
                )


def _rbac_secrets(s: Subject) -> Iterator[str]:
    for verbs, resources, names in _role_rules(s):
        if names or not (resources & {"secrets", "*"}):
            continue
        reads = verbs & {"get", "list", "watch", "*"}
        if reads:
            scope = "in every namespace" if s.type.endswith("ClusterRole") else "in its namespace"
            yield f"can {', '.join(sorted(reads))} every Secret {scope}; name the secrets in resourceNames"


PUBLIC_GROUPS = ("system:anonymous", "system:unauthenticated", "system:authenticated")


def _rbac_bindings(s: Subject) -> Iterator[str]:
    role = get_path(s.props, "roleRef", "name")
    for subject in as_list(s.props.get("subjects")):
        name = str(get_path(subject, "name"))
        kind = str(get_path(subject, "kind"))
        if name in PUBLIC_GROUPS:
            yield f"binds {role} to {name}: every caller of the API server"
        elif role == "cluster-admin":
            yield f"binds cluster-admin to {kind} {name!r}"


def _default_sa(s: Subject) -> Iterator[str]:
    if s.type in SERVICE_ACCOUNT:
        if (
            get_path(s.props, "metadata", "name") == "default"
            and s.props.get("automountServiceAccountToken") is not False
        ):
            yield "the default service account mounts its token into every pod that does not name another"
        return
    for subject in as_list(s.props.get("subjects")):
        if norm(get_path(subject, "kind")) == "serviceaccount" and get_path(subject, "name") == "default":
            yield (
                f"binds {get_path(s.props, 'roleRef', 'name')} to the default service account: every "
                "pod gets it"
            )


def _configmap_secrets(s: Subject) -> Iterator[str]:
    data = s.props.get("data") or {}
    for key in data if hasattr(data, "keys") else []:
        value = data[key]
        what = secret_in_variable(str(key), value)
        if what is None and isinstance(value, str) and "\n" in value:
            what = next(iter(secrets_in_text(value)), None)
        if what is not None:
            yield f"data[{key!r}] holds {what}; put it in a Secret"


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


def selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    for k, v in (get_path(selector, "matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in as_list(get_path(selector, "matchExpressions")):
        key, op = str(get_path(expr, "key")), norm(get_path(expr, "operator"))
        values = [str(v) for v in as_list(get_path(expr, "values"))]
        present = key in labels
        if (
            (op == "in" and str(labels.get(key)) not in values)
            or (op == "notin" and present and str(labels.get(key)) in values)
            or (op == "exists" and not present)
            or (op == "doesnotexist" and present)
        ):
            return False
    return True


def ingress_policies(view: StackView, w: PolicyResource) -> list[PolicyResource]:
    labels = pod_labels(w.resource_type, w.props)
    return [
        p
        for p in view.of_type(*NETPOL)
        if namespace_of(p) == namespace_of(w)
        and selects(get_path(p.props, "spec", "podSelector"), labels)
        and "Ingress" in as_list(get_path(p.props, "spec", "policyTypes") or ["Ingress"])
    ]


def _workload_netpol(view: StackView) -> Iterator[tuple[str, str | None]]:
    for w in view.of_type(*WORKLOADS):
        if not ingress_policies(view, w):
            yield f"no NetworkPolicy restricts ingress to the pods of {w.name!r}", w.urn


def _name_of(r: PolicyResource) -> str:
    return str(get_path(r.props, "metadata", "name") or r.name)


def _config_map_data(view: StackView, name: Any, namespace: str) -> Mapping[str, Any]:
    for cm in view.of_type(*CONFIGMAP):
        if namespace_of(cm) == namespace and _name_of(cm) == str(name):
            return cm.props.get("data") or {}
    return {}


def _pod_wiring(view: StackView, w: PolicyResource) -> tuple[list[str], set[str]]:
    """What a workload's pods are configured with: the text of their commands, arguments and
    variables (literal or from an in-stack ConfigMap), and the Secrets they use."""
    spec = pod_spec(w.resource_type, w.props) or {}
    ns = namespace_of(w)
    texts: list[str] = []
    secrets: set[str] = set()
    for c in containers(spec):
        texts += [str(x) for x in as_list(c.get("command")) + as_list(c.get("args"))]
        for e in as_list(c.get("env")):
            cm_ref = get_path(e, "valueFrom", "configMapKeyRef")
            secret_ref = get_path(e, "valueFrom", "secretKeyRef")
            if cm_ref:
                texts.append(
                    str(_config_map_data(view, get_path(cm_ref, "name"), ns).get(get_path(cm_ref, "key")))
                )
            elif secret_ref:
                secrets.add(str(get_path(secret_ref, "name")))
            elif get_path(e, "value") is not None:
                texts.append(str(get_path(e, "value")))
        for source in as_list(c.get("envFrom")):
            if get_path(source, "configMapRef", "name"):
                data = _config_map_data(view, get_path(source, "configMapRef", "name"), ns)
                texts += [str(data[k]) for k in data]
            if get_path(source, "secretRef", "name"):
                secrets.add(str(get_path(source, "secretRef", "name")))
    for v in as_list(spec.get("volumes")):
        if get_path(v, "secret", "secretName"):
            secrets.add(str(get_path(v, "secret", "secretName")))
        for part in as_list(get_path(v, "projected", "sources")):
            if get_path(part, "secret", "name"):
                secrets.add(str(get_path(part, "secret", "name")))
    return texts, secrets


_HOST_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")


def _names_service(text: str, services: set[str], namespace: str) -> bool:
    """Some host in ``text`` is one of ``services`` (in ``namespace``): svc, svc.ns[.svc...], or a
    pod of a headless one, pod.svc[.ns...]."""
    for token in _HOST_TOKEN.findall(text.lower()):
        labels = token.split(".")
        for i in (0, 1):
            if (
                len(labels) > i
                and labels[i] in services
                and (len(labels) == i + 1 or labels[i + 1] == namespace)
            ):
                return True
    return False


def _cache_clients(view: StackView, cache: PolicyResource) -> set[str]:
    """URNs of the workloads (in the cache's namespace) that use the cache: their configuration
    names a Service in front of the cache's pods, or their pods are given a Secret the cache's
    pods use (its password, its TLS material)."""
    ns, labels = namespace_of(cache), pod_labels(cache.resource_type, cache.props)
    services = {
        _name_of(svc).lower()
        for svc in view.of_type(*SERVICE)
        if namespace_of(svc) == ns
        and (selector := get_path(svc.props, "spec", "selector"))
        and all(labels.get(k) == v for k, v in selector.items())
    }
    _, cache_secrets = _pod_wiring(view, cache)
    clients: set[str] = set()
    for w in view.of_type(*WORKLOADS):
        if w.urn == cache.urn or namespace_of(w) != ns:
            continue
        texts, secrets = _pod_wiring(view, w)
        if secrets & cache_secrets or any(_names_service(t, services, ns) for t in texts):
            clients.add(w.urn)
    return clients


def _cache_ports(cache: PolicyResource) -> tuple[set[int], set[str]]:
    """The port numbers and names the cache's own containers serve (the default port when none is
    declared); a sidecar's port (an exporter's) is not the cache's."""
    numbers: set[int] = set()
    names: set[str] = set()
    for c in containers(pod_spec(cache.resource_type, cache.props), False):
        if not is_cache_container(c):
            continue
        for port in as_list(c.get("ports")):
            if isinstance(n := get_path(port, "containerPort"), int | float):
                numbers.add(int(n))
            if get_path(port, "name"):
                names.add(str(get_path(port, "name")))
    return numbers or {CACHE_PORT}, names


def _selector_text(selector: Any) -> str:
    parts = [f"{k}={v}" for k, v in (get_path(selector, "matchLabels") or {}).items()]
    parts += [
        f"{get_path(e, 'key')} {get_path(e, 'operator')} {as_list(get_path(e, 'values'))}"
        for e in as_list(get_path(selector, "matchExpressions"))
    ]
    return ", ".join(parts) or "{}"


def _cache_peer_problems(
    view: StackView,
    rule: Any,
    cache: PolicyResource,
    clients: Callable[[], set[str]],
    ports: tuple[set[int], set[str]],
) -> Iterator[str]:
    """What one ingress rule of a policy selecting the cache's pods admits beyond the app's pods
    (in the cache's namespace) on the cache's ports."""
    ns = namespace_of(cache)
    peers = as_list(get_path(rule, "from"))
    if not peers:
        yield "admits every source to the cache"
    for peer in peers:
        selector = get_path(peer, "podSelector")
        if get_path(peer, "ipBlock"):
            yield f"admits {get_path(peer, 'ipBlock', 'cidr')} to the cache, from outside the app's pods"
        elif get_path(peer, "namespaceSelector") is not None:
            # A namespaceSelector (even {}) selects pods of other namespaces than the cache's.
            chosen = _selector_text(get_path(peer, "namespaceSelector"))
            yield f"admits pods of other namespaces (namespaceSelector {chosen}) to the cache"
        elif not get_path(selector, "matchLabels") and not get_path(selector, "matchExpressions"):
            yield f"admits every pod of namespace {ns!r} to the cache"
        else:
            picked = [
                w
                for w in view.of_type(*WORKLOADS)
                if namespace_of(w) == ns and selects(selector, pod_labels(w.resource_type, w.props))
            ]
            if not picked:
                yield f"admits pods selected by {_selector_text(selector)}, none of the app's, to the cache"
            # The cache's own pods (replication, Sentinel) may reach it; any other must use it.
            others = sorted(w.name for w in picked if w.urn != cache.urn and w.urn not in clients())
            if others:
                yield f"admits the pods of {', '.join(repr(o) for o in others)}, which do not use the cache"
    numbers, names = ports
    served = ", ".join(str(n) for n in sorted(numbers))
    entries = as_list(get_path(rule, "ports"))
    if not entries:
        yield f"admits every port of the cache pods; allow only the cache's ({served})"
    for entry in entries:
        port, end = get_path(entry, "port"), get_path(entry, "endPort")
        if isinstance(port, str):
            ok = port in names
        elif isinstance(port, int | float):
            last = int(end) if isinstance(end, int | float) else int(port)
            ok = set(range(int(port), last + 1)) <= numbers
        else:
            ok = False  # no port: every port
        if not ok:
            shown = "every port" if port is None else f"port {num(port)}" + (f"-{num(end)}" if end else "")
            yield f"admits {shown} of the cache pods; allow only the cache's ({served})"


def _cache_ingress(view: StackView) -> Iterator[tuple[str, str | None]]:
    for w in view.of_type(*WORKLOADS):
        if not is_cache(w.resource_type, w.props):
            continue
        policies = ingress_policies(view, w)
        if not policies:
            yield "no NetworkPolicy restricts ingress to the cache pods", w.urn
            continue
        # Who uses the cache is read only when a peer selects other pods than the cache's own.
        clients = functools.cache(functools.partial(_cache_clients, view, w))
        ports = _cache_ports(w)
        for p in policies:
            for rule in as_list(get_path(p.props, "spec", "ingress")):
                for problem in _cache_peer_problems(view, rule, w, clients, ports):
                    yield f"NetworkPolicy {p.name!r} {problem}", p.urn


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
            yield f"{w.name!r} runs {num(replicas)} replica(s) ({source}); prod needs at least 2", w.urn


def _api_callers(view: StackView) -> set[str]:
    """namespace/name of the service accounts a (Cluster)RoleBinding grants API access to."""
    callers: set[str] = set()
    for b in view.of_type(*BINDINGS):
        for subject in as_list(b.props.get("subjects")):
            if norm(get_path(subject, "kind")) == "serviceaccount":
                ns = get_path(subject, "namespace") or namespace_of(b)
                callers.add(f"{ns}/{get_path(subject, 'name')}")
    return callers


def _token(view: StackView) -> Iterator[tuple[str, str | None]]:
    no_token = {
        f"{namespace_of(sa)}/{get_path(sa.props, 'metadata', 'name') or sa.name}"
        for sa in view.of_type(*SERVICE_ACCOUNT)
        if sa.props.get("automountServiceAccountToken") is False
    }
    callers = _api_callers(view)
    for w in view.of_type(*WORKLOADS):
        spec = pod_spec(w.resource_type, w.props) or {}
        own = spec.get("automountServiceAccountToken")
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        key = f"{namespace_of(w)}/{account}"
        if own is False or (own is None and key in no_token) or (account != "default" and key in callers):
            continue  # no token, or a token its RBAC bindings show it uses
        yield (
            f"{w.name!r} automounts the token of service account {account!r}, which no RoleBinding "
            "grants anything; set automountServiceAccountToken: false on the pod or the ServiceAccount",
            w.urn,
        )


def _limit_defaults(view: StackView) -> dict[str, set[str]]:
    """namespace -> resources a LimitRange gives containers a default limit for."""
    out: dict[str, set[str]] = {}
    for lr in view.of_type(*LIMIT_RANGE):
        for limit in as_list(get_path(lr.props, "spec", "limits")):
            if norm(get_path(limit, "type")) == "container":
                out.setdefault(namespace_of(lr), set()).update(
                    str(k) for k in (get_path(limit, "default") or {})
                )
    return out


def _limits_stack(view: StackView) -> Iterator[tuple[str, str | None]]:
    defaults = _limit_defaults(view)
    for w in view.of_type(*WORKLOADS):
        spec = pod_spec(w.resource_type, w.props)
        for c in containers(spec):
            for problem in _limits(c, spec or {}, defaults.get(namespace_of(w))):
                yield f"{w.name!r} container {c.get('name', '?')!r}: {problem}", w.urn


def _pss(cis: str) -> Controls:
    return Controls(cis=(f"K8s-{cis}",), nist=("AC-6", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",))


_EDGE = Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1", "1.4.1"))
_RBAC = Controls(
    cis=("K8s-5.1.1", "K8s-5.1.3", "K8s-5.1.8"), nist=("AC-6", "AC-6(10)"), soc2=("CC6.3",), pci=("7.2.2",)
)

RULES = [
    Rule(
        "k8s-no-privileged",
        "Containers do not run privileged.",
        Severity.CRITICAL,
        _pss("5.2.2"),
        "Remove securityContext.privileged or set it to false.",
        WORKLOADS,
        container_rule(_privileged),
        checkov=("CKV_K8S_16",),
    ),
    Rule(
        "k8s-no-privilege-escalation",
        "Containers set allowPrivilegeEscalation: false.",
        Severity.HIGH,
        _pss("5.2.6"),
        "Set securityContext.allowPrivilegeEscalation: false on every container.",
        WORKLOADS,
        container_rule(_escalation),
        checkov=("CKV_K8S_20",),
    ),
    Rule(
        "k8s-run-as-non-root",
        "Containers run as a non-root user.",
        Severity.HIGH,
        _pss("5.2.7"),
        "Set securityContext.runAsNonRoot: true and a non-zero runAsUser (pod or container level).",
        WORKLOADS,
        container_rule(_non_root),
        checkov=("CKV_K8S_23", "CKV_K8S_29", "CKV_K8S_30"),
    ),
    Rule(
        "k8s-drop-all-capabilities",
        "Containers drop ALL capabilities (adding back NET_BIND_SERVICE at most).",
        Severity.MEDIUM,
        _pss("5.2.9"),
        "Set securityContext.capabilities.drop: [ALL].",
        WORKLOADS,
        container_rule(_drop_all),
        checkov=("CKV_K8S_25", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_39"),
    ),
    Rule(
        "k8s-seccomp-runtime-default",
        "Containers use the RuntimeDefault seccomp profile.",
        Severity.MEDIUM,
        _pss("5.7.2"),
        "Set securityContext.seccompProfile.type: RuntimeDefault on the pod.",
        WORKLOADS,
        container_rule(_seccomp),
        checkov=("CKV_K8S_31",),
    ),
    Rule(
        "k8s-readonly-root-filesystem",
        "Containers have a read-only root filesystem.",
        Severity.MEDIUM,
        Controls(nist=("CM-7", "SI-7"), soc2=("CC6.8",)),
        "Set securityContext.readOnlyRootFilesystem: true and mount emptyDir volumes for writable paths.",
        WORKLOADS,
        container_rule(_readonly),
        checkov=("CKV_K8S_22",),
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
        checkov=("CKV_K8S_17", "CKV_K8S_18", "CKV_K8S_19"),
    ),
    Rule(
        "k8s-no-host-path",
        "Pods do not mount the node's filesystem (read-only log directories excepted) or its container "
        "runtime socket.",
        Severity.HIGH,
        Controls(cis=("K8s-5.2.12",), nist=("AC-6", "SC-39"), soc2=("CC6.1",), pci=("2.2.1",)),
        "Use emptyDir, a PersistentVolumeClaim, a ConfigMap or a Secret instead of hostPath.",
        WORKLOADS,
        pod_rule(_host_path),
        checkov=("CKV_K8S_27",),
    ),
    Rule(
        "k8s-no-host-port",
        "Containers do not bind ports on the node (hostPort).",
        Severity.MEDIUM,
        Controls(cis=("K8s-5.2.13",), nist=("SC-7",), soc2=("CC6.6",), pci=("1.3.1",)),
        "Remove ports[].hostPort and reach the pods through a Service.",
        WORKLOADS,
        container_rule(_host_port),
        checkov=("CKV_K8S_26",),
    ),
    Rule(
        "k8s-pod-security-baseline",
        "Pods set no unsafe sysctls, unmasked /proc, Unconfined AppArmor, custom SELinux options or "
        "Windows host processes.",
        Severity.HIGH,
        Controls(cis=("K8s-5.2.1",), nist=("AC-6", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",)),
        "Remove the setting; the Pod Security Standards 'baseline' profile forbids it.",
        WORKLOADS,
        pod_rule(_baseline),
    ),
    Rule(
        "k8s-resource-limits",
        "Containers have CPU and memory limits (set on the container or by the namespace's LimitRange).",
        Severity.MEDIUM,
        Controls(nist=("SC-6", "SC-5"), soc2=("A1.1",)),
        "Set resources.limits.cpu and resources.limits.memory (and requests) on every container, or a "
        "LimitRange with default limits in the namespace.",
        stack_check=_limits_stack,
        checkov=("CKV_K8S_11", "CKV_K8S_13"),
    ),
    Rule(
        "k8s-resource-requests",
        "Containers request CPU and memory.",
        Severity.LOW,
        Controls(nist=("SC-6",), soc2=("A1.1",)),
        "Set resources.requests.cpu and resources.requests.memory.",
        WORKLOADS,
        container_rule(_requests),
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_K8S_10", "CKV_K8S_12"),
    ),
    Rule(
        "k8s-image-pinned",
        "Container images are pinned by digest or a non-latest tag.",
        Severity.MEDIUM,
        Controls(nist=("CM-2", "SI-7"), soc2=("CC8.1",), pci=("6.3.2",)),
        "Reference images as repo@sha256:<digest> (built by CI) or an immutable version tag.",
        WORKLOADS,
        container_rule(_image),
        checkov=("CKV_K8S_14",),
    ),
    Rule(
        "k8s-no-service-account-token",
        "Pods do not automount a service account token unless they call the API (their ServiceAccount is "
        "bound to a role); otherwise the pod or its ServiceAccount turns it off.",
        Severity.MEDIUM,
        Controls(cis=("K8s-5.1.6",), nist=("AC-6", "IA-5"), soc2=("CC6.1",)),
        "Set automountServiceAccountToken: false in the pod spec or on its ServiceAccount; pods that call "
        "the API get their own ServiceAccount bound to a least-privilege Role.",
        stack_check=_token,
        checkov=("CKV_K8S_38",),
    ),
    Rule(
        "k8s-no-literal-secrets-in-env",
        "Containers take credentials from Secrets, not literal env values or arguments.",
        Severity.HIGH,
        Controls(cis=("K8s-5.4.1",), nist=("IA-5(7)", "SC-28"), soc2=("CC6.1",), pci=("8.6.2",)),
        "Store the value in a Secret and use env[].valueFrom.secretKeyRef (or a mounted file).",
        WORKLOADS,
        container_rule(_env_secrets),
    ),
    Rule(
        "k8s-no-secrets-in-configmap",
        "ConfigMaps hold no credentials.",
        Severity.HIGH,
        Controls(cis=("K8s-5.4.1",), nist=("IA-5(7)", "SC-28"), soc2=("CC6.1",), pci=("8.6.2",)),
        "Move the value into a Secret (ideally synced from a secret store) and mount it.",
        CONFIGMAP,
        _configmap_secrets,
    ),
    Rule(
        "k8s-no-default-namespace",
        "Namespaced resources are not placed in the default namespace.",
        Severity.LOW,
        Controls(cis=("K8s-5.7.4",), nist=("SC-7", "AC-4"), soc2=("CC6.1",)),
        "Create a Namespace for the app and set metadata.namespace on every resource.",
        NAMESPACED,
        _namespace,
        checkov=("CKV_K8S_21",),
    ),
    Rule(
        "k8s-probes",
        "Long-running containers have liveness and readiness probes.",
        Severity.LOW,
        Controls(nist=("SI-6", "CP-10"), soc2=("A1.2",)),
        "Add livenessProbe (/livez) and readinessProbe (/readyz) to every long-running container.",
        WORKLOADS,
        _long_running(container_rule(_probes, init=False)),
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_K8S_8", "CKV_K8S_9"),
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
        "k8s-service-not-exposed",
        "Services are not NodePorts, and internet-facing LoadBalancers expose only 80/443.",
        Severity.HIGH,
        _EDGE,
        "Use ClusterIP behind an Ingress; for a LoadBalancer set loadBalancerSourceRanges or the cloud's "
        "internal load balancer annotation.",
        SERVICE,
        _service_exposure,
    ),
    Rule(
        "k8s-no-external-ips",
        "Services set no externalIPs.",
        Severity.HIGH,
        _EDGE,
        "Remove spec.externalIPs; use a LoadBalancer or an Ingress (and deny externalIPs by "
        "admission policy).",
        SERVICE,
        _external_ips,
    ),
    Rule(
        "k8s-ingress-tls",
        "Ingresses terminate TLS for every host they serve.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Add spec.tls with the hosts and a certificate Secret (cert-manager can issue it).",
        INGRESS,
        _ingress_tls,
    ),
    Rule(
        "k8s-ingress-no-snippets",
        "NGINX Ingresses carry no configuration snippets.",
        Severity.HIGH,
        Controls(nist=("CM-7", "SI-10"), soc2=("CC6.8",), pci=("6.2.4",)),
        "Remove the *-snippet annotations; use the controller's supported annotations.",
        INGRESS,
        _ingress_snippets,
        checkov=("CKV_K8S_152", "CKV_K8S_153", "CKV_K8S_154"),
    ),
    Rule(
        "k8s-rbac-no-wildcards",
        "Roles and ClusterRoles grant no wildcard verbs or resources.",
        Severity.HIGH,
        _RBAC,
        "List the exact resources and verbs the subject uses.",
        ROLES,
        _rbac_wildcards,
        checkov=("CKV_K8S_49",),
    ),
    Rule(
        "k8s-rbac-no-escalation",
        "Roles grant no path to more privilege (bind, escalate, impersonate, exec into pods, node proxy, "
        "token creation, admission webhooks, CSR approval, Service status).",
        Severity.HIGH,
        _RBAC,
        "Remove the verb, or keep it in a role bound only to cluster administrators.",
        ROLES,
        _rbac_escalation,
        checkov=(
            "CKV_K8S_155",
            "CKV_K8S_156",
            "CKV_K8S_157",
            "CKV_K8S_158",
            "CKV2_K8S_1",
            "CKV2_K8S_2",
            "CKV2_K8S_3",
            "CKV2_K8S_4",
        ),
    ),
    Rule(
        "k8s-rbac-no-secret-read",
        "Roles do not read every Secret (name them in resourceNames).",
        Severity.HIGH,
        Controls(cis=("K8s-5.1.2",), nist=("AC-6",), soc2=("CC6.3",), pci=("7.2.2",)),
        "Mount the Secret into the pod instead, or restrict get to resourceNames.",
        ROLES,
        _rbac_secrets,
        checkov=("CKV2_K8S_5",),
    ),
    Rule(
        "k8s-rbac-no-admin-binding",
        "Nothing is bound to cluster-admin, and no role is bound to anonymous or all authenticated users.",
        Severity.CRITICAL,
        _RBAC,
        "Bind a least-privilege Role in the workload's namespace to its own ServiceAccount.",
        BINDINGS,
        _rbac_bindings,
    ),
    Rule(
        "k8s-default-service-account",
        "The default service account gets no role and mounts no token.",
        Severity.MEDIUM,
        Controls(cis=("K8s-5.1.5",), nist=("AC-6",), soc2=("CC6.3",)),
        "Give each workload its own ServiceAccount; set automountServiceAccountToken: false on 'default'.",
        BINDINGS + SERVICE_ACCOUNT,
        _default_sa,
        checkov=("CKV_K8S_41", "CKV_K8S_42"),
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
        "k8s-workload-network-policy",
        "Every workload's pods are selected by a NetworkPolicy that governs their ingress.",
        Severity.MEDIUM,
        Controls(cis=("K8s-5.3.2",), nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Add a NetworkPolicy whose podSelector matches the pods (a default-deny podSelector: {} covers all).",
        stack_check=_workload_netpol,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_K8S_6",),
    ),
    Rule(
        "k8s-cache-ingress-from-service",
        "Only the service's pods may reach the cache pods: those of the workloads that use the cache, in "
        "the cache's namespace, on the cache's ports.",
        Severity.HIGH,
        Controls(nist=("SC-7", "AC-4"), soc2=("CC6.6",), pci=("1.3.1",)),
        "Add a NetworkPolicy selecting the cache pods whose ingress admits only the app's podSelector (no "
        "namespaceSelector, no ipBlock) on the cache port.",
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
