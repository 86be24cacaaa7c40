"""A ``gcp`` site stack in the lab: Cloud Run services as pods, Memorystore, Pub/Sub and
Google's global external load balancer.

- **Cloud Run**: each service's template runs as pods (``minInstanceCount`` instances, capped
  by the lab's option) with the image's user and a writable in-memory root, as Cloud Run runs
  them; Secret Manager values arrive as variables or as files at the volume's path.
- **Memorystore**: the instance's nodes (standard tier: a primary and its replica), TLS on its
  port with a CA of the instance's own whose certificate names only the instance's address
  (as Memorystore's does), its AUTH string; on the primary's loss the replica takes over the
  endpoint. The endpoint is a VPC address the lab cannot give: it is rewritten (see ``skyfleet
  lab status``).
- **Pub/Sub**: the lab's Pub/Sub server with the plan's topics and subscriptions, reached
  through ``PUBSUB_EMULATOR_HOST`` as every Google client library allows.
- **Load balancer**: the Certificate Manager certificate's names, every host to the api; the
  request timeout of the Cloud Run service behind its serverless NEG, the HTTPS proxy's client
  keep-alive, a ``Strict-Transport-Security`` header only where the backend service or URL map
  adds one, and Cloud Run's largest HTTP/1 request.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from skyfleet.lab.errors import LabError
from skyfleet.lab.lb import Backend, Check, LoadBalancerSpec
from skyfleet.lab.model import plain, pods
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.targets.base import Context, ServiceProcess, SiteTwin, managed_cache, one, redis_version
from skyfleet.plan import PlannedResource

INSTANCE = "gcp:redis/instance:Instance"
CM_CERTIFICATE = "gcp:certificatemanager/certificate:Certificate"
MANAGED_CERTIFICATE = "gcp:compute/managedSslCertificate:ManagedSslCertificate"
PUBSUB_PORT = 8085
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
BACKEND_SERVICE = "gcp:compute/backendService:BackendService"
URL_MAP = "gcp:compute/uRLMap:URLMap"
HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
# Cloud Run's request timeout where the template sets none (template.timeout): the time an
# instance has to answer a request, after which the client gets 504.
CLOUD_RUN_TIMEOUT = 300
# The global external Application Load Balancer's client HTTP keep-alive timeout where the HTTPS
# proxy sets none (httpKeepAliveTimeoutSec; Google: "Request distribution for external
# Application Load Balancers", 610 s).
CLIENT_KEEP_ALIVE = 610
# Cloud Run's largest request to an HTTP/1 container (its quotas page: 32 MiB); a port named
# "h2c" (HTTP/2 end to end) has no such limit.
HTTP1_MAX_REQUEST = 32 * 1024 * 1024
# Google publishes no time for its load balancer to reach a Cloud Run instance: the lab's own.
LAB_CONNECT_TIMEOUT = 5


def declare(site: SiteTwin, ctx: Context) -> None:
    from agent_app.contract import RUN_AS_UID

    site.app_pods = [site.cap(p, ctx.max_replicas) for p in pods(site.plan, image_user=RUN_AS_UID)]
    instance = one(site.plan, INSTANCE)
    nodes = 2 if instance.inputs.get("tier") == "STANDARD_HA" else 1
    site.service_pods = [*(f"redis-{n}" for n in range(nodes)), "pubsub", "control", "lb"]


def render(site: SiteTwin, ctx: Context, addresses: Mapping[str, str]) -> None:
    plan, values = site.plan, ctx.values
    instance = one(plan, INSTANCE)
    out = instance.outputs
    host, port = str(out.get("host")), int(out.get("port", 6378))
    nodes = [p for p in site.service_pods if p.startswith("redis-")]
    # The instance's own CA; the app gets it through the secret the plan fills from the
    # instance's serverCaCerts, so the plan's value is served as this CA.
    ca = CertificateAuthority(f"Memorystore {out.get('name', 'instance')} CA")
    for cert in out.get("serverCaCerts") or []:
        values.serve(plain(cert.get("cert")), ca.pem.decode())
    values.serve(
        "\n".join(str(c.get("cert")) for c in out.get("serverCaCerts") or [] if c.get("cert")),
        ca.pem.decode(),
    )
    password = values.secret(plain(out.get("authString")))
    certs = {}
    for node in nodes:
        # Memorystore's certificate names the instance's IP in its CN, with no subjectAltName.
        issued = ca.issue([host], san=False)
        certs[node] = (issued.cert_pem, issued.key_pem)
    endpoint = f"memorystore.{site.site}.lab.internal"
    managed_cache(
        site,
        service="memorystore",
        nodes=nodes,
        port=port,
        password=password,
        server_pem=certs,
        ca_pem=ca.pem,
        failover=len(nodes) > 1,
        endpoint_names=[endpoint],
        addresses=addresses,
        hosts_file=ctx.hosts_file(site.site),
        control_pod="control",
        state_dir=ctx.state_dir,
    )
    values.rewrite(site.site, "Memorystore endpoint (a VPC address)", f"{host}:{port}", f"{endpoint}:{port}")
    site.deviations.append(
        f"Memorystore {instance.inputs.get('redisVersion', '?')} runs as this machine's redis-server "
        f"{redis_version()}; failover after 5 s of a lost primary (the lab's Sentinels)"
    )

    # Pub/Sub: the lab's server, built from the plan's topics, subscriptions and grants. Each
    # service's identity calls it on a port of its own, where the plan's grants are enforced.
    from skyfleet.lab import pubsub

    folder = ctx.state_dir / "services" / site.site / "pubsub"
    callers: dict[str, int] = {}
    for i, spec in enumerate(site.app_pods):
        svc = next(r for r in plan.of_type("gcp:cloudrunv2/service:Service") if r.urn == spec.resource)
        account = str((svc.inputs.get("template") or {}).get("serviceAccount") or "")
        port = PUBSUB_PORT + 1 + i
        callers[f"serviceAccount:{account}"] = port
        emulator = f"{addresses['pubsub']}:{port}"
        site.workload_env.setdefault(spec.name, {})["PUBSUB_EMULATOR_HOST"] = emulator
        values.rewrite(
            site.site,
            f"Pub/Sub API for {account} (PUBSUB_EMULATOR_HOST, plain gRPC)",
            "pubsub.googleapis.com:443",
            emulator,
        )
    config = pubsub.config_from_plan(
        plan.resources, host=addresses["pubsub"], port=PUBSUB_PORT, data_dir=folder / "data", callers=callers
    )
    config_file = folder / "pubsub.json"
    site.services.append(
        ServiceProcess(
            pod="pubsub",
            name="pubsub",
            kind="queue",
            argv=[sys.executable, "-m", "skyfleet.lab.pubsub", "--config", str(config_file)],
            files={config_file: json.dumps(config, indent=1)},
            port=PUBSUB_PORT,
        )
    )
    site.deviations.append(
        "Pub/Sub is the lab's server speaking Google's protocol in plain text (emulator mode); each "
        "service account calls it on its own port, where the plan's IAM grants are enforced"
    )

    # The load balancer: the names of the certificate the HTTPS proxy serves.
    certificates = plan.of_type(CM_CERTIFICATE) or plan.of_type(MANAGED_CERTIFICATE)
    names = [str(d) for c in certificates for d in (c.inputs.get("managed") or {}).get("domains") or []]
    source = ", ".join(f"{c.type} {c.name!r}" for c in certificates) or "no certificate in the plan"
    api = next(p for p in site.app_pods if p.containers and p.containers[0].ports and p.name.endswith("api"))
    liveness = api.main_containers[0].liveness
    run = next(r for r in plan.of_type(CLOUD_RUN) if r.urn == api.resource)
    template = run.inputs.get("template") or {}
    request_timeout = _duration(template.get("timeout"), CLOUD_RUN_TIMEOUT, f"{run.type} {run.name!r}")
    ports = (template.get("containers") or [{}])[0].get("ports") or {}
    h2c = any(p.get("name") == "h2c" for p in (ports if isinstance(ports, list) else [ports]))
    backends, url_maps, proxies = _fronting(site, run)
    keep_alive = next(
        (
            float(p.inputs["httpKeepAliveTimeoutSec"])
            for p in proxies
            if p.inputs.get("httpKeepAliveTimeoutSec")
        ),
        float(CLIENT_KEEP_ALIVE),
    )
    site.lb = LoadBalancerSpec(
        site=site.site,
        kind="google",
        names=names,
        certificate=source,
        issuer="public",
        hosts=None,
        # Cloud Run sends requests only to started instances and knows at once when one is
        # gone; the lab approximates that with a one-second liveness check.
        check=Check(
            path=liveness.path if liveness and liveness.path else "/",
            interval_s=1,
            timeout_s=1,
            fall=1,
            rise=1,
        ),
        retries=0,
        passive=True,
        connect_timeout_s=LAB_CONNECT_TIMEOUT,
        server_timeout_s=request_timeout,
        # Google publishes no limit on a client's silence mid-request: a request cannot outlive
        # its timeout, so the lab cuts such a client then.
        client_timeout_s=request_timeout,
        keep_alive_s=keep_alive,
        hsts=_response_header("Strict-Transport-Security", backends, url_maps),
        max_body_bytes=None if h2c else HTTP1_MAX_REQUEST,
    )
    site.deviations.append(
        "Cloud Run's routing to live instances is the lab's own: a 1 s liveness check (down after one "
        "failure or one refused connection), not a value of the plan"
    )
    site.deviations.append(
        f"Google's load balancer: its time to reach a Cloud Run instance is not published (the lab's is "
        f"{LAB_CONNECT_TIMEOUT} s), nor a client's silence mid-request (the lab's: the request timeout, "
        f"{request_timeout:g} s); Cloud Run's request timeout bounds a whole request, the lab's "
        "HAProxy the wait for an instance's next bytes"
        + ("" if h2c else "; a chunked body is held to Cloud Run's 32 MiB only as far as it has arrived")
    )
    site.lb.backends = [
        Backend(f"{site.site}/{api.name}-{i}", addresses[f"{api.name}-{i}"], api.main_containers[0].ports[0])
        for i in range(api.replicas)
    ]
    site.deviations.append("Cloud Armor (WAF rules, per-IP rate limit) is not run")


def _duration(value: object, default: float, what: str) -> float:
    """A protobuf Duration as the plan gives it ("300s", "3.5s"), in seconds; ``default`` if unset."""
    if value is None or value == "":
        return float(default)
    text = str(value).strip()
    try:
        return float(text.removesuffix("s"))
    except ValueError:
        raise LabError(f'{what}: template.timeout {text!r} is not a duration in seconds ("300s")') from None


def _refs(resource: PlannedResource) -> set[str]:
    """The ways another resource of the plan refers to ``resource`` (its id and self link)."""
    return {str(v) for v in (resource.outputs.get("id"), resource.outputs.get("selfLink")) if v}


def _fronting(
    site: SiteTwin, run: PlannedResource
) -> tuple[list[PlannedResource], list[PlannedResource], list[PlannedResource]]:
    """The backend services whose serverless NEGs point at Cloud Run service ``run``, the URL maps
    sending to them by default and the HTTPS proxies of those maps. A backend service of
    serverless NEGs takes no timeout: Google refuses one ("Timeout sec is not supported for a
    backend service with Serverless network endpoint groups"), so such a plan stops ``lab up``."""
    plan = site.plan
    name = str(run.outputs.get("name") or run.inputs.get("name"))
    negs = {
        ref
        for neg in plan.of_type(NEG)
        if neg.inputs.get("networkEndpointType") == "SERVERLESS"
        and str((neg.inputs.get("cloudRun") or {}).get("service")) == name
        for ref in _refs(neg)
    }
    backends = [
        b
        for b in plan.of_type(BACKEND_SERVICE)
        if any(str(g.get("group")) in negs for g in b.inputs.get("backends") or [])
    ]
    for b in backends:
        if b.inputs.get("timeoutSec") is not None:
            raise LabError(
                f"{site.stack}: {b.type} {b.name!r} sets timeoutSec {b.inputs['timeoutSec']}, but its "
                'backends are serverless NEGs, which take none (Google refuses it: "Timeout sec is not '
                "supported for a backend service with Serverless network endpoint groups\"); a request's "
                "time is the Cloud Run service's template.timeout"
            )
    to_backends = {ref for b in backends for ref in _refs(b)}
    url_maps = [u for u in plan.of_type(URL_MAP) if str(u.inputs.get("defaultService")) in to_backends]
    to_maps = {ref for u in url_maps for ref in _refs(u)}
    proxies = [p for p in plan.of_type(HTTPS_PROXY) if str(p.inputs.get("urlMap")) in to_maps]
    return backends, url_maps, proxies


def _response_header(
    header: str, backends: list[PlannedResource], url_maps: list[PlannedResource]
) -> str | None:
    """The value the load balancer adds to responses for ``header``: a backend service's custom
    response header ("Name: value") or the URL map's header action; None where neither adds it
    (Google's load balancer adds none of its own)."""
    for b in backends:
        for line in b.inputs.get("customResponseHeaders") or []:
            name, _, value = str(line).partition(":")
            if name.strip().lower() == header.lower():
                return value.strip()
    for u in url_maps:
        for added in (u.inputs.get("headerAction") or {}).get("responseHeadersToAdd") or []:
            if str(added.get("headerName", "")).lower() == header.lower():
                return str(added.get("headerValue", ""))
    return None
