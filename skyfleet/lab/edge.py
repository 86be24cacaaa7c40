"""The edge stack's twin: its Route 53 records and health checks, answered by the lab's DNS
server (``skyfleet.lab.dns``) on the WAN, for every client of the lab.

The records and checks come from the edge plan as they are (``route53.edge_from_plan``):
routing, TTL, the checks' interval, threshold, path and checker regions. The only names the
lab adds are the sites' own: each site's host names (its load balancer's certificate names and
the endpoint host its health check asks for) resolve to that site's load balancer, as the
site's DNS records (or the operator's, for names no stack manages) would. A site the edge
names but the lab does not run has no such name: its checks fail, as for a site that is down.

The one thing changed in the records: an A record's values (a multivalue edge's) are the sites'
planned public addresses (their ``endpointAddresses``), which do not exist here. Each is
answered as one of its site's load balancer addresses in the lab (the n-th planned address of
a site as the n-th: the lab gives a load balancer as many addresses as its site plans), and
listed in the lab's endpoint rewrite table (``skyfleet lab status``). An address of a
site the edge names but the lab does not run is dropped (a deviation); any other address is
an error, since nothing could answer it.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

from skyfleet.lab import dns, procs, route53
from skyfleet.lab.errors import LabError
from skyfleet.lab.procs import ProcessRecord, Role
from skyfleet.lab.state import Edge, LabState, SiteState, load_state
from skyfleet.lab.values import Rewrite

DNS_PORT = 53
SITE_NAME_TTL = 60


def build(state: LabState, plan: Any) -> None:
    """Record the edge of ``plan`` in ``state`` and write the DNS server's config."""
    try:
        edge = route53.edge_from_plan(plan.resources)
    except route53.EdgePlanError as exc:
        raise LabError(f"{plan.stack}: {exc}") from None
    edge = _lab_addresses(state, plan, edge)
    folder = Path(state.state_dir) / "edge"
    folder.mkdir(parents=True, exist_ok=True)
    static: dict[str, tuple[list[str], int]] = {}
    for site in state.sites.values():
        site_plan_outputs = _site_outputs(plan, site.stack)
        hosts = {*site.lb_names, str(site_plan_outputs.get("endpointHost") or "")} - {""}
        # The name of the front the site's fixed addresses belong to resolves to all of them.
        front = str(site_plan_outputs.get("addressesHost") or "").lower().rstrip(".")
        if front:
            static.setdefault(front, (list(site.addresses), SITE_NAME_TTL))
        for host in hosts:
            static.setdefault(host.lower().rstrip("."), ([site.lb_address], SITE_NAME_TTL))
    zone = edge.zone()
    static = {name: v for name, v in static.items() if name not in zone}
    events_file = folder / "events.jsonl"
    config = dns.DnsConfig.for_edge(
        edge, listen=state.fabric.wan_address, port=DNS_PORT, events_file=events_file, static_names=static
    )
    config_file = folder / "dns.json"
    dns.write_config(config_file, config)
    fqdn = str(plan.outputs.get("fqdn"))
    record = next((r for r in edge.records if r.name.rstrip(".") == fqdn.rstrip(".")), None)
    state.edge = Edge(
        stack=plan.stack,
        fqdn=fqdn,
        routing=str(plan.outputs.get("routing")),
        ttl=record.ttl if record and record.ttl is not None else 0,
        dns_address=state.fabric.wan_address,
        dns_port=DNS_PORT,
        health_checks={
            c.site: {
                "interval_seconds": c.request_interval,
                "failure_threshold": c.failure_threshold,
                "path": c.resource_path,
                "regions": list(c.regions),
            }
            for c in edge.health_checks
        },
        config_file=str(config_file),
        events_file=str(events_file),
    )
    missing = sorted({c.site for c in edge.health_checks} - set(state.sites))
    if missing:
        state.deviations.append(
            f"edge: the lab runs no site for {missing}; their health checks fail as for a site that is down"
        )
    state.processes.append(
        ProcessRecord(
            name="edge/dns",
            role=Role.EDGE,
            site="edge",
            argv=dns.command(config_file),
            cwd=state.state_dir,
            log_file=str(Path(state.state_dir) / "logs" / "edge.dns.log"),
            host=state.fabric.wan_address,
            ports={"dns": DNS_PORT},
        )
    )


def _lab_addresses(state: LabState, plan: Any, edge: route53.Edge) -> route53.Edge:
    """``edge`` with its A records' planned site addresses replaced by the lab's (and recorded
    in ``state.rewrites``); addresses of sites the lab does not run dropped (``deviations``)."""
    # planned address -> the site the lab runs with it, and its own address there (the n-th
    # planned address of a site is the n-th address of its load balancer in the lab)
    run: dict[str, tuple[SiteState, str]] = {}
    for site in state.sites.values():
        planned = _site_outputs(plan, site.stack).get("endpointAddresses") or []
        if planned and len(planned) != len(site.addresses):
            raise LabError(
                f"{plan.stack}: the edge reads {len(planned)} endpointAddresses for {site.stack} "
                f"({planned}), but the lab runs that site's load balancer at "
                f"{len(site.addresses)}: plan the edge against the same site plans"
            )
        for address, lab in zip(planned, site.addresses, strict=False):
            run.setdefault(str(address), (site, lab))
    not_run: dict[str, str] = {}  # planned address -> a site the edge names, the lab does not run
    run_stacks = {site.stack for site in state.sites.values()}
    for stack, outputs in _stack_references(plan).items():
        if stack not in run_stacks:
            for address in outputs.get("endpointAddresses") or []:
                not_run.setdefault(str(address), str(outputs.get("site") or stack))
    records: list[route53.RecordSpec] = []
    for rec in edge.records:
        if rec.multivalue and rec.type != "A":
            raise LabError(
                f"{plan.stack}: record {rec.resource}: multivalue {rec.type} records are not emulated "
                "(the lab's sites have IPv4 addresses only)"
            )
        if rec.type != "A" or rec.alias is not None:
            records.append(rec)
            continue
        values: list[str] = []
        dropped: dict[str, list[str]] = {}
        for value in rec.values:
            if value in run:
                site, lab = run[value]
                state.rewrites.append(
                    Rewrite(
                        site=site.site, what=f"edge record {rec.resource} ({rec.name} A)", plan=value, lab=lab
                    )
                )
                if lab not in values:
                    values.append(lab)
            elif value in not_run:
                dropped.setdefault(not_run[value], []).append(value)
            else:
                raise LabError(
                    f"{plan.stack}: record {rec.resource}: {value} is not an endpointAddress of any "
                    f"site the lab runs ({', '.join(sorted(state.sites)) or 'none'})"
                )
        for name, addresses in sorted(dropped.items()):
            state.deviations.append(
                f"edge: the lab runs no site for {name}; record {rec.resource} answers without its "
                f"planned addresses {addresses}"
            )
        if values:
            records.append(rec.model_copy(update={"values": tuple(values)}))
    lab_edge = route53.Edge(records=tuple(records), health_checks=edge.health_checks)
    try:
        lab_edge.zone()
    except route53.EdgePlanError as exc:
        raise LabError(f"{plan.stack}: without the sites the lab does not run: {exc}") from None
    return lab_edge


def _stack_references(edge_plan: Any) -> dict[str, dict[str, Any]]:
    """Every site stack the edge reads: stack name -> its outputs as the edge saw them."""
    return {
        str(r.inputs.get("name", r.name)).split("/")[-1]: dict(r.outputs.get("outputs") or {})
        for r in edge_plan.resources
        if r.type == "pulumi:pulumi:StackReference"
    }


def _site_outputs(edge_plan: Any, stack: str) -> dict[str, Any]:
    """A site's outputs as the edge's StackReference saw them."""
    return _stack_references(edge_plan).get(stack, {})


def start(state: LabState) -> None:
    """Start the DNS server and wait until it answers with its first routing."""
    assert state.edge is not None
    rec = next(r for r in state.processes if r.role == Role.EDGE)
    procs.spawn(rec, secrets_dir=Path(state.state_dir) / "secrets", marker=state.state_dir)
    assert rec.pid is not None
    try:
        dns.wait_ready(Path(state.edge.events_file), rec.pid, timeout=30, alive=lambda: procs.is_running(rec))
    except TimeoutError as exc:
        raise LabError(f"the edge's DNS server did not start: {exc}") from None


def check_global_name(state: LabState, *, timeout: float = 30.0) -> None:
    """Every site the edge may route the global name to serves a certificate that a client
    verifying that name accepts. Route 53's HTTPS health checks do not verify certificates, so
    such a site would be routed to and fail every client: the lab refuses to come up instead.
    """
    assert state.edge is not None
    fqdn = state.edge.fqdn.rstrip(".")
    context = ssl.create_default_context(cafile=state.public_ca_file)
    problems: list[str] = []
    for name in sorted(set(state.edge.health_checks) & set(state.sites)):
        site = state.sites[name]
        deadline = time.monotonic() + timeout
        while True:
            try:
                with (
                    socket.create_connection((site.lb_address, 443), timeout=5) as raw,
                    context.wrap_socket(raw, server_hostname=fqdn),
                ):
                    break
            except ssl.SSLCertVerificationError as exc:
                problems.append(
                    f"{site.stack}: its load balancer's certificate ({site.lb_certificate}) covers "
                    f"{site.lb_names}, not the global name {fqdn} that {state.edge.stack} routes "
                    f"to it; clients would fail to verify it ({exc.verify_message})"
                )
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    where = f"{site.lb_address}:443"
                    problems.append(f"{site.stack}: its load balancer {where} does not answer: {exc}")
                    break
                time.sleep(0.2)
    if problems:
        raise LabError("the global name would fail clients:\n  " + "\n  ".join(problems))


def health_events(state_dir: str, since: float = 0.0) -> list[dict[str, Any]]:
    """The edge's health-check transitions since ``since``: site, state (UP/DOWN), time."""
    state = load_state(state_dir)
    if state.edge is None:
        return []
    out = []
    for e in dns.health_transitions(dns.read_events(Path(state.edge.events_file))):
        t = float(e.get("t", 0))
        if t >= since:
            out.append({"site": e.get("site"), "state": "UP" if e.get("healthy") else "DOWN", "time": t})
    return out


def site_health(state_dir: str) -> dict[str, bool]:
    """Each health-checked site's status at the edge now (Route 53 starts a check healthy)."""
    state = load_state(state_dir)
    if state.edge is None:
        return {}
    health = dict.fromkeys(state.edge.health_checks, True)
    for e in dns.health_transitions(dns.read_events(Path(state.edge.events_file))):
        health[str(e.get("site"))] = bool(e.get("healthy"))
    return health


def routed_sites(state_dir: str) -> list[str]:
    """The sites the global name is routed to now (the last routing event): its targets are
    site host names (failover, weighted) or the sites' load balancer addresses (multivalue)."""
    state = load_state(state_dir)
    if state.edge is None:
        return []
    routing = [e for e in dns.read_events(Path(state.edge.events_file)) if e.get("event") == "routing"]
    if not routing:
        return []
    targets = routing[-1].get("routing", {}).get(route53.normalise(state.edge.fqdn)) or []
    config, _ = dns.load_config(Path(state.edge.config_file))
    by_address = {a: name for name, s in state.sites.items() for a in s.addresses}
    sites = set()
    for target in targets:
        if str(target) in by_address:
            sites.add(by_address[str(target)])
            continue
        static = config.static_names.get(route53.normalise(str(target)))
        sites |= {by_address[str(a)] for a in (static.addresses if static else ()) if str(a) in by_address}
    return sorted(sites)


def wait_routed(state_dir: str, site: str, *, timeout: float, routed: bool = True) -> float:
    """Wait until the edge routes the global name to ``site`` (with ``routed=False``: away from
    it); return how long it took."""
    started = time.monotonic()
    while (site in routed_sites(state_dir)) != routed:
        if time.monotonic() - started > timeout:
            where = "to" if routed else "away from"
            raise LabError(f"the edge does not route {where} {site} after {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started
