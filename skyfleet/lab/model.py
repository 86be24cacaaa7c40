"""What a site's plan runs, read back from the planned resources: the twin's model.

A plan says what each platform will run, in its own words: an ECS task definition's container
definitions, a Cloud Run service's template, a Kubernetes pod template. This module reads all
three into one shape (``PodSpec`` of ``Container``s), with every value as the plan gives it:
commands, environment values verbatim, where each secret comes from, files and the paths they
are mounted at, the user, a read-only root, writable dirs, ports and probes with their timings.
The lab runs exactly that (``skyfleet.lab.pods``); nothing here is written for the lab.

Secret values are never read from here: a ``SecretSource`` names where the platform takes a
value from (a Secrets Manager ARN, a Secret Manager secret and version, a Kubernetes Secret and
key); ``skyfleet.lab.values`` decides what the lab delivers there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from skyfleet.lab.errors import LabError
from skyfleet.plan import Plan, PlannedResource

# Pulumi's wire form marks a secret with this signature key (its value under "value").
SECRET_SIG = "4dabf18193072939515e22adb298388d"

ECS_TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"
SECRETS_MANAGER_SECRET = "aws:secretsmanager/secret:Secret"
SECRETS_MANAGER_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
SECRET_MANAGER_SECRET = "gcp:secretmanager/secret:Secret"
SECRET_MANAGER_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
K8S_STATEFULSET = "kubernetes:apps/v1:StatefulSet"
K8S_JOB = "kubernetes:batch/v1:Job"
K8S_SECRET = "kubernetes:core/v1:Secret"
K8S_CONFIGMAP = "kubernetes:core/v1:ConfigMap"
K8S_CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"

Platform = Literal["ecs", "cloudrun", "kubernetes"]


def plain(value: Any) -> Any:
    """A wire value with Pulumi's secret wrapper taken off."""
    if isinstance(value, Mapping) and SECRET_SIG in value:
        return plain(value.get("value"))
    return value


def is_secret(value: Any) -> bool:
    return isinstance(value, Mapping) and SECRET_SIG in value


def resource_label(urn: str) -> str:
    """``<type> '<name>'`` of a URN (urn:pulumi:<stack>::<project>::<parent$...$type>::<name>)."""
    parts = urn.split("::")
    if len(parts) < 4:
        return urn
    return f"{parts[2].rsplit('$', 1)[-1]} {parts[3]!r}"


def _num(value: Any, default: float = 0) -> float:
    return float(value) if isinstance(value, int | float) else default


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float) else default


# --- the shape every platform is read into --------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A health probe with its timings (Kubernetes' vocabulary; ECS and Cloud Run map onto it)."""

    kind: Literal["http", "tcp", "exec"]
    period: float
    timeout: float
    failure_threshold: int
    initial_delay: float = 0
    path: str | None = None
    port: int | None = None
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretSource:
    """Where a platform takes a secret value from, in the plan's own terms."""

    store: Literal["secretsmanager", "secretmanager", "kubernetes"]
    ref: str  # an ARN, a Secret Manager secret id, a Kubernetes Secret's name
    key: str | None = None  # a Kubernetes Secret's key; a Secret Manager version
    resource: str | None = None  # the URN of the secret resource in the plan, if found


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None  # verbatim from the plan
    secret: SecretSource | None = None
    field_path: str | None = None  # Kubernetes downward API (metadata.name, ...)


@dataclass(frozen=True)
class FileItem:
    """One file of a volume: the key it comes from, its path inside the mount, its mode."""

    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class Volume:
    """What a mount shows: generated files, an empty writable dir, or persistent data."""

    name: str
    kind: Literal["secret", "configmap", "empty", "data"]
    ref: str | None = None  # the Secret / ConfigMap / secret id
    items: tuple[FileItem, ...] = ()  # only these keys (all keys when empty)
    default_mode: int | None = None
    memory: bool = False
    store: Literal["secretmanager", "kubernetes", "configmap", ""] = ""


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[EnvVar, ...] = ()
    mounts: tuple[Mount, ...] = ()
    user: int | None = None
    group: int | None = None
    read_only_root: bool = False
    ports: tuple[int, ...] = ()
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    # Runs to completion before the others start (a Kubernetes init container, or an ECS
    # container the others depend on with condition SUCCESS).
    init: bool = False
    essential: bool = True

    def env_values(self) -> dict[str, str]:
        return {e.name: e.value for e in self.env if e.value is not None}


@dataclass(frozen=True)
class PodSpec:
    """One workload: the containers of one replica, and how many replicas the plan runs."""

    platform: Platform
    name: str  # the workload's name on its platform (ECS service, Cloud Run service, ...)
    resource: str  # the URN of the resource that defines the containers
    kind: Literal["service", "statefulset", "job"]
    replicas: int
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...] = ()
    fs_group: int | None = None
    # StatefulSet: the headless Service its pods are named under (pod.<service>.<ns>.svc...).
    service_name: str | None = None
    namespace: str | None = None
    grace_seconds: float = 30
    # Volumes that persist per replica (StatefulSet volumeClaimTemplates).
    claims: tuple[str, ...] = ()
    # The platform gives each replica a writable root filesystem (Cloud Run's in-memory one).
    writable_root: bool = False
    # Kubernetes: the pod template's labels (what Services select).
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def init_containers(self) -> list[Container]:
        return [c for c in self.containers if c.init]

    @property
    def main_containers(self) -> list[Container]:
        return [c for c in self.containers if not c.init]

    def volume(self, name: str) -> Volume:
        return next(v for v in self.volumes if v.name == name)


# --- ECS (Fargate) -------------------------------------------------------------------------


def _ecs_probe(check: Mapping[str, Any] | None) -> Probe | None:
    """An ECS container health check (CMD ...) as an exec probe; ECS counts retries after the
    start period, as Kubernetes counts failures after the initial delay."""
    if not check:
        return None
    command = [str(c) for c in check.get("command", [])]
    if command[:1] in (["CMD"], ["CMD-SHELL"]):
        command = command[1:] if command[0] == "CMD" else ["sh", "-c", " ".join(command[1:])]
    return Probe(
        kind="exec",
        command=tuple(command),
        period=_num(check.get("interval"), 30),
        timeout=_num(check.get("timeout"), 5),
        failure_threshold=_int(check.get("retries"), 3),
        initial_delay=_num(check.get("startPeriod"), 0),
    )


def _ecs_pods(plan: Plan) -> list[PodSpec]:
    secrets = {str(r.outputs.get("arn")): r.urn for r in plan.of_type(SECRETS_MANAGER_SECRET)}
    definitions = {str(r.outputs.get("arn")): r for r in plan.of_type(ECS_TASK_DEFINITION)}
    pods = []
    for service in plan.of_type(ECS_SERVICE):
        td = definitions.get(str(service.inputs.get("taskDefinition")))
        if td is None:
            continue
        defs = json.loads(plain(td.inputs["containerDefinitions"]))
        volumes = tuple(
            # A Fargate bind mount: an empty dir the task's containers share, owned by root.
            Volume(name=str(v["name"]), kind="empty")
            for v in td.inputs.get("volumes") or []
        )
        containers = []
        # Containers others depend on with SUCCESS run to completion first.
        init_names = {
            str(d["containerName"])
            for c in defs
            for d in c.get("dependsOn") or []
            if d.get("condition") in ("SUCCESS", "COMPLETE")
        }
        for c in defs:
            user, _, group = str(c.get("user") or "").partition(":")
            env = [EnvVar(str(e["name"]), value=str(e["value"])) for e in c.get("environment") or []]
            env += [
                EnvVar(
                    str(s["name"]),
                    secret=SecretSource(
                        "secretsmanager", str(s["valueFrom"]), resource=secrets.get(str(s["valueFrom"]))
                    ),
                )
                for s in c.get("secrets") or []
            ]
            containers.append(
                Container(
                    name=str(c["name"]),
                    image=str(c["image"]),
                    command=tuple(str(a) for a in (c.get("entryPoint") or []) + (c.get("command") or [])),
                    env=tuple(env),
                    mounts=tuple(
                        Mount(str(m["sourceVolume"]), str(m["containerPath"]), bool(m.get("readOnly")))
                        for m in c.get("mountPoints") or []
                    ),
                    user=int(user) if user.isdigit() else None,
                    group=int(group) if group.isdigit() else None,
                    read_only_root=bool(c.get("readonlyRootFilesystem")),
                    ports=tuple(int(p["containerPort"]) for p in c.get("portMappings") or []),
                    liveness=_ecs_probe(c.get("healthCheck")),
                    init=str(c["name"]) in init_names,
                    essential=bool(c.get("essential", True)),
                )
            )
        containers.sort(key=lambda c: not c.init)
        pods.append(
            PodSpec(
                platform="ecs",
                name=str(service.inputs.get("name") or service.name),
                resource=td.urn,
                kind="service",
                replicas=_int(service.inputs.get("desiredCount"), 1),
                containers=tuple(containers),
                volumes=volumes,
                grace_seconds=max((_num(c.get("stopTimeout"), 30) for c in defs), default=30),
            )
        )
    return pods


# --- Cloud Run -------------------------------------------------------------------------------


def _k8s_style_probe(p: Mapping[str, Any] | None) -> Probe | None:
    """A Kubernetes (or Cloud Run, which uses the same fields) probe."""
    if not p:
        return None
    common = {
        "period": _num(p.get("periodSeconds"), 10),
        "timeout": _num(p.get("timeoutSeconds"), 1),
        "failure_threshold": _int(p.get("failureThreshold"), 3),
        "initial_delay": _num(p.get("initialDelaySeconds"), 0),
    }
    if http := p.get("httpGet"):
        return Probe(kind="http", path=str(http.get("path", "/")), port=_int(http.get("port")), **common)
    if tcp := p.get("tcpSocket"):
        return Probe(kind="tcp", port=_int(tcp.get("port")), **common)
    if exe := p.get("exec"):
        return Probe(kind="exec", command=tuple(str(a) for a in exe.get("command", [])), **common)
    return None


def _cloud_run_pods(plan: Plan, image_user: int | None) -> list[PodSpec]:
    secrets = {str(r.inputs.get("secretId")): r.urn for r in plan.of_type(SECRET_MANAGER_SECRET)}
    pods = []
    for svc in plan.of_type(CLOUD_RUN):
        template = svc.inputs.get("template") or {}
        volumes = []
        for v in template.get("volumes") or []:
            if secret := v.get("secret"):
                volumes.append(
                    Volume(
                        name=str(v["name"]),
                        kind="secret",
                        store="secretmanager",
                        ref=str(secret["secret"]),
                        items=tuple(
                            FileItem(str(i.get("version") or "latest"), str(i["path"]), _int(i.get("mode")))
                            for i in secret.get("items") or []
                        ),
                        default_mode=_int(secret.get("defaultMode"), 0o444),
                    )
                )
            elif v.get("emptyDir") is not None:
                volumes.append(Volume(name=str(v["name"]), kind="empty", memory=True))
        containers = []
        for c in template.get("containers") or []:
            env = []
            for e in c.get("envs") or []:
                if "value" in e:
                    env.append(EnvVar(str(e["name"]), value=str(e["value"])))
                elif ref := (e.get("valueSource") or {}).get("secretKeyRef"):
                    env.append(
                        EnvVar(
                            str(e["name"]),
                            secret=SecretSource(
                                "secretmanager",
                                str(ref["secret"]),
                                key=str(ref.get("version") or "latest"),
                                resource=secrets.get(str(ref["secret"])),
                            ),
                        )
                    )
                else:
                    raise _unrun_env(f"Cloud Run service {svc.name!r}", c.get("name"), e)
            ports = c.get("ports")
            port_list = [ports] if isinstance(ports, Mapping) else ports or []
            containers.append(
                Container(
                    name=str(c.get("name") or svc.name),
                    image=str(c["image"]),
                    command=tuple(str(a) for a in (c.get("commands") or []) + (c.get("args") or [])),
                    env=tuple(env),
                    mounts=tuple(
                        Mount(str(m["name"]), str(m["mountPath"]), read_only=True)
                        for m in c.get("volumeMounts") or []
                    ),
                    # Cloud Run runs the image's own USER.
                    user=image_user,
                    group=image_user,
                    ports=tuple(_int(p.get("containerPort"), 8080) for p in port_list),
                    startup=_k8s_style_probe(c.get("startupProbe")),
                    liveness=_k8s_style_probe(c.get("livenessProbe")),
                )
            )
        pods.append(
            PodSpec(
                platform="cloudrun",
                name=str(svc.inputs.get("name") or svc.name),
                resource=svc.urn,
                kind="service",
                replicas=_int((template.get("scaling") or {}).get("minInstanceCount"), 0),
                containers=tuple(containers),
                volumes=tuple(volumes),
                writable_root=True,
            )
        )
    return pods


# --- Kubernetes --------------------------------------------------------------------------------


# The pod fields a container's env may name (fieldRef) that the lab gives its pods.
FIELD_PATHS = ("metadata.name", "metadata.namespace", "status.podIP")


def _unrun_env(where: str, container: object, e: Mapping[str, Any]) -> LabError:
    """An env source the lab cannot give as the platform would: an error, never a variable
    silently missing (the app would fall back to its defaults)."""
    how = next(iter(e.get("valueFrom") or e.get("valueSource") or {}), "no value")
    return LabError(
        f"{where}: container {container}: env {e.get('name')!r} comes from {how}, which the lab does not "
        "run; give it a value, a secret reference or a ConfigMap key"
    )


def _k8s_container(
    c: Mapping[str, Any],
    pod_sc: Mapping[str, Any],
    *,
    init: bool,
    where: str,
    config_maps: Mapping[str, Mapping[str, Any]],
) -> Container:
    sc = c.get("securityContext") or {}
    if c.get("envFrom"):
        raise LabError(
            f"{where}: container {c.get('name')}: envFrom is not run by the lab; name each variable in env"
        )
    env = []
    for e in c.get("env") or []:
        source = e.get("valueFrom") or {}
        if "value" in e:
            env.append(EnvVar(str(e["name"]), value=str(e["value"])))
        elif ref := source.get("secretKeyRef"):
            env.append(
                EnvVar(str(e["name"]), secret=SecretSource("kubernetes", str(ref["name"]), str(ref["key"])))
            )
        elif ref := source.get("configMapKeyRef"):
            data = config_maps.get(str(ref.get("name"))) or {}
            if str(ref.get("key")) in data:
                env.append(EnvVar(str(e["name"]), value=str(data[str(ref["key"])])))
            elif not ref.get("optional"):
                raise LabError(
                    f"{where}: container {c.get('name')}: env {e.get('name')!r} comes from ConfigMap "
                    f"{ref.get('name')!r} key {ref.get('key')!r}, which the plan does not hold"
                )
        elif (field_ref := source.get("fieldRef")) and str(field_ref.get("fieldPath")) in FIELD_PATHS:
            env.append(EnvVar(str(e["name"]), field_path=str(field_ref["fieldPath"])))
        else:
            raise _unrun_env(where, c.get("name"), e)
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup", user))
    return Container(
        name=str(c["name"]),
        image=str(c.get("image", "")),
        command=tuple(str(a) for a in (c.get("command") or []) + (c.get("args") or [])),
        env=tuple(env),
        mounts=tuple(
            Mount(str(m["name"]), str(m["mountPath"]), bool(m.get("readOnly")))
            for m in c.get("volumeMounts") or []
        ),
        user=_int(user) if user is not None else None,
        group=_int(group) if group is not None else None,
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        ports=tuple(_int(p.get("containerPort")) for p in c.get("ports") or []),
        startup=_k8s_style_probe(c.get("startupProbe")),
        readiness=_k8s_style_probe(c.get("readinessProbe")),
        liveness=_k8s_style_probe(c.get("livenessProbe")),
        init=init,
    )


def _k8s_volume(v: Mapping[str, Any]) -> Volume:
    name = str(v["name"])
    if secret := v.get("secret"):
        return Volume(
            name=name,
            kind="secret",
            store="kubernetes",
            ref=str(secret["secretName"]),
            items=tuple(
                FileItem(str(i["key"]), str(i["path"]), _int(i["mode"]) if "mode" in i else None)
                for i in secret.get("items") or []
            ),
            default_mode=_int(secret.get("defaultMode"), 0o644),
        )
    if cm := v.get("configMap"):
        return Volume(
            name=name,
            kind="configmap",
            store="configmap",
            ref=str(cm["name"]),
            items=tuple(FileItem(str(i["key"]), str(i["path"])) for i in cm.get("items") or []),
            default_mode=_int(cm.get("defaultMode"), 0o644),
        )
    empty = v.get("emptyDir")
    return Volume(
        name=name, kind="empty", memory=isinstance(empty, Mapping) and empty.get("medium") == "Memory"
    )


def _pre_stop_sleep(container: Mapping[str, Any]) -> float:
    sleep = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}
    return _num(sleep.get("seconds"), 0)


def _k8s_pods(plan: Plan) -> list[PodSpec]:
    pods = []
    for r in (*plan.of_type(K8S_DEPLOYMENT), *plan.of_type(K8S_STATEFULSET), *plan.of_type(K8S_JOB)):
        spec = r.inputs.get("spec") or {}
        meta = r.inputs.get("metadata") or {}
        template = (spec.get("template") or {}).get("spec") or {}
        pod_sc = template.get("securityContext") or {}
        namespace = str(meta.get("namespace") or "default")
        config_maps = {
            str(m.get("name")): cm.inputs.get("data") or {}
            for cm in plan.of_type(K8S_CONFIGMAP)
            if str((m := cm.inputs.get("metadata") or {}).get("namespace") or "default") == namespace
        }
        where = f"{r.type.split(':')[-1]} {meta.get('name') or r.name!r}"
        containers = [
            _k8s_container(c, pod_sc, init=init, where=where, config_maps=config_maps)
            for init, key in ((True, "initContainers"), (False, "containers"))
            for c in template.get(key) or []
        ]
        claims = tuple(
            str((t.get("metadata") or {}).get("name")) for t in spec.get("volumeClaimTemplates") or []
        )
        kind: Literal["service", "statefulset", "job"] = (
            "statefulset" if r.type == K8S_STATEFULSET else "job" if r.type == K8S_JOB else "service"
        )
        pods.append(
            PodSpec(
                platform="kubernetes",
                name=str(meta.get("name") or r.name),
                resource=r.urn,
                kind=kind,
                replicas=_int(spec.get("replicas"), 1) if kind != "job" else 1,
                containers=tuple(containers),
                volumes=tuple(_k8s_volume(v) for v in template.get("volumes") or [])
                + tuple(Volume(name=c, kind="data") for c in claims),
                fs_group=_int(pod_sc["fsGroup"]) if "fsGroup" in pod_sc else None,
                service_name=str(spec["serviceName"]) if spec.get("serviceName") else None,
                namespace=str(meta.get("namespace")) if meta.get("namespace") else None,
                # The lab runs no preStop hook and signals at once: the kubelet's grace runs from
                # the hook, so what is left after a sleep hook is the process's.
                grace_seconds=_num(template.get("terminationGracePeriodSeconds"), 30)
                - max((_pre_stop_sleep(c) for c in template.get("containers") or []), default=0),
                claims=claims,
                labels={
                    str(k): str(v)
                    for k, v in (
                        ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
                    ).items()
                },
            )
        )
    return pods


def pods(plan: Plan, *, image_user: int | None = None) -> list[PodSpec]:
    """Every workload the plan runs, whatever its platform. ``image_user`` is the image's USER
    (Cloud Run runs it; the other platforms name the user in the plan)."""
    return [*_ecs_pods(plan), *_cloud_run_pods(plan, image_user), *_k8s_pods(plan)]


# --- secret and config values as the plan holds them ---------------------------------------------


@dataclass
class PlanValues:
    """The plan's own values behind a ``SecretSource`` or a ConfigMap (wire form, secrets marked)."""

    plan: Plan
    _by_urn: dict[str, PlannedResource] = field(init=False)

    def __post_init__(self) -> None:
        self._by_urn = {r.urn: r for r in self.plan.resources}

    def secret_value(self, source: SecretSource) -> Any:
        """The value the plan stores at ``source`` (a wire value: may be a secret wrapper), or
        None when the plan holds none there (it comes from outside the stack)."""
        if source.store == "secretsmanager":
            secret = self._by_urn.get(source.resource or "")
            ids = {str(secret.outputs.get(k)) for k in ("id", "arn")} if secret else {source.ref}
            for v in self.plan.of_type(SECRETS_MANAGER_VERSION):
                if str(v.inputs.get("secretId")) in ids:
                    return v.inputs.get("secretString")
            return None
        if source.store == "secretmanager":
            secret = next(
                (
                    r
                    for r in self.plan.of_type(SECRET_MANAGER_SECRET)
                    if r.inputs.get("secretId") == source.ref
                ),
                None,
            )
            if secret is None:
                return None
            for v in self.plan.of_type(SECRET_MANAGER_VERSION):
                if str(v.inputs.get("secret")) == str(secret.outputs.get("id")):
                    return v.inputs.get("secretData")
            return None
        data = self.k8s_secret(source.ref)
        return None if data is None else data.get(source.key or "")

    def k8s_secret(self, name: str) -> dict[str, Any] | None:
        """A Kubernetes Secret's keys, as wire values (stringData; data base64-decoded)."""
        for r in self.plan.of_type(K8S_SECRET):
            if (r.inputs.get("metadata") or {}).get("name") != name:
                continue
            out: dict[str, Any] = {}
            string_data = r.inputs.get("stringData")
            wrapped = is_secret(string_data)
            for k, v in (plain(string_data) or {}).items():
                out[str(k)] = {SECRET_SIG: "secret", "value": v} if wrapped else v
            return out
        return None

    def certificate(self, secret_name: str) -> Mapping[str, Any] | None:
        """The cert-manager Certificate that fills the Secret ``secret_name`` (its spec)."""
        for r in self.plan.of_type(K8S_CERTIFICATE):
            spec = r.inputs.get("spec") or {}
            if spec.get("secretName") == secret_name:
                return spec
        return None

    def config_map(self, name: str) -> dict[str, str] | None:
        for r in self.plan.of_type(K8S_CONFIGMAP):
            if (r.inputs.get("metadata") or {}).get("name") == name:
                return {str(k): str(v) for k, v in (r.inputs.get("data") or {}).items()}
        return None


def secret_wire_values(plan: Plan) -> Iterable[Any]:
    """Every value the plan marks secret, for the lab to replace with values of its own."""

    def walk(value: Any) -> Iterable[Any]:
        if is_secret(value):
            yield plain(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            for v in value:
                yield from walk(v)

    for r in plan.resources:
        yield from walk(r.inputs)
