"""An ``onprem`` site stack in the lab: every pod the plan's Kubernetes objects run.

- **Pods**: Deployments, StatefulSets (with their stable names ``<pod>.<service>.<ns>.svc``
  and a volume per pod that outlives a restart) and Jobs, every container as its pod template
  says: the Redis pods run the plan's init script, Redis and Sentinel; the NATS pods the plan's
  server config. Third-party images run this machine's build of the same server.
- **Services**: their names resolve to the pods they select (all of them; a headless Service's
  pods by name too).
- **cert-manager**: the stack names two ClusterIssuers; the in-cluster one is a private CA whose
  ``ca.crt`` pods mount, the Ingress one stands for a public CA. A Certificate is issued with
  exactly its ``dnsNames``.
- **Ingress**: ingress-nginx's behaviour, from the plan (see ``skyfleet.lab.lb``).
- The Job that creates the JetStream streams runs ``nats`` (nats-box), which this machine does
  not have: the lab applies its stream files through the JetStream API, as ``nats stream add``
  does, with the Job's own address, CA and credentials.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping

from skyfleet.lab.errors import LabError
from skyfleet.lab.lb import Backend, Check, LoadBalancerSpec
from skyfleet.lab.model import PodSpec, plain, pods
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.targets.base import Context, SiteTwin, redis_version

SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"
STREAMS_TIMEOUT = 60
NGINX = "nginx.ingress.kubernetes.io/"
# ingress-nginx's defaults where the Ingress sets no annotation (seconds; a size as nginx's
# client_max_body_size takes it), from its config.go (NewDefault).
NGINX_TIMEOUTS = {"proxy-connect-timeout": 5, "proxy-read-timeout": 60, "proxy-send-timeout": 60}
NGINX_BODY_SIZE = "1m"
# Keys of the controller's ConfigMap, which no plan holds (the stack names them as prerequisites
# of the cluster): ingress-nginx's defaults. client-header-timeout / client-body-timeout (nginx's
# send_timeout to a client is 60 s too), keep-alive, and hsts with hsts-max-age and
# hsts-include-subdomains (true) as "max-age=<hsts-max-age>; includeSubDomains".
NGINX_CLIENT_TIMEOUT = 60
NGINX_KEEP_ALIVE = 75
NGINX_HSTS = "max-age=31536000; includeSubDomains"
_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def declare(site: SiteTwin, ctx: Context) -> None:
    site.app_pods = [site.cap(p, ctx.max_replicas) for p in pods(site.plan)]
    site.service_pods = ["lb"]
    cluster = site.config("cluster") or {}
    internal = str(cluster.get("internalIssuer", ""))
    ingress = str(cluster.get("ingressIssuer", ""))
    site.issuers[ingress] = site.issuers["public"]
    if internal and internal != ingress:
        site.issuers[internal] = CertificateAuthority(f"cert-manager ClusterIssuer {internal}")
    # The Job needs a `nats` CLI; the lab does its work instead (see render).
    site.app_pods = [p for p in site.app_pods if not (p.kind == "job" and _is_streams_job(p))]


def _is_streams_job(spec: PodSpec) -> bool:
    return any("nats stream" in " ".join(c.command) for c in spec.containers)


def _selected(spec: PodSpec, selector: Mapping[str, str]) -> bool:
    return bool(selector) and all(spec.labels.get(k) == v for k, v in selector.items())


def render(site: SiteTwin, ctx: Context, addresses: Mapping[str, str]) -> None:
    plan = site.plan
    namespace = next((p.namespace for p in site.app_pods if p.namespace), "default")
    site.search_domains = [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"]

    # Service names, and the stable names of StatefulSet pods.
    for svc in plan.of_type(SERVICE):
        meta, spec = svc.inputs.get("metadata") or {}, svc.inputs.get("spec") or {}
        name = str(meta.get("name"))
        selector = {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}
        members = [
            f"{p.name}-{i}" for p in site.app_pods if _selected(p, selector) for i in range(p.replicas)
        ]
        for form in (f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"):
            site.names[form] = members
        if spec.get("clusterIP") == "None":
            for pod in members:
                for form in (f"{pod}.{name}.{namespace}.svc", f"{pod}.{name}.{namespace}.svc.cluster.local"):
                    site.names[form] = [pod]

    site.deviations.append(
        f"Redis and NATS pods run this machine's redis-server {redis_version()} and nats-server, not "
        "their images' builds; NetworkPolicies are not enforced; preStop hooks are not run; the NATS "
        "metrics sidecar is not run"
    )

    # The stream Job's work, done by the lab with the Job's own settings.
    job = next((r for r in plan.of_type("kubernetes:batch/v1:Job")), None)
    if job is not None:
        site.after_pods.append(lambda addrs, job=job: _apply_streams(site, ctx, job.inputs, addrs))

    # The Ingress: its issuer's certificate for its TLS hosts, routing only its rules' hosts.
    ingress = next(iter(plan.of_type(INGRESS)), None)
    if ingress is None:
        return
    meta, spec = ingress.inputs.get("metadata") or {}, ingress.inputs.get("spec") or {}
    issuer = str((meta.get("annotations") or {}).get(ISSUER_ANNOTATION, ""))
    if issuer not in site.issuers:
        raise LabError(
            f"{site.stack}: Ingress {meta.get('name')}: cert-manager ClusterIssuer {issuer!r} is not one the "
            f"stack declares (cluster.internalIssuer / cluster.ingressIssuer)"
        )
    tls_hosts = [str(h) for t in spec.get("tls") or [] for h in t.get("hosts") or []]
    rule_hosts = [str(r["host"]) for r in spec.get("rules") or [] if r.get("host")]
    backend = ((spec.get("rules") or [{}])[0].get("http") or {}).get("paths", [{}])[0].get("backend", {})
    service_name = str((backend.get("service") or {}).get("name"))
    svc = next(
        r for r in plan.of_type(SERVICE) if (r.inputs.get("metadata") or {}).get("name") == service_name
    )
    selector = {str(k): str(v) for k, v in ((svc.inputs.get("spec") or {}).get("selector") or {}).items()}
    target = next(p for p in site.app_pods if _selected(p, selector))
    container = target.main_containers[0]
    readiness = container.readiness
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    where = f"{site.stack}: Ingress {meta.get('name')}"
    timeouts = {key: _seconds(annotations, key, default, where) for key, default in NGINX_TIMEOUTS.items()}
    body_size = _body_size(annotations.get(NGINX + "proxy-body-size", NGINX_BODY_SIZE), where)
    site.lb = LoadBalancerSpec(
        site=site.site,
        kind="ingress",
        names=tls_hosts,
        certificate=f"Ingress {meta.get('name')!r} tls hosts (cert-manager ClusterIssuer {issuer!r})",
        issuer=issuer,
        hosts=rule_hosts,
        check=Check(
            path=readiness.path if readiness and readiness.path else "/",
            interval_s=readiness.period if readiness else 10,
            timeout_s=readiness.timeout if readiness else 1,
            fall=readiness.failure_threshold if readiness else 3,
            rise=1,
        ),
        retries=2,
        passive=True,
        connect_timeout_s=timeouts["proxy-connect-timeout"],
        server_timeout_s=timeouts["proxy-read-timeout"],
        client_timeout_s=NGINX_CLIENT_TIMEOUT,
        keep_alive_s=NGINX_KEEP_ALIVE,
        hsts=NGINX_HSTS,
        max_body_bytes=body_size,
    )
    unset = [
        f"{key} {default} s" for key, default in NGINX_TIMEOUTS.items() if NGINX + key not in annotations
    ]
    site.deviations.append(
        "ingress-nginx's own defaults, not in the plan: 3 tries of a request no pod answered (a POST, "
        "PATCH or LOCK a pod had is not tried again)"
        + "".join(f", {u}" for u in unset)
        + "; and its controller ConfigMap's, which no plan "
        f"holds: Strict-Transport-Security {NGINX_HSTS!r}, a client silent {NGINX_CLIENT_TIMEOUT} s "
        f"mid-request or a kept-alive connection idle {NGINX_KEEP_ALIVE} s closed"
    )
    send, read = timeouts["proxy-send-timeout"], timeouts["proxy-read-timeout"]
    if send != read:
        site.deviations.append(
            f"proxy-send-timeout {send:g} s is not run apart: HAProxy has one timeout for a pod's "
            f"silence either way, proxy-read-timeout's {read:g} s"
        )
    if body_size is not None:
        site.deviations.append(
            "proxy-body-size holds a chunked request body (no Content-Length) only as far as it has "
            "arrived when the request is routed, not all of it as nginx does"
        )
    site.lb.backends = [
        Backend(f"{site.site}/{target.name}-{i}", addresses[f"{target.name}-{i}"], container.ports[0])
        for i in range(target.replicas)
    ]


def _seconds(annotations: Mapping[str, str], key: str, default: int, where: str) -> float:
    """An ingress-nginx timeout annotation: a whole number of seconds, ``default`` if unset."""
    value = annotations.get(NGINX + key)
    if value is None:
        return float(default)
    if not value.strip().isdigit():
        raise LabError(f"{where}: annotation {NGINX}{key} {value!r} is not a whole number of seconds")
    return float(value.strip())


def _body_size(value: str, where: str) -> int | None:
    """``proxy-body-size`` in bytes as nginx's client_max_body_size reads it (k, m, g: powers
    of 1024); 0 checks nothing (None)."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise LabError(f"{where}: annotation {NGINX}proxy-body-size {value!r} is not a size nginx takes")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    return size or None


def _apply_streams(site: SiteTwin, ctx: Context, job: Mapping[str, object], addrs: Mapping[str, str]) -> None:
    """What the Job's `nats stream add --config FILE NAME` does: create each stream from its file."""
    import nats
    import nats.errors

    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}  # type: ignore[union-attr]
    container = (template.get("containers") or [{}])[0]
    env = {str(e["name"]): e for e in container.get("env") or []}
    url = str(env.get("NATS_URL", {}).get("value", ""))
    volumes = {str(v["name"]): v for v in template.get("volumes") or []}
    files = site.plan_values.config_map(str(volumes["streams"]["configMap"]["name"])) or {}
    ca_secret = str(volumes["ca"]["secret"]["secretName"])
    ca_file = ctx.state_dir / "certificates" / site.site / ca_secret / "ca.crt"
    user = password = None
    for var, spec in env.items():
        ref = (spec.get("valueFrom") or {}).get("secretKeyRef")
        if ref and var in ("NATS_USER", "NATS_PASSWORD"):
            value = ctx.values.secret(
                plain((site.plan_values.k8s_secret(str(ref["name"])) or {}).get(str(ref["key"])))
            )
            user, password = (value, password) if var == "NATS_USER" else (user, value)
        elif var == "NATS_USER" and "value" in spec:
            user = str(spec["value"])
    host_port = url.split("://", 1)[-1]
    host, _, port = host_port.partition(":")
    members = site.names.get(host) or site.names.get(f"{host}.cluster.local") or []
    if not members:
        raise LabError(f"{site.stack}: the stream Job's NATS_URL {url!r} names no Service of the plan")

    async def apply() -> None:
        tls = ssl.create_default_context(cafile=str(ca_file))
        tls.check_hostname = False  # the lab connects by pod address; the chain is still checked
        servers = [f"tls://{addrs[m]}:{port or 4222}" for m in members]
        nc = await nats.connect(servers=servers, tls=tls, user=user, password=password, connect_timeout=5)
        try:
            for body in files.values():
                config = json.loads(body)
                error: object = None
                deadline = asyncio.get_running_loop().time() + STREAMS_TIMEOUT
                while asyncio.get_running_loop().time() < deadline:
                    # Until the cluster has elected its meta leader, requests go unanswered.
                    try:
                        msg = await nc.request(f"$JS.API.STREAM.CREATE.{config['name']}", body.encode(), 5)
                    except nats.errors.Error as exc:
                        error = exc
                        await asyncio.sleep(0.5)
                        continue
                    error = json.loads(msg.data).get("error")
                    if not error or "already in use" in str(error):
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise LabError(
                        f"{site.stack}: stream {config['name']} not created in {STREAMS_TIMEOUT} s: {error}"
                    )
        finally:
            await nc.close()

    asyncio.run(apply())
