"""Readers the deployability rules share: the resource graph, the containers of a plan on each
platform (ECS task definitions, Cloud Run services, Kubernetes workloads) with their
environment and mounts, secret values the plan knows, and the Kubernetes objects behind an
in-cluster host name.

Everything is read through the policy SDK's proxy (unknowns propagate) and found by value and
reference (ids, ARNs, Kubernetes names and label selectors), never by Pulumi resource names.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import ipaddress
import json
import posixpath
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import PolicyResource

from ._docs import DocumentError, container_definitions, load_json
from ._rule import StackView, as_list, get_path
from .kubernetes import WORKLOADS, containers, pod_labels, pod_spec

ECS_TASK = "aws:ecs/taskDefinition:TaskDefinition"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
K8S_SERVICE = "kubernetes:core/v1:Service"
K8S_SECRET = "kubernetes:core/v1:Secret"
K8S_CONFIGMAP = "kubernetes:core/v1:ConfigMap"
CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"
AWS_SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
GCP_SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
KMS_KEY = "aws:kms/key:Key"
KMS_ALIAS = "aws:kms/alias:Alias"


# -- the graph ---------------------------------------------------------------------------------


class Graph:
    """Transitive dependencies (explicit and through properties), computed once per resource."""

    def __init__(self, view: StackView) -> None:
        self.view = view
        self._closure: dict[str, frozenset[str]] = {}

    def closure(self, resource: PolicyResource) -> frozenset[str]:
        if resource.urn in self._closure:
            return self._closure[resource.urn]
        seen: set[str] = set()
        stack = [resource]
        while stack:
            current = stack.pop()
            direct = list(current.dependencies)
            for deps in current.property_dependencies.values():
                direct += deps
            for dep in direct:
                if dep.urn not in seen:
                    seen.add(dep.urn)
                    stack.append(dep)
        self._closure[resource.urn] = frozenset(seen)
        return self._closure[resource.urn]

    def depends_on(self, resource: PolicyResource, target: PolicyResource) -> bool:
        return target.urn in self.closure(resource)


def as_int(value: Any) -> int | None:
    """A planned number (maybe a string or a float) as an int; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# -- containers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """Where a secret-sourced value comes from."""

    store: str  # "secretsmanager", "ssm", "secretmanager" (GCP), "kubernetes"
    name: str  # ARN, secret id/path, or Kubernetes Secret name
    key: str | None = None  # JSON key (ECS), version (GCP), data key (Kubernetes)
    scope: str | None = None  # GCP project or Kubernetes namespace


@dataclass(frozen=True)
class EnvValue:
    """One environment variable: a plain value, a secret reference, or filled in by the platform."""

    kind: str  # "value", "secret", "platform"
    value: str | None = None
    secret: SecretRef | None = None


@dataclass(frozen=True)
class Source:
    """What one volume (or one projected part of it) puts in the filesystem."""

    kind: str  # "secret", "configmap", "empty", "bind", "other"
    name: str | None = None  # the Secret / ConfigMap / Secret Manager secret
    items: tuple[str, ...] | None = None  # relative paths it provides; None: all its keys
    scope: str | None = None


@dataclass(frozen=True)
class Mount:
    path: str
    read_only: bool
    volume: str
    sources: tuple[Source, ...]
    sub_path: str | None = None


@dataclass
class Container:
    resource: PolicyResource
    platform: str  # "ecs", "cloudrun", "kubernetes"
    name: str
    command: tuple[str, ...]
    env: dict[str, EnvValue]
    mounts: list[Mount]
    raw: Mapping[str, Any]
    scope: str | None = None  # Kubernetes namespace, GCP project
    init: bool = False
    task: Mapping[str, Any] = field(default_factory=dict)  # ECS: the whole task definition
    # The platform may add variables the plan does not list (ECS environmentFiles, Kubernetes
    # envFrom a ConfigMap or Secret outside the stack): a "missing" variable may not be missing.
    opaque_env: bool = False

    @property
    def label(self) -> str:
        return f"container {self.name!r}"


def _ecs_volume(volume: Mapping[str, Any]) -> Source:
    if volume.get("efsVolumeConfiguration") or volume.get("fsxWindowsFileServerVolumeConfiguration"):
        return Source("other")
    if volume.get("dockerVolumeConfiguration") or get_path(volume, "host", "sourcePath"):
        return Source("other")
    return Source("bind")  # task storage: empty, owned by root, shared by the task's containers


def _ecs(resource: PolicyResource) -> Iterator[Container]:
    try:
        defs = container_definitions(resource.props.get("containerDefinitions"))
    except DocumentError:
        return  # a malformed document is another rule's finding
    volumes = {text(v.get("name")): _ecs_volume(v) for v in as_list(resource.props.get("volumes"))}
    for d in defs:
        env: dict[str, EnvValue] = {}
        for e in as_list(d.get("environment")):
            env[text(e.get("name"))] = EnvValue("value", str(e.get("value", "")))
        for s in as_list(d.get("secrets")):
            ref = text(s.get("valueFrom"))
            env[text(s.get("name"))] = EnvValue("secret", secret=ecs_secret_ref(ref))
        mounts = [
            Mount(
                text(m.get("containerPath")),
                bool(m.get("readOnly")),
                text(m.get("sourceVolume")),
                (volumes.get(text(m.get("sourceVolume")), Source("other")),),
            )
            for m in as_list(d.get("mountPoints"))
        ]
        command = tuple(str(c) for c in [*as_list(d.get("entryPoint")), *as_list(d.get("command"))])
        opaque = bool(as_list(d.get("environmentFiles")))
        yield Container(
            resource,
            "ecs",
            text(d.get("name")),
            command,
            env,
            mounts,
            d,
            task=resource.props,
            opaque_env=opaque,
        )


def ecs_secret_ref(value_from: str) -> SecretRef:
    """A container's ``secrets[].valueFrom``: a Secrets Manager ARN (optionally with
    ``:json-key:version-stage:version-id``), a Parameter Store ARN, or a parameter name."""
    parts = value_from.split(":")
    if len(parts) >= 7 and parts[2] == "secretsmanager":
        key = parts[7] if len(parts) > 7 and parts[7] else None
        return SecretRef("secretsmanager", ":".join(parts[:7]), key)
    return SecretRef("ssm", value_from)


def _run(resource: PolicyResource) -> Iterator[Container]:
    project = text(resource.props.get("project")) or None
    volumes: dict[str, Source] = {}
    for v in as_list(get_path(resource.props, "template", "volumes")):
        secret = v.get("secret")
        if isinstance(secret, Mapping):
            name = text(secret.get("secret"))
            items = as_list(secret.get("items"))
            provided = tuple(text(i.get("path")) for i in items) if items else (name.rsplit("/", 1)[-1],)
            volumes[text(v.get("name"))] = Source("secret", name, provided, project)
        elif v.get("emptyDir") is not None:
            volumes[text(v.get("name"))] = Source("empty")
        else:
            volumes[text(v.get("name"))] = Source("other")
    for c in as_list(get_path(resource.props, "template", "containers")):
        env: dict[str, EnvValue] = {}
        for e in as_list(c.get("envs")):
            ref = get_path(e, "valueSource", "secretKeyRef")
            if isinstance(ref, Mapping):
                secret = SecretRef(
                    "secretmanager", text(ref.get("secret")), text(ref.get("version")) or None, project
                )
                env[text(e.get("name"))] = EnvValue("secret", secret=secret)
            else:
                env[text(e.get("name"))] = EnvValue("value", str(e.get("value", "")))
        mounts = [
            Mount(
                text(m.get("mountPath")),
                True,
                text(m.get("name")),
                (volumes.get(text(m.get("name")), Source("other")),),
            )
            for m in as_list(c.get("volumeMounts"))
        ]
        command = tuple(str(x) for x in [*as_list(c.get("commands")), *as_list(c.get("args"))])
        yield Container(resource, "cloudrun", text(c.get("name")), command, env, mounts, c, scope=project)


def _k8s_sources(volume: Mapping[str, Any], namespace: str | None) -> tuple[Source, ...]:
    def items(block: Mapping[str, Any]) -> tuple[str, ...] | None:
        listed = as_list(block.get("items"))
        return tuple(text(i.get("path")) for i in listed) if listed else None

    if isinstance(volume.get("secret"), Mapping):
        block = volume["secret"]
        return (Source("secret", text(block.get("secretName")), items(block), namespace),)
    if isinstance(volume.get("configMap"), Mapping):
        block = volume["configMap"]
        return (Source("configmap", text(block.get("name")), items(block), namespace),)
    if volume.get("emptyDir") is not None:
        return (Source("empty"),)
    if isinstance(volume.get("projected"), Mapping):
        out: list[Source] = []
        for part in as_list(volume["projected"].get("sources")):
            if isinstance(part.get("secret"), Mapping):
                out.append(
                    Source("secret", text(part["secret"].get("name")), items(part["secret"]), namespace)
                )
            elif isinstance(part.get("configMap"), Mapping):
                out.append(
                    Source(
                        "configmap", text(part["configMap"].get("name")), items(part["configMap"]), namespace
                    )
                )
            else:
                out.append(Source("other"))
        return tuple(out)
    return (Source("other"),)


def _k8s_env_from(view: StackView, c: Mapping[str, Any], namespace: str) -> tuple[dict[str, EnvValue], bool]:
    """Variables from ``envFrom`` (all keys of a ConfigMap or Secret, with an optional prefix);
    whether some source is outside the stack."""
    env: dict[str, EnvValue] = {}
    opaque = False
    for source in as_list(c.get("envFrom")):
        prefix = text(source.get("prefix"))
        config_map, secret = source.get("configMapRef"), source.get("secretRef")
        if isinstance(config_map, Mapping):
            data = k8s_data(view, K8S_CONFIGMAP, text(config_map.get("name")), namespace)
            opaque = opaque or data is None
            env.update({prefix + k: EnvValue("value", v) for k, v in (data or {}).items()})
        elif isinstance(secret, Mapping):
            name = text(secret.get("name"))
            keys = k8s_keys(view, K8S_SECRET, name, namespace)
            opaque = opaque or keys is None
            for key in keys or ():
                env[prefix + key] = EnvValue("secret", secret=SecretRef("kubernetes", name, key, namespace))
    return env, opaque


def _k8s(view: StackView, resource: PolicyResource) -> Iterator[Container]:
    spec = pod_spec(resource.resource_type, resource.props)
    if spec is None:
        return
    namespace = text(get_path(resource.props, "metadata", "namespace")) or "default"
    volumes = {text(v.get("name")): _k8s_sources(v, namespace) for v in as_list(spec.get("volumes"))}
    main = len(as_list(spec.get("containers")))
    for index, c in enumerate(containers(spec, init=True)):
        env, opaque = _k8s_env_from(view, c, namespace)  # explicit env overrides envFrom
        for e in as_list(c.get("env")):
            name = text(e.get("name"))
            ref = get_path(e, "valueFrom", "secretKeyRef")
            if isinstance(ref, Mapping):
                secret = SecretRef("kubernetes", text(ref.get("name")), text(ref.get("key")), namespace)
                env[name] = EnvValue("secret", secret=secret)
            elif e.get("valueFrom") is not None:
                env[name] = EnvValue("platform")
            else:
                env[name] = EnvValue("value", str(e.get("value", "")))
        mounts = [
            Mount(
                text(m.get("mountPath")),
                bool(m.get("readOnly")),
                text(m.get("name")),
                volumes.get(text(m.get("name")), (Source("other"),)),
                text(m.get("subPath")) or None,
            )
            for m in as_list(c.get("volumeMounts"))
        ]
        command = tuple(str(x) for x in [*as_list(c.get("command")), *as_list(c.get("args"))])
        yield Container(
            resource,
            "kubernetes",
            text(c.get("name")),
            command,
            env,
            mounts,
            c,
            namespace,
            index >= main,
            opaque_env=opaque,
        )


def plan_containers(
    view: StackView, platforms: tuple[str, ...] = ("ecs", "cloudrun", "kubernetes")
) -> Iterator[Container]:
    """The containers of every workload on the given platforms (read only those: a value that is
    unknown in a preview elsewhere must not stop a check that does not need it)."""
    if "ecs" in platforms:
        for r in view.of_type(ECS_TASK):
            yield from _ecs(r)
    if "cloudrun" in platforms:
        for r in view.of_type(RUN_SERVICE):
            yield from _run(r)
    if "kubernetes" in platforms:
        for r in view.of_type(*WORKLOADS):
            yield from _k8s(view, r)


# -- secret values the plan knows ---------------------------------------------------------------


def secret_value(view: StackView, ref: SecretRef) -> str | None:
    """The value behind a secret reference when the stack itself holds it, else None."""
    if ref.store == "secretsmanager":
        for v in view.of_type(AWS_SECRET_VERSION):
            if text(v.props.get("secretId")) == ref.name and isinstance(v.props.get("secretString"), str):
                value = v.props["secretString"]
                if ref.key is None:
                    return value
                try:
                    doc = json.loads(value)
                except json.JSONDecodeError:
                    return None
                return str(doc[ref.key]) if isinstance(doc, dict) and ref.key in doc else None
        return None
    if ref.store == "secretmanager":
        short = ref.name.rsplit("/", 1)[-1]
        for v in view.of_type(GCP_SECRET_VERSION):
            secret = text(v.props.get("secret"))
            if secret.rsplit("/", 1)[-1] == short and isinstance(v.props.get("secretData"), str):
                return v.props["secretData"]
        return None
    if ref.store == "kubernetes" and ref.key is not None:
        data = k8s_data(view, K8S_SECRET, ref.name, ref.scope)
        return None if data is None else data.get(ref.key)
    return None


def k8s_object(view: StackView, kind: str, name: str, namespace: str | None) -> PolicyResource | None:
    for r in view.of_type(kind):
        meta = r.props.get("metadata") or {}
        if text(meta.get("name")) == name and (text(meta.get("namespace")) or "default") == (
            namespace or "default"
        ):
            return r
    return None


def k8s_keys(view: StackView, kind: str, name: str, namespace: str | None) -> set[str] | None:
    """The keys of a Secret or ConfigMap in the stack, without reading its values (None: not in
    the stack)."""
    obj = k8s_object(view, kind, name, namespace)
    if obj is None:
        return None
    return {str(k) for field in ("data", "stringData") for k in (obj.props.get(field) or {})}


def k8s_data(view: StackView, kind: str, name: str, namespace: str | None) -> dict[str, str] | None:
    """The keys and values of a Secret or ConfigMap in the stack (None: not in the stack)."""
    obj = k8s_object(view, kind, name, namespace)
    if obj is None:
        return None
    out: dict[str, str] = {}
    for key, value in (obj.props.get("data") or {}).items():
        if kind == K8S_SECRET:
            try:
                out[key] = base64.b64decode(str(value)).decode(errors="replace")
            except (binascii.Error, ValueError):
                out[key] = ""
        else:
            out[key] = str(value)
    for key, value in (obj.props.get("stringData") or {}).items():
        out[key] = str(value)
    return out


# -- what a mount provides -------------------------------------------------------------------------


def provides(view: StackView, container: Container, path: str) -> tuple[bool, str]:
    """Whether the container's mounts put a file at ``path``; the reason when they do not."""
    if not path.startswith("/"):
        return False, f"{path} is not an absolute path"
    best: tuple[Mount, str] | None = None
    for m in container.mounts:
        mount_path = m.path.rstrip("/")
        if m.sub_path and path == mount_path:
            best = (m, m.sub_path)
        elif path.startswith(mount_path + "/") and (best is None or len(mount_path) > len(best[0].path)):
            best = (m, posixpath.relpath(path, mount_path))
    if best is None:
        return False, f"no volume is mounted at or above {path}"
    mount, rel = best
    for source in mount.sources:
        if source.kind in ("empty", "bind"):
            continue
        if source.kind == "other":
            return True, ""
        if source.items is not None:
            if rel in source.items:
                return True, ""
            continue
        kind = K8S_SECRET if source.kind == "secret" else K8S_CONFIGMAP
        on_k8s = container.platform == "kubernetes"
        keys = k8s_keys(view, kind, source.name or "", source.scope) if on_k8s else None
        if keys is None or rel in keys:
            return True, ""
    names = ", ".join(sorted({s.name or s.kind for s in mount.sources}))
    return False, f"the volume mounted at {mount.path} ({names}) has no {rel}"


# -- in-cluster names -----------------------------------------------------------------------------


def is_internal_name(name: str) -> bool:
    """A name only cluster DNS (or the host itself) answers: single-label, *.svc, *.cluster.local,
    localhost, or a private / loopback address."""
    host = name.lower().rstrip(".").removeprefix("*.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host.endswith((".svc", ".cluster.local", ".local")) or host == "localhost"
    return address.is_private or address.is_loopback


def name_covers(pattern: str, host: str) -> bool:
    """A certificate name (possibly ``*.`` wildcard of one label) covers ``host``."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def k8s_servers(view: StackView, host: str, namespace: str | None) -> list[PolicyResource]:
    """The workloads behind an in-cluster host name (``svc``, ``svc.ns``, ``svc.ns.svc[.cluster.local]``,
    or a pod name under a headless service), through the Service's label selector."""
    labels = host.lower().rstrip(".").split(".")
    for suffix in (["svc", "cluster", "local"], ["svc"]):
        if labels[-len(suffix) :] == suffix:
            labels = labels[: -len(suffix)]
            break
    candidates: list[tuple[str, str | None]] = []
    if len(labels) == 1:
        candidates.append((labels[0], namespace))
    elif len(labels) == 2:
        candidates += [(labels[0], labels[1]), (labels[1], namespace)]
    elif len(labels) == 3:
        candidates.append((labels[1], labels[2]))  # <pod>.<headless service>.<namespace>
    for service_name, ns in candidates:
        service = k8s_object(view, K8S_SERVICE, service_name, ns)
        if service is None:
            continue
        selector = get_path(service.props, "spec", "selector") or {}
        if not selector:
            return []
        return [
            w
            for w in view.of_type(*WORKLOADS)
            if (text(get_path(w.props, "metadata", "namespace")) or "default") == (ns or "default")
            and _selects(selector, w)
        ]
    return []


# Labels a controller adds to the pods it creates (not in the template): value check per key.
_CONTROLLER_LABELS = {
    "statefulset.kubernetes.io/pod-name": lambda w, v: v.startswith(
        text(get_path(w.props, "metadata", "name")) + "-"
    ),
    "apps.kubernetes.io/pod-index": lambda w, v: v.isdigit(),
    "controller-revision-hash": lambda w, v: True,
    "pod-template-hash": lambda w, v: True,
}


def _selects(selector: Mapping[str, Any], workload: PolicyResource) -> bool:
    labels = pod_labels(workload.resource_type, workload.props)
    for key, value in selector.items():
        if key in labels:
            if labels.get(key) != value:
                return False
        elif key not in _CONTROLLER_LABELS or not _CONTROLLER_LABELS[key](workload, str(value)):
            return False
    return True


def served_certificates(view: StackView, workloads: list[PolicyResource]) -> list[PolicyResource]:
    """cert-manager Certificates whose Secret the given workloads mount."""
    found: list[PolicyResource] = []
    for w in workloads:
        spec = pod_spec(w.resource_type, w.props) or {}
        namespace = text(get_path(w.props, "metadata", "namespace")) or "default"
        for volume in as_list(spec.get("volumes")):
            for source in _k8s_sources(volume, namespace):
                if source.kind != "secret":
                    continue
                for cert in view.of_type(CERTIFICATE):
                    same_ns = (text(get_path(cert.props, "metadata", "namespace")) or "default") == namespace
                    if same_ns and text(get_path(cert.props, "spec", "secretName")) == source.name:
                        found.append(cert)
    return found


def certificate_names(cert: PolicyResource) -> list[str]:
    spec = cert.props.get("spec") or {}
    names = [text(n) for n in as_list(spec.get("dnsNames"))]
    names += [text(n) for n in as_list(spec.get("ipAddresses"))]
    if spec.get("commonName"):
        names.append(text(spec.get("commonName")))
    return names


def kms_key(view: StackView, ref: str) -> PolicyResource | None:
    """The KMS key behind a key id, key ARN, alias name or alias ARN, when it is in the stack."""
    for alias in view.of_type(KMS_ALIAS):
        if ref in (text(alias.props.get("name")), text(alias.props.get("arn"))):
            ref = text(alias.props.get("targetKeyId"))
    for key in view.of_type(KMS_KEY):
        if ref in view.ids_of(key) or ref == text(key.props.get("keyId")):
            return key
    return None


def key_grants(key: PolicyResource, service: str, action: str) -> list[dict[str, Any]] | None:
    """The statements of a KMS key's policy that allow a service principal (a glob:
    ``logs.*.amazonaws.com``) ``action``, a ``*`` principal included; None when one denies it.
    A key without a policy in the plan has the default one, which names only the account."""
    doc = json_doc(key.props.get("policy"), "policy") if key.props.get("policy") else None
    if not isinstance(doc, dict):
        return []
    allowed: list[dict[str, Any]] = []
    for s in as_list(doc.get("Statement")):
        if not isinstance(s, dict):
            continue
        principal = s.get("Principal")
        services = as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if principal != "*" and not any(fnmatch.fnmatchcase(str(p), service) for p in services):
            continue
        actions = [str(a).lower() for a in as_list(s.get("Action"))]
        if any(fnmatch.fnmatchcase(action.lower(), a) for a in actions):
            if s.get("Effect") == "Deny":
                return None
            if s.get("Effect") == "Allow":
                allowed.append(s)
    return allowed


def condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    """A statement's ``Condition``: operators on keys the context knows are evaluated; anything
    else is assumed to hold."""
    for operator, tests in condition.items():
        if not isinstance(tests, Mapping):
            continue
        op = str(operator).removeprefix("ForAnyValue:").removeprefix("ForAllValues:").removesuffix("IfExists")
        for key, expected in tests.items():
            if key not in context:
                continue
            values, actual = tuple(str(v) for v in as_list(expected)), context[key]
            if op in ("StringEquals", "ArnEquals") and actual not in values:
                return False
            if op in ("StringLike", "ArnLike") and not any(fnmatch.fnmatchcase(actual, v) for v in values):
                return False
            if op in ("StringNotEquals", "ArnNotEquals") and actual in values:
                return False
    return True


def condition_admits(
    statement: dict[str, Any], condition_key: str, matches: Callable[[str, bool], bool]
) -> bool:
    """The statement's tests of ``condition_key`` (an equality or like test, ``IfExists`` or not)
    all admit the request: ``matches(value, wildcards)`` for some value of each. A statement that
    does not test that key admits it; negated and other tests are not judged. For a request the
    plan knows only in part (a log group's name, not the account it is created in); with the
    whole value, :func:`condition_holds`."""
    condition = statement.get("Condition")
    if not isinstance(condition, dict):
        return True
    for operator, tests in condition.items():
        if not isinstance(tests, dict):
            continue
        op = str(operator).removesuffix("IfExists")
        if op not in ("ArnEquals", "ArnLike", "StringEquals", "StringLike"):
            continue
        for key, values in tests.items():
            if str(key).lower() != condition_key.lower():
                continue
            # IAM's ArnEquals takes wildcards as ArnLike does; StringEquals takes none.
            if not any(matches(str(v), op != "StringEquals") for v in as_list(values)):
                return False
    return True


def json_doc(value: Any, what: str) -> Any:
    """A JSON document property, or None when it is not one (other rules report malformed ones)."""
    try:
        return load_json(value, what)
    except DocumentError:
        return None
