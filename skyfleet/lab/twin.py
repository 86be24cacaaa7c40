"""The lab as the twin of deployed stacks: build each site from its stack's offline plan, run it.

``build`` plans the stacks, asks each site's target (``skyfleet.lab.targets``) what it runs,
places every pod in the lab's network, and writes every file (volumes, sandbox specs, server
configs, the sites' name services, the load balancers' configs). ``start`` brings a built lab
up in the platforms' order: managed services, then each pod's init containers to completion,
then its containers, then the load balancers, waiting for each step's probes with a bound.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyfleet.lab import caches, fabric, lb, names, pods, probes, procs
from skyfleet.lab.errors import LabError
from skyfleet.lab.model import PlanValues, Probe, resource_label
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.procs import ProcessRecord, Role
from skyfleet.lab.state import LabState, SiteState
from skyfleet.lab.targets import aws, gcp, onprem
from skyfleet.lab.targets.base import Context, SiteTwin
from skyfleet.lab.values import LabValues
from skyfleet.plan import Plan

TARGETS: dict[str, Any] = {"aws": aws, "gcp": gcp, "onprem": onprem}
MARKER = procs.MARKER_ENV
READY_TIMEOUT = 120.0


@dataclass
class Built:
    state: LabState
    sites: list[SiteTwin]
    after_services: list[tuple[str, Callable[[dict[str, str]], None]]] = field(default_factory=list)
    after_pods: list[tuple[str, Callable[[dict[str, str]], None]]] = field(default_factory=list)
    # Every replica of the plans' pods as placed in the lab (pod key "site/pod" -> pod), its
    # volumes written: what a runner other than the sandbox (a container engine) starts from.
    placed: dict[str, pods.Pod] = field(default_factory=dict)
    # The lab's secret values and endpoint rewrites, as the managed services were given them.
    values: LabValues = field(default_factory=LabValues.new)


def _write_secret_file(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def build(
    plans: Iterable[Plan],
    *,
    state_dir: Path,
    lab_id: str,
    subnet: str,
    max_replicas: int | None,
    config: dict[str, Any] | None = None,
) -> Built:
    """Everything the lab will run for the site ``plans``, with every file written."""
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    values = LabValues.new()
    public = CertificateAuthority("skyfleet lab public roots (stands in for the web PKI)")
    secrets_dir = state_dir / "secrets"
    _write_secret_file(secrets_dir / "public-ca.pem", public.pem, 0o644)
    _write_secret_file(secrets_dir / "api-key", "".join(f"{k}\n" for k in values.api_keys))
    hosts_dir = state_dir / "names"

    def hosts_file(site: str) -> Path:
        return hosts_dir / site / "hosts"

    ctx = Context(
        values=values, public_ca=public, state_dir=state_dir, max_replicas=max_replicas, hosts_file=hosts_file
    )
    sites: list[SiteTwin] = []
    for plan in plans:
        target = str(plan.outputs.get("target"))
        if target not in TARGETS:
            raise LabError(f"{plan.stack}: target {target!r}: the lab runs no such site yet")
        site = SiteTwin(
            stack=plan.stack,
            target=target,
            site=str(plan.outputs.get("site") or plan.stack),
            plan=plan,
            plan_values=PlanValues(plan),
        )
        site.issuers["public"] = public
        TARGETS[target].declare(site, ctx)
        sites.append(site)

    pod_names = {
        s.site: [*s.service_pods, *(f"{p.name}-{i}" for p in s.app_pods for i in range(p.replicas))]
        for s in sites
    }
    # A site whose front has several public addresses (endpointAddresses: an aws NLB's Elastic
    # IPs) gets as many at its load balancer, so the edge's answers list as many as deployed.
    fronted = {
        s.site: len(s.plan.outputs.get("endpointAddresses") or []) for s in sites if "lb" in s.service_pods
    }
    extra = {f"{site}/lb": n - 1 for site, n in fronted.items() if n > 1}
    net = fabric.plan(lab_id, subnet, [s.site for s in sites], pod_names, extra)
    state = LabState(
        lab_id=lab_id,
        state_dir=str(state_dir),
        config=config or {},
        fabric=net,
        public_ca_file=str(secrets_dir / "public-ca.pem"),
        api_key_file=str(secrets_dir / "api-key"),
    )
    # The pods' trust store: the system's roots and the lab's stand-in for the public ones.
    bundle = secrets_dir / "ca-bundle.crt"
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    _write_secret_file(bundle, (system.read_bytes() if system.exists() else b"") + public.pem, 0o644)
    app_image = pods.app_image()
    built = Built(state=state, sites=sites, values=values)
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site_entries: dict[str, dict[str, list[str]]] = {}
    for site in sites:
        addresses = {p: net.pods[f"{site.site}/{p}"].address for p in pod_names[site.site]}
        TARGETS[site.target].render(site, ctx, addresses)
        entries = {name: [addresses.get(p, p) for p in targets] for name, targets in site.names.items()}
        site_entries[site.site] = entries
        state.sites[site.site] = SiteState(
            stack=site.stack,
            target=site.target,
            site=site.site,
            lb_address=addresses["lb"],
            lb_addresses=[addresses["lb"], *net.pods[f"{site.site}/lb"].extra_addresses],
            lb_names=site.lb.names if site.lb else [],
            lb_certificate=site.lb.certificate if site.lb else "",
            hosts_file=str(hosts_file(site.site)),
            endpoints={e.name: e.service for e in site.endpoints},
        )
        state.deviations += [f"{site.site}: {d}" for d in site.deviations]
        state.capped.update({f"{site.site}/{k}": v for k, v in site.capped.items()})
        # Managed services.
        for svc in site.services:
            for path, data in svc.files.items():
                _write_secret_file(path, data, 0o700 if path.suffix == ".sh" else 0o600)
            state.processes.append(
                ProcessRecord(
                    name=f"{site.site}/{svc.name}",
                    role=Role.SERVICE,
                    site=site.site,
                    argv=svc.argv,
                    env=svc.env,
                    cwd=str(state_dir),
                    netns=net.pods[f"{site.site}/{svc.pod}"].namespace,
                    log_file=str(logs / f"{site.site}.{svc.name}.log"),
                    host=addresses[svc.pod],
                    ports={svc.kind: svc.port} if svc.port else {},
                    pod=f"{site.site}/{svc.pod}",
                    container=svc.name,
                )
            )
        # The plan's pods.
        dns_files = {
            "/etc/hosts": hosts_file(site.site),
            "/etc/host.conf": hosts_file(site.site).with_name("host.conf"),
        }
        for spec in site.app_pods:
            for i in range(spec.replicas):
                name = f"{spec.name}-{i}"
                pod = pods.Pod(
                    site=site.site,
                    spec=spec,
                    index=i,
                    name=name,
                    netns=net.pods[f"{site.site}/{name}"].namespace,
                    address=addresses[name],
                    folder=state_dir / "pods" / site.site / name,
                    hostname=name,
                    dns_files=dns_files,
                    ca_bundle=bundle,
                    platform_env={**site.platform_env, **site.workload_env.get(spec.name, {})},
                )
                runs, skipped = pods.prepare(
                    pod,
                    values=values,
                    plan_values=site.plan_values,
                    issuers=pods.Issuers(site.issuers, cache=state_dir / "certificates" / site.site),
                    app=app_image,
                    data_dir=state_dir / "data",
                    marker=(MARKER, str(state_dir)),
                )
                built.placed[pod.key] = pod
                state.not_run += skipped
                for run in runs:
                    c = run.container
                    probe = c.readiness or c.startup or c.liveness
                    state.processes.append(
                        ProcessRecord(
                            name=f"{pod.key}/{run.container.name}",
                            role=Role.CONTAINER,
                            site=site.site,
                            index=i,
                            argv=run.argv,
                            cwd="/",
                            netns=pod.netns,
                            log_file=str(run.log_file),
                            host=pod.address,
                            ports={"http": run.container.ports[0]} if run.container.ports else {},
                            pod=pod.key,
                            container=run.container.name,
                            origin=f"{site.stack}: {resource_label(spec.resource)}, container {c.name!r}",
                            init=run.container.init,
                            probe=asdict(probe) if probe else None,
                            # Stateful pods (caches, brokers) come up before the pods using them.
                            wave=0 if spec.kind == "statefulset" else 1,
                        )
                    )
        # The site's load balancer.
        if site.lb is not None:
            pem = secrets_dir / f"lb-{site.site}.pem"
            issuer = site.issuers.get(site.lb.issuer) or public
            _write_secret_file(pem, issuer.issue(site.lb.names).bundle)
            cfg = state_dir / "lb" / site.site / "haproxy.cfg"
            admin = state_dir / "lb" / site.site / "admin.sock"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(
                lb.render(
                    site.lb,
                    address=addresses["lb"],
                    more=net.pods[f"{site.site}/lb"].extra_addresses,
                    pem=pem,
                    admin_socket=admin,
                ),
                encoding="utf-8",
            )
            state.sites[site.site].admin_socket = str(admin)
            state.sites[site.site].lb_log = str(logs / f"{site.site}.lb.log")
            state.sites[site.site].backends = lb.server_names(site.lb.backends)
            state.processes.append(
                ProcessRecord(
                    name=f"{site.site}/lb",
                    role=Role.LB,
                    site=site.site,
                    argv=[shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(cfg)],
                    cwd=str(state_dir),
                    netns=net.pods[f"{site.site}/lb"].namespace,
                    log_file=str(logs / f"{site.site}.lb.log"),
                    host=addresses["lb"],
                    ports={"https": 443},
                    pod=f"{site.site}/lb",
                    container="haproxy",
                )
            )
        built.after_services += [(site.site, step) for step in site.after_services]
        built.after_pods += [(site.site, step) for step in site.after_pods]
    # The other sites' own (regional) names, as public DNS answers them: where a fleet's sites
    # call each other. A name several sites share (the edge's global name) is the edge's.
    shared = {
        n
        for s in sites
        if s.lb
        for n in s.lb.names
        if sum(n in (o.lb.names if o.lb else []) for o in sites) > 1
    }
    peer_names = {
        site.site: {
            name: [net.pods[f"{other.site}/lb"].address]
            for other in sites
            if other is not site and other.lb is not None
            for name in other.lb.names
            if name not in shared
        }
        for site in sites
    }
    for site in sites:
        names.write(hosts_file(site.site), {**site_entries[site.site], **peer_names[site.site]})
    state.rewrites = list(values.rewrites)
    return built


# --- running a built lab ------------------------------------------------------------------------


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_ok(host: str, port: int, path: str, timeout: float = 2.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
        return 200 <= status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_for(
    what: str,
    records: list[ProcessRecord],
    check: Callable[[ProcessRecord], bool],
    timeout: float = READY_TIMEOUT,
) -> None:
    pending = list(records)
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(pending)))) as pool:
        while pending:
            for rec in pending:
                if not procs.is_running(rec):
                    raise LabError(f"{_who(rec)} exited while starting ({what}); its log:\n{_tail(rec)}")
            results = list(pool.map(check, pending))
            pending = [r for r, ok in zip(pending, results, strict=True) if not ok]
            if pending and time.monotonic() > deadline:
                raise LabError(
                    f"not {what} after {timeout:.0f} s: {', '.join(r.name for r in pending)}; "
                    f"log of {_who(pending[0])}:\n{_tail(pending[0])}"
                )
            if pending:
                time.sleep(0.1)


def _who(rec: ProcessRecord) -> str:
    return f"{rec.name} ({rec.origin})" if rec.origin else rec.name


def _tail(rec: ProcessRecord, lines: int = 20) -> str:
    try:
        text = Path(rec.log_file).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


def _spawn(state: LabState, records: list[ProcessRecord]) -> None:
    secrets_dir = Path(state.state_dir) / "secrets"
    for rec in records:
        procs.spawn(rec, secrets_dir=secrets_dir, marker=state.state_dir)


def _run_to_completion(state: LabState, rec: ProcessRecord, timeout: float) -> int:
    """Run an init container and return its exit code (recorded, so ``down`` finds it meanwhile)."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    env[MARKER] = state.state_dir
    argv = ["ip", "netns", "exec", rec.netns, *rec.argv] if rec.netns else list(rec.argv)
    Path(rec.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(rec.log_file, "ab") as log:
        try:
            return subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            raise LabError(f"{_who(rec)} (an init container) did not finish within {timeout:.0f} s") from None


def container_ready(rec: ProcessRecord) -> bool:
    """The container's readiness (else startup, else liveness) probe passes; without a probe,
    its port answers; without a port, it runs."""
    if rec.probe:
        data = dict(rec.probe)
        data["command"] = tuple(data.get("command") or ())
        return probes.passes(rec, Probe(**data))
    if rec.ports:
        return probes.tcp_ok(rec.host, rec.port, 1)
    return procs.is_running(rec)


def _start_pods(
    state: LabState, wave: int, say: Callable[[str], None], on_started: Callable[[], None]
) -> None:
    containers = [r for r in state.processes if r.role == Role.CONTAINER and r.wave == wave]
    if not containers:
        return
    inits = [r for r in containers if r.init]
    if inits:
        say(f"running {len(inits)} init containers")
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(pool.map(lambda r: _run_to_completion(state, r, 60), inits))
        for rec, code in zip(inits, codes, strict=True):
            if code != 0:
                raise LabError(f"{_who(rec)}: the init container exited with code {code}:\n{_tail(rec)}")
    mains = [r for r in containers if not r.init]
    say(f"starting {len(mains)} containers")
    _spawn(state, mains)
    on_started()
    wait_for("ready (their probes pass)", mains, container_ready)


def _addresses(state: LabState, site: str) -> dict[str, str]:
    return {k.split("/", 1)[1]: p.address for k, p in state.fabric.pods.items() if k.startswith(f"{site}/")}


def start(
    built: Built,
    *,
    say: Callable[[str], None] = lambda _: None,
    on_started: Callable[[], None] = lambda: None,
    on_network: Callable[[], None] = lambda: None,
) -> LabState:
    """Start a built lab; ``on_started`` runs after each batch of processes starts (to record
    their pids at once, so a crash of ``up`` itself leaves nothing ``down`` cannot find);
    ``on_network`` once the lab's network exists."""
    state = start_backing(built, say=say, on_started=on_started, on_network=on_network)
    _start_pods(state, 1, say, on_started)
    lbs = [r for r in state.processes if r.role == Role.LB]
    say(f"starting {len(lbs)} load balancers")
    _spawn(state, lbs)
    on_started()
    wait_for("serving", lbs, lambda r: _tcp_open(r.host, 443))
    return state


def start_backing(
    built: Built,
    *,
    say: Callable[[str], None] = lambda _: None,
    on_started: Callable[[], None] = lambda: None,
    on_network: Callable[[], None] = lambda: None,
) -> LabState:
    """The part of ``start`` the app's pods depend on: the network, the managed services, the
    stateful pods (caches, brokers) and what the plan's Jobs do. The app's pods and the load
    balancers are not started."""
    state = built.state
    fabric.create(state.fabric)
    on_network()
    services = [r for r in state.processes if r.role == Role.SERVICE]
    say(f"starting {len(services)} managed-service processes")
    _spawn(state, services)
    on_started()
    wait_for("listening", [r for r in services if r.ports], lambda r: _tcp_open(r.host, r.port))
    for site, step in built.after_services:
        say(f"{site}: preparing managed services")
        step(_addresses(state, site))
    _start_pods(state, 0, say, on_started)
    for site, step in built.after_pods:
        say(f"{site}: running what the plan's Jobs do")
        step(_addresses(state, site))
    # A cache set is formed once its Sentinels know every replica (they learn them every 10 s):
    # before that a lost primary would have no replica to promote.
    caches_by_site = [next(iter(caches.nodes(state, s)), None) for s in state.sites]
    wait_for(
        "a cache set known to its Sentinels",
        [r for r in caches_by_site if r is not None],
        lambda r: caches.set_known(state, r.site),
    )
    return state


def app_ready(rec: ProcessRecord) -> bool:
    return _http_ok(rec.host, rec.port, "/readyz") if rec.ports else True


def tls_get(address: str, name: str, path: str, ca_file: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET https://<name><path> at ``address``, checking the certificate for ``name``."""
    ctx = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection((address, 443), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def stop(state: LabState, *, grace: float = 5.0) -> dict[str, Any]:
    """Traffic stops first (the edge, the load balancers), then everything else at once: the
    apps drain within their grace while the servers they use shut down beside them."""
    front = [r for r in state.processes if r.role in (Role.EDGE, Role.LB)]
    stopped = procs.stop_records(front, grace=grace)
    stopped += procs.stop_records([r for r in state.processes if r not in front], grace=grace)
    orphans = procs.kill_marked(state.state_dir)
    removed = fabric.destroy(state.fabric)
    return {"stopped": stopped, "orphans_killed": orphans, "network_removed": removed}
