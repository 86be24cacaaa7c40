"""The app's cache and broker as the stack runs them: every host the app dials for its cache
(``AGENT_REDIS_URL``, ``AGENT_REDIS_SENTINELS``) and its NATS broker (``AGENT_QUEUE_URL``) is a
server of the stack, on a port that server serves, and the app speaks TLS to it exactly when the
server requires TLS.

The server behind a host is found by value: an ElastiCache endpoint and port (a replication
group's primary, reader or configuration endpoint, a cluster's node, a serverless cache's
endpoint), a Memorystore instance's host (or read endpoint) and port, or a Kubernetes Service (by
its DNS name, a pod name under a headless Service, or its cluster IP), the Service port, the
container port it targets and the server that container runs, read from its command line and the
configuration file it mounts from a ConfigMap or Secret of the stack (redis.conf: ``port`` and
``tls-port``, ``include`` not followed; nats.conf: ``port``/``listen``, a ``tls`` block and
``allow_non_tls``). What the plan does not show (a configuration written at start, a host outside
the stack) is not judged; a host the stack should answer and does not is reported: an in-cluster
name in a namespace of the stack, an ElastiCache endpoint name, or on Cloud Run a private address,
when the stack runs a server of that kind.

With Sentinel the app dials the Sentinels and the primary they announce, never the URL's host: the
Sentinels must resolve, and the URL's host is judged only for TLS, when it names a server of the
stack (the primary the set starts with).
"""

from __future__ import annotations

import ipaddress
import posixpath
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pulumi_policy import PolicyResource, Severity

from agent_app.config import Settings
from agent_app.contract import Env, NatsQueue

from . import _nats_conf as nats_conf
from ._net import is_ip
from ._plan import (
    K8S_CONFIGMAP,
    K8S_SECRET,
    K8S_SERVICE,
    Container,
    as_int,
    is_internal_name,
    k8s_data,
    k8s_object,
    k8s_servers,
    text,
)
from ._rule import SKYFLEET, Controls, Rule, StackView, as_list, get_path, norm, num, truthy
from .kubernetes import HPA, NAMESPACE, POD, WORKLOADS, containers, namespace_of, pod_spec
from .skyfleet_app import MEMORYSTORE, Resolved, app_containers

REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
CACHE_CLUSTER = "aws:elasticache/cluster:Cluster"
SERVERLESS_CACHE = "aws:elasticache/serverlessCache:ServerlessCache"
ELASTICACHE = (REPLICATION_GROUP, CACHE_CLUSTER, SERVERLESS_CACHE)
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
ELASTICACHE_SUFFIXES = (".cache.amazonaws.com", ".cache.amazonaws.com.cn")
REDIS, SENTINEL, NATS = "redis", "sentinel", "nats"
REDIS_SERVERS = ("redis-server", "valkey-server", "redis-sentinel", "valkey-sentinel")
NATS_SERVERS = ("nats-server",)
KIND_LABEL = {
    "kubernetes:apps/v1:StatefulSet": "StatefulSet",
    "kubernetes:apps/v1:Deployment": "Deployment",
    "kubernetes:apps/v1:DaemonSet": "DaemonSet",
    "kubernetes:apps/v1:ReplicaSet": "ReplicaSet",
    POD: "Pod",
}


@dataclass(frozen=True)
class Dial:
    """One connection the app makes, as its environment says."""

    var: str  # the variable naming the host
    host: str
    port: int
    kind: str  # REDIS, SENTINEL or NATS
    tls: bool  # the app speaks TLS on it
    how: str  # what in the URL says so ("redis://", "tls=false")
    dialed: bool = True  # False: the URL's host under Sentinel (its scheme counts, not its address)


@dataclass(frozen=True)
class Listener:
    """How a server serves one port: TLS only (True), plaintext only (False), either (None)."""

    label: str  # the server: "ElastiCache replication group 'x'", "the redis-server of StatefulSet 'y'"
    tls: bool | None
    why: str  # what in the plan says so


def _url_port(parts: SplitResult, default: int) -> int | None:
    try:
        return parts.port or default
    except ValueError:
        return None  # out of range: the app's own parser reports it


def _is_private_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        return False


# -- what the app dials ------------------------------------------------------------------------


def dials(settings: Settings, sentinels_unknown: bool) -> Iterator[Dial]:
    redis = urlsplit(settings.redis_url)
    tls = redis.scheme == "rediss"
    sentinels = settings.sentinel_hosts
    port = _url_port(redis, 6379)
    if redis.hostname and port is not None:
        dialed = not sentinels and not sentinels_unknown
        yield Dial(Env.REDIS_URL.value, redis.hostname, port, REDIS, tls, f"{redis.scheme}://", dialed)
    for host, sentinel_port in dict.fromkeys(sentinels):
        how = f"{Env.REDIS_URL.value} is {redis.scheme}://"
        yield Dial(Env.REDIS_SENTINELS.value, host, sentinel_port, SENTINEL, tls, how)
    queue = settings.queue
    if isinstance(queue, NatsQueue):
        for server in queue.servers:
            parts = urlsplit(server)
            port = _url_port(parts, 4222)
            if parts.hostname and port is not None:
                on = parts.scheme == "tls"
                yield Dial(Env.QUEUE_URL.value, parts.hostname, port, NATS, on, f"tls={str(on).lower()}")


# -- ElastiCache and Memorystore ---------------------------------------------------------------


def elasticache_endpoints(view: StackView) -> Iterator[tuple[PolicyResource, str, int | None]]:
    """Every address an ElastiCache resource of the stack answers on, with its port (None: the
    resource's own)."""
    for group in view.of_type(REPLICATION_GROUP):
        for key in ("primaryEndpointAddress", "readerEndpointAddress", "configurationEndpointAddress"):
            yield group, text(group.props.get(key)), None
    for cluster in view.of_type(CACHE_CLUSTER):
        yield cluster, text(cluster.props.get("clusterAddress")), None
        for node in as_list(cluster.props.get("cacheNodes")):
            yield cluster, text(get_path(node, "address")), as_int(get_path(node, "port"))
    for cache in view.of_type(SERVERLESS_CACHE):
        for key in ("endpoints", "readerEndpoints"):
            for endpoint in as_list(cache.props.get(key)):
                yield cache, text(get_path(endpoint, "address")), as_int(get_path(endpoint, "port"))


def _elasticache(view: StackView, host: str) -> tuple[Listener, int] | None:
    for r, address, port in elasticache_endpoints(view):
        members = [text(m) for m in as_list(r.props.get("memberClusters"))]  # a group's node endpoints
        if host != address and not any(m and host.startswith(f"{m}.") for m in members):
            continue
        name = text(r.props.get("id")) or r.name
        if r.resource_type == SERVERLESS_CACHE:
            return Listener(
                f"ElastiCache serverless cache {name!r}", True, "serverless caches serve only TLS"
            ), (port or 6379)
        kind = "replication group" if r.resource_type == REPLICATION_GROUP else "cluster"
        label = f"ElastiCache {kind} {name!r}"
        port = port or as_int(r.props.get("port")) or 6379
        if not truthy(r.props.get("transitEncryptionEnabled")):
            return Listener(label, False, "transitEncryptionEnabled is not true"), port
        mode = norm(r.props.get("transitEncryptionMode")) or "required"  # AWS's default once enabled
        if mode == "preferred":
            return Listener(label, None, "transitEncryptionMode preferred"), port
        return Listener(label, True, f"transitEncryptionEnabled, transitEncryptionMode {mode}"), port
    return None


def _memorystore(view: StackView, host: str) -> tuple[Listener, int | None] | None:
    for instance in view.of_type(MEMORYSTORE):
        for host_key, port_key in (("host", "port"), ("readEndpoint", "readEndpointPort")):
            if text(instance.props.get(host_key)) != host:
                continue
            label = f"Memorystore instance {text(instance.props.get('name')) or instance.name!r}"
            mode = text(instance.props.get("transitEncryptionMode")) or "DISABLED"
            listener = Listener(label, mode == "SERVER_AUTHENTICATION", f"transitEncryptionMode {mode}")
            return listener, as_int(instance.props.get(port_key))
    return None


def _cloud_unresolved(view: StackView, c: Container, dial: Dial) -> Iterator[str]:
    host = dial.host.lower().rstrip(".")
    if host.endswith(ELASTICACHE_SUFFIXES) and view.has_type(*ELASTICACHE):
        known = sorted({address for r, address, _ in elasticache_endpoints(view) if address} - {""})
        yield (
            f"{dial.var} connects to {dial.host}, which is none of the stack's ElastiCache endpoints "
            f"({', '.join(known)})"
        )
    elif c.platform == "cloudrun" and _is_private_ip(host) and view.has_type(MEMORYSTORE):
        known = sorted({text(i.props.get("host")) for i in view.of_type(MEMORYSTORE)} - {""})
        yield (
            f"{dial.var} connects to {dial.host}, which is the address of none of the stack's Memorystore "
            f"instances ({', '.join(known)})"
        )


# -- Kubernetes --------------------------------------------------------------------------------


def _cluster_readings(host: str, namespace: str) -> list[tuple[str, str, str | None]]:
    """(Service, namespace, pod) readings of an in-cluster name: ``svc``, ``svc.ns``, ``pod.svc.ns``
    (each optionally ending in ``.svc`` or ``.svc.cluster.local``), or ``pod.svc`` in the client's
    namespace (the search path's first domain)."""
    labels = host.lower().rstrip(".").split(".")
    qualified = False
    for suffix in (["svc", "cluster", "local"], ["svc"]):
        if labels[-len(suffix) :] == suffix:
            labels, qualified = labels[: -len(suffix)], True
            break
    readings: list[tuple[str, str, str | None]] = []
    if len(labels) == 1 and not qualified:
        readings.append((labels[0], namespace, None))
    elif len(labels) == 2:
        readings.append((labels[0], labels[1], None))
        if not qualified:
            readings.append((labels[1], namespace, labels[0]))
    elif len(labels) == 3:
        readings.append((labels[1], labels[2], labels[0]))
    return readings


def _stack_namespaces(view: StackView) -> set[str]:
    names = {namespace_of(r) for r in view.of_type(K8S_SERVICE, *WORKLOADS)}
    names |= {text(get_path(ns.props, "metadata", "name")) or ns.name for ns in view.of_type(*NAMESPACE)}
    return names


def cluster_service(
    view: StackView, host: str, namespace: str
) -> tuple[PolicyResource | None, str | None, list[tuple[str, str, str | None]]]:
    """The Service a host names, the pod under it the host names (if any), and the readings tried."""
    if is_ip(host):
        for s in view.of_type(K8S_SERVICE):
            spec = get_path(s.props, "spec") or {}
            if host in {text(spec.get("clusterIP")), *(text(i) for i in as_list(spec.get("clusterIPs")))}:
                return s, None, []
        return None, None, []
    readings = _cluster_readings(host, namespace)
    for name, ns, pod in readings:
        service = k8s_object(view, K8S_SERVICE, name, ns)
        if service is not None:
            return service, pod, readings
    return None, None, readings


def _replicas(view: StackView, w: PolicyResource) -> int:
    count = as_int(get_path(w.props, "spec", "replicas"))
    count = 1 if count is None else count
    name = text(get_path(w.props, "metadata", "name"))
    for hpa in view.of_type(*HPA):
        ref = get_path(hpa.props, "spec", "scaleTargetRef") or {}
        if namespace_of(hpa) == namespace_of(w) and (text(ref.get("kind")), text(ref.get("name"))) == (
            "StatefulSet",
            name,
        ):
            count = max(count, as_int(get_path(hpa.props, "spec", "maxReplicas")) or 0)
    return count


def pod_owners(
    view: StackView, workloads: list[PolicyResource], service: str, pod: str
) -> list[PolicyResource]:
    """The workloads among ``workloads`` that run a pod named ``pod`` under the headless ``service``."""
    owners = []
    for w in workloads:
        if w.resource_type == STATEFULSET:
            name = text(get_path(w.props, "metadata", "name"))
            index = pod.removeprefix(f"{name}-")
            if (
                text(get_path(w.props, "spec", "serviceName")) == service
                and index != pod
                and index.isdigit()
                and int(index) < _replicas(view, w)
            ):
                owners.append(w)
        elif w.resource_type == POD:
            spec = get_path(w.props, "spec") or {}
            if (text(spec.get("hostname")), text(spec.get("subdomain"))) == (pod, service):
                owners.append(w)
    return owners


def _pods_of(view: StackView, workloads: list[PolicyResource], service: str) -> str:
    runs = []
    for w in workloads:
        name = text(get_path(w.props, "metadata", "name"))
        if w.resource_type == STATEFULSET and text(get_path(w.props, "spec", "serviceName")) == service:
            last = _replicas(view, w) - 1
            runs.append(f"StatefulSet {name!r} runs {name}-0" + (f" to {name}-{last}" if last > 0 else ""))
    return f" ({'; '.join(runs)})" if runs else ""


def _mounted(
    view: StackView, w: PolicyResource, container: Mapping[str, Any], path: str
) -> tuple[str | None, str]:
    """The content of the file at ``path`` in the container, when a ConfigMap or Secret of the
    stack provides it, and where it comes from."""
    spec = pod_spec(w.resource_type, w.props) or {}
    namespace = namespace_of(w)
    best: tuple[str, str, str] | None = None
    for m in as_list(container.get("volumeMounts")):
        mount_path, sub_path = text(m.get("mountPath")).rstrip("/"), text(m.get("subPath"))
        if sub_path:
            if path != mount_path:
                continue
            rel = sub_path
        elif path.startswith(mount_path + "/"):
            rel = path[len(mount_path) + 1 :]
        else:
            continue
        if best is None or len(mount_path) > len(best[0]):
            best = (mount_path, rel, text(m.get("name")))
    if best is None:
        return None, ""
    _, rel, volume_name = best
    volume = next((v for v in as_list(spec.get("volumes")) if text(v.get("name")) == volume_name), {})
    sources: list[tuple[str, str, list[Any]]] = []
    if isinstance(volume.get("configMap"), Mapping):
        block = volume["configMap"]
        sources.append((K8S_CONFIGMAP, text(block.get("name")), as_list(block.get("items"))))
    elif isinstance(volume.get("secret"), Mapping):
        block = volume["secret"]
        sources.append((K8S_SECRET, text(block.get("secretName")), as_list(block.get("items"))))
    elif isinstance(volume.get("projected"), Mapping):
        for part in as_list(volume["projected"].get("sources")):
            for key, kind in (("configMap", K8S_CONFIGMAP), ("secret", K8S_SECRET)):
                if isinstance(part.get(key), Mapping):
                    block = part[key]
                    sources.append((kind, text(block.get("name")), as_list(block.get("items"))))
    for kind, name, items in sources:
        key = rel
        if items:
            listed = [text(i.get("key")) for i in items if text(i.get("path")) == rel]
            if not listed:
                continue
            key = listed[0]
        data = k8s_data(view, kind, name, namespace)
        if data is not None and key in data:
            return data[key], f"{'ConfigMap' if kind == K8S_CONFIGMAP else 'Secret'} {name!r}"
    return None, ""


@dataclass(frozen=True)
class _Serves:
    """The ports one server process listens on."""

    server: str  # "redis-server", "nats-server"
    tls_only: frozenset[int]
    plain_only: frozenset[int]
    either: frozenset[int]
    why: str


def _redis_conf(content: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in content.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if len(words) >= 2:
            settings[words[0].lower()] = words[1]
    return settings


def _redis(
    view: StackView, w: PolicyResource, c: Mapping[str, Any], binary: str, rest: list[str]
) -> _Serves | None:
    sentinel = binary.endswith("-sentinel") or "--sentinel" in rest
    settings: dict[str, str] = {}
    sources: list[str] = []
    conf_known = True
    if rest and not rest[0].startswith("-"):
        content, where = _mounted(view, w, c, rest[0])
        conf_known = content is not None
        if content is not None:
            settings.update(_redis_conf(content))
            sources.append(f"{posixpath.basename(rest[0])} of {where}")
        rest = rest[1:]
    options: dict[str, str] = {}
    for i, word in enumerate(rest):  # command-line options override the file
        if word.startswith("--") and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            options[word[2:].lower()] = rest[i + 1]
    if not conf_known and not {"port", "tls-port"} <= set(options):
        return None  # a file the plan does not hold (written at start) may set either
    if options:
        sources.append("its command line")
    settings.update(options)
    source = " and ".join(sources) or f"{binary}'s defaults"
    port = as_int(settings.get("port", 26379 if sentinel else 6379))
    tls_port = as_int(settings.get("tls-port", 0))
    if port is None or tls_port is None:
        return None
    why = f"port {port}, tls-port {tls_port} in {source}"
    server = f"{binary}{' --sentinel' if sentinel and not binary.endswith('-sentinel') else ''}"
    return _Serves(server, frozenset({tls_port} - {0}), frozenset({port} - {0, tls_port}), frozenset(), why)


def _nats(view: StackView, w: PolicyResource, c: Mapping[str, Any], rest: list[str]) -> _Serves | None:
    conf: Mapping[str, Any] = {}
    source = ""  # the configuration file, when one is given
    cli_port: int | None = None
    cli_tls = False
    for i, word in enumerate(rest):
        value = rest[i + 1] if i + 1 < len(rest) else ""
        if word in ("-c", "--config"):
            content, where = _mounted(view, w, c, value)
            if content is None:
                return None
            try:
                conf = nats_conf.parse(content)
            except nats_conf.NatsConfError:
                return None
            source = f"{posixpath.basename(value)} of {where}"
        elif word in ("-p", "--port"):
            cli_port = as_int(value)
        elif word in ("--tls", "--tlsverify"):
            cli_tls = True
    listen = text(conf.get("listen")).rpartition(":")[2] if conf.get("listen") is not None else ""
    port = cli_port or as_int(conf.get("port")) or as_int(listen) or 4222
    tls = cli_tls or isinstance(conf.get("tls"), Mapping)
    if tls and truthy(conf.get("allow_non_tls")):
        return _Serves(
            "nats-server", frozenset(), frozenset(), frozenset({port}), f"allow_non_tls in {source}"
        )
    if tls:
        why = f"a tls block without allow_non_tls in {source}" if source else "--tls on its command line"
        return _Serves("nats-server", frozenset({port}), frozenset(), frozenset(), why)
    why = f"no tls block in {source}" if source else "no configuration file and no --tls on its command line"
    return _Serves("nats-server", frozenset(), frozenset({port}), frozenset(), why)


def _serves(view: StackView, w: PolicyResource, c: Mapping[str, Any]) -> _Serves | None:
    """The ports the container's server listens on, from its command line and configuration."""
    words = [str(x) for x in [*as_list(c.get("command")), *as_list(c.get("args"))]]
    for i, word in enumerate(words):
        binary = posixpath.basename(word)
        if binary in REDIS_SERVERS:
            return _redis(view, w, c, binary, words[i + 1 :])
        if binary in NATS_SERVERS:
            return _nats(view, w, c, words[i + 1 :])
    return None  # the image's own entrypoint, or a shell: not read


def target_port(w: PolicyResource, target: Any) -> tuple[int | None, str | None, list[Mapping[str, Any]]]:
    """The container port a Service port's ``targetPort`` names on the pods of ``w``: its number
    and its name (None: not known), and the containers that declare it."""
    spec = pod_spec(w.resource_type, w.props) or {}
    by_name = isinstance(target, str) and not target.isdigit()
    port = None if by_name else as_int(target)
    name = str(target) if by_name else None
    declared = []
    for c in containers(spec, init=False):
        for p in as_list(c.get("ports")):
            if (by_name and text(p.get("name")) == target) or (
                not by_name and as_int(p.get("containerPort")) == port
            ):
                declared.append(c)
                port = as_int(p.get("containerPort"))
                name = text(p.get("name")) or name
    return port, name, declared


def _listener(view: StackView, w: PolicyResource, target: Any) -> Listener | str | None:
    """How the pods of ``w`` serve the container port a Service port targets (a str: nothing
    listens there; None: not known)."""
    found = containers(pod_spec(w.resource_type, w.props) or {}, init=False)
    port, _, declared = target_port(w, target)
    if port is None:
        return None  # a port name no container declares: not this rule's finding
    where = (
        f"{KIND_LABEL.get(w.resource_type, w.resource_type)} {text(get_path(w.props, 'metadata', 'name'))!r}"
    )
    for c in declared or found:
        serves = _serves(view, w, c)
        if serves is None:
            continue
        label = f"the {serves.server} of {where}"
        if port in serves.tls_only:
            return Listener(label, True, serves.why)
        if port in serves.plain_only:
            return Listener(label, False, serves.why)
        if port in serves.either:
            return Listener(label, None, serves.why)
        if declared:
            return (
                f"container port {port} of {where}, on which its {serves.server} does not listen "
                f"({serves.why})"
            )
    return None


def _kubernetes(view: StackView, c: Container, dial: Dial) -> Iterator[str | Listener]:
    namespace = c.scope or "default"
    service, pod, readings = cluster_service(view, dial.host, namespace)
    if service is None:
        internal = is_internal_name(dial.host) and dial.host.lower() != "localhost" and not is_ip(dial.host)
        stack_namespaces = _stack_namespaces(view)
        if dial.dialed and internal and readings and all(ns in stack_namespaces for _, ns, _ in readings):
            looked = " or ".join(
                f"Service {name!r} in namespace {ns!r}" + (f" with a pod {p!r}" if p else "")
                for name, ns, p in readings
            )
            yield f"{dial.var} connects to {dial.host}, which no Service of the stack answers (no {looked})"
        return
    name = text(get_path(service.props, "metadata", "name"))
    ns = namespace_of(service)
    ports = as_list(get_path(service.props, "spec", "ports"))
    entry = next((p for p in ports if as_int(p.get("port")) == dial.port), None)
    if entry is None:
        if dial.dialed:
            served = ", ".join(num(p.get("port")) for p in ports) or "none"
            yield (
                f"{dial.var} connects to {dial.host}:{dial.port}, but Service {name!r} serves no port "
                f"{dial.port} (its ports: {served})"
            )
        return
    workloads = k8s_servers(view, f"{name}.{ns}.svc", None)  # the pods its selector picks
    if pod is not None and workloads:
        owners = pod_owners(view, workloads, name, pod)
        if not owners:
            if dial.dialed:
                yield (
                    f"{dial.var} connects to {dial.host}, but no pod {pod!r} runs under Service {name!r}"
                    f"{_pods_of(view, workloads, name)}"
                )
            return
        workloads = owners
    target = entry.get("targetPort")
    target = entry.get("port") if target is None else target
    for w in workloads:
        found = _listener(view, w, target)
        if isinstance(found, str):
            if dial.dialed:
                yield (
                    f"{dial.var} connects to {dial.host}:{dial.port}, which Service {name!r} forwards to "
                    f"{found}"
                )
        elif found is not None:
            yield found


# -- the check ---------------------------------------------------------------------------------

FIX_NEEDS_TLS = {
    REDIS: "use rediss://",
    SENTINEL: f"use rediss:// in {Env.REDIS_URL.value} (it sets TLS for the Sentinels as for the primary)",
    NATS: f"set tls=true in the URL (and {Env.QUEUE_CA_FILE.value} for a private CA)",
}
FIX_NO_TLS = {
    REDIS: "serve TLS there, or use redis://",
    SENTINEL: f"serve TLS there, or use redis:// in {Env.REDIS_URL.value}",
    NATS: "add a tls block to the server's configuration, or set tls=false in the URL",
}


def _compare(dial: Dial, listener: Listener) -> Iterator[str]:
    where = f"{dial.host}:{dial.port}"
    if listener.tls is True and not dial.tls:
        yield (
            f"{dial.var} connects to {where} without TLS ({dial.how}), but {listener.label} serves only TLS "
            f"there ({listener.why}): {FIX_NEEDS_TLS[dial.kind]}"
        )
    elif listener.tls is False and dial.tls:
        yield (
            f"{dial.var} connects to {where} with TLS ({dial.how}), but {listener.label} serves no TLS there "
            f"({listener.why}): {FIX_NO_TLS[dial.kind]}"
        )


def _dial_problems(view: StackView, c: Container, dial: Dial) -> Iterator[str]:
    if dial.kind == REDIS:
        cloud = _elasticache(view, dial.host) or _memorystore(view, dial.host)
        if cloud is not None:
            listener, port = cloud
            if port is not None and port != dial.port:
                if dial.dialed:
                    tls = " (TLS)" if listener.tls else ""
                    yield (
                        f"{dial.var} connects to {dial.host}:{dial.port}, but {listener.label} serves port "
                        f"{port}{tls} ({listener.why})"
                    )
                return
            yield from _compare(dial, listener)
            return
    if c.platform == "kubernetes":
        for found in _kubernetes(view, c, dial):
            if isinstance(found, str):
                yield found
            else:
                yield from _compare(dial, found)
        return
    if dial.kind == REDIS and dial.dialed:
        yield from _cloud_unresolved(view, c, dial)


def _endpoints(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, role in app_containers(view):
        resolved = Resolved(view, c)
        if resolved.settings is None:
            continue  # skyfleet-app-env reports why: a required setting is missing or malformed
        sentinels_unknown = Env.REDIS_SENTINELS.value in resolved.unknown
        problems = [
            p for d in dials(resolved.settings, sentinels_unknown) for p in _dial_problems(view, c, d)
        ]
        for problem in dict.fromkeys(problems):
            yield f"{c.label} ({role or 'app'}): {problem}", c.resource.urn


RULES = [
    Rule(
        "skyfleet-dependency-endpoints",
        "The app's cache and broker URLs (AGENT_REDIS_URL, AGENT_REDIS_SENTINELS, a nats:// "
        "AGENT_QUEUE_URL) name a server the stack runs, on a port it serves, and use TLS exactly when that "
        "server requires it.",
        Severity.HIGH,
        Controls(nist=("CM-6", "SC-8"), soc2=("CC6.7", "CC8.1"), pci=("4.2.1",)),
        "Point the variable at the stack's server (the ElastiCache replication group's primary endpoint and "
        "port, the Memorystore instance's host and port, a Kubernetes Service of the stack and one of its "
        "ports); use rediss:// (tls=true in a NATS URL) when the server serves only TLS, and redis:// "
        "(tls=false) when it serves none.",
        stack_check=_endpoints,
        group=SKYFLEET,
    ),
]

__all__ = ["RULES"]
