"""Skyfleet's actions and probes: the functions drill files name in ``type: python`` providers.

Each fault action applies one fault (in the lab through ``skyfleet.lab.faults``, on a real stack
through ``skyfleet.drills.cloud``), records its undo in the drill's ledger the moment it is
applied, and tells the running drill when the fault happened. Each rollback action undoes the
matching fault from the ledger, so it restores exactly what the fault changed (the previous
desired count, the revoked rules...), and is a no-op when nothing is open: rollbacks may run
twice (declared + safety net) without harm.

``ACTIONS`` is the registry: for every function, its platform, its undo and a one-line
description, which ``skyfleet drill run --dry-run`` prints without touching anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from skyfleet.drills.rollback import Ledger
from skyfleet.drills.run import current
from skyfleet.drills.target import LabTarget, StackTarget, Target, target_from_configuration

Platform = Literal["lab", "aws", "gcp", "kubernetes"]
Configuration = dict[str, Any] | None
# Faults applied outside a drill run (e.g. an action called on its own) still get undone.
_STANDALONE_LEDGER = Ledger()


@dataclass(frozen=True)
class ActionInfo:
    func: str
    platform: Platform
    kind: Literal["fault", "rollback", "probe"]
    undo: str | None
    describe: Callable[[Target | None, dict[str, Any]], str]


ACTIONS: dict[str, ActionInfo] = {}


def _register(
    platform: Platform,
    kind: Literal["fault", "rollback", "probe"],
    describe: Callable[[Target | None, dict[str, Any]], str],
    undo: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        ACTIONS[fn.__name__] = ActionInfo(fn.__name__, platform, kind, undo, describe)
        return fn

    return wrap


def _ledger() -> Ledger:
    run = current()
    return run.ledger if run is not None else _STANDALONE_LEDGER


def _target(configuration: Configuration) -> Target:
    run = current()
    return run.target if run is not None else target_from_configuration(configuration)


def _lab(configuration: Configuration) -> LabTarget:
    target = _target(configuration)
    if not isinstance(target, LabTarget):
        raise RuntimeError(f"this action acts on the lab, but the drill targets {target.label}")
    return target


def _stack(configuration: Configuration) -> StackTarget:
    target = _target(configuration)
    if not isinstance(target, StackTarget):
        raise RuntimeError(f"this action acts on a deployed stack, but the drill targets {target.label}")
    return target


def _as_dict(result: Any) -> dict[str, Any]:
    return dict(result) if isinstance(result, dict) else {"result": result}


def _apply(
    name: str,
    key: str,
    site: str | None,
    description: str,
    do: Callable[[], Any],
    undo: Callable[[], Any],
    started: float | None = None,
) -> dict[str, Any]:
    """Apply a fault, then record its undo and its time before anything else can fail."""
    started = time.time() if started is None else started
    result = _as_dict(do())
    at = float(result.get("time", started))
    _ledger().applied(key, name, description, undo, at)
    run = current()
    if run is not None:
        run.fault_applied(name, site, at, result)
    return {"fault": name, "key": key, "time": at, **result}


def _undo(name: str, key: str, fallback: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Undo the open fault(s) under ``key`` from the ledger; else run ``fallback`` if given."""
    ledger = _ledger()
    open_faults = [f for f in ledger.pending() if f.key == key]
    results: list[Any] = []
    if open_faults:
        for fault in reversed(open_faults):
            results.append(fault.undo())
            ledger.restored(key, by=name)
    elif fallback is not None:
        results.append(fallback())
    else:
        return {"rollback": name, "key": key, "restored": False, "reason": "no open fault"}
    now = time.time()
    run = current()
    if run is not None:
        run.fault_restored(now)
    return {"rollback": name, "key": key, "restored": True, "time": now, "results": results}


# A site argument may name the role rather than the site: the one holding the Redis primary
# when the fault is applied (the worst site to lose: it takes the cache primary with it).
PRIMARY_SITE = "redis-primary"


def _site(lab: LabTarget, site: str) -> str:
    """The site a fault acts on: ``site`` itself, or the Redis primary's site right now."""
    if site != PRIMARY_SITE:
        return site
    from skyfleet.lab.replication import redis_primary

    return str(redis_primary(lab.state_dir)["site"])


def _where(args: dict[str, Any], *, undo: bool = False) -> str:
    """How a dry run names the site a lab action acts on."""
    if args.get("site") == PRIMARY_SITE:
        return "the site that held the Redis primary" if undo else "the site holding the Redis primary"
    return f"site {args.get('site')!r}"


def _named(site: str) -> str:
    """A rollback without its fault in the ledger must be told which site to restore."""
    if site == PRIMARY_SITE:
        raise RuntimeError(
            f"no open fault for site {PRIMARY_SITE!r} in this run: the primary has moved since, so "
            "name the site to restore (e.g. site: aws)"
        )
    return site


def _lab_faults() -> Any:
    from skyfleet.lab import faults

    return faults


# --- lab faults --------------------------------------------------------------------------


@_register(
    "lab",
    "fault",
    lambda t, a: (
        f"lab: SIGKILL every process of site {a['site']!r} (api replicas, worker, Redis, Sentinel, NATS)"
    ),
    undo="site_up",
)
def site_down(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    name = _site(lab, site)
    return _apply(
        "site_down",
        f"site:{site}",
        name,
        f"site {name} down",
        lambda: faults.stop_site(lab.state_dir, name),
        lambda: faults.start_site(lab.state_dir, name),
    )


@_register(
    "lab", "rollback", lambda t, a: f"lab: restart every process of {_where(a, undo=True)}, wait until ready"
)
def site_up(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo("site_up", f"site:{site}", lambda: faults.start_site(lab.state_dir, _named(site)))


@_register(
    "lab",
    "fault",
    lambda t, a: f"lab: SIGKILL api replica {a.get('index', 0)} of site {a['site']!r}",
    undo="replica_up",
)
def replica_down(site: str, index: int = 0, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _apply(
        "replica_down",
        f"replica:{site}:{index}",
        site,
        f"replica {site}/{index} down",
        lambda: faults.kill_replica(lab.state_dir, site, index),
        lambda: faults.restart_replica(lab.state_dir, site, index),
    )


@_register(
    "lab", "rollback", lambda t, a: f"lab: restart api replica {a.get('index', 0)} of site {a['site']!r}"
)
def replica_up(site: str, index: int = 0, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo(
        "replica_up", f"replica:{site}:{index}", lambda: faults.restart_replica(lab.state_dir, site, index)
    )


@_register(
    "lab",
    "fault",
    lambda t, a: "lab: SIGKILL the current Redis primary (Sentinel promotes a replica)",
    undo="cache_restore",
)
def cache_primary_down(configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _apply(
        "cache_primary_down",
        "redis-primary",
        None,
        "Redis primary down",
        lambda: faults.kill_redis_primary(lab.state_dir),
        lambda: faults.restore_redis(lab.state_dir),
    )


@_register("lab", "rollback", lambda t, a: "lab: restart stopped Redis nodes as replicas of the new primary")
def cache_restore(configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo("cache_restore", "redis-primary", lambda: faults.restore_redis(lab.state_dir))


@_register("lab", "fault", lambda t, a: f"lab: SIGKILL the NATS node of site {a['site']!r}", undo="broker_up")
def broker_down(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _apply(
        "broker_down",
        f"broker:{site}",
        site,
        f"broker of {site} down",
        lambda: faults.stop_broker(lab.state_dir, site),
        lambda: faults.start_broker(lab.state_dir, site),
    )


@_register("lab", "rollback", lambda t, a: f"lab: restart the NATS node of site {a['site']!r}")
def broker_up(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo("broker_up", f"broker:{site}", lambda: faults.start_broker(lab.state_dir, site))


@_register(
    "lab",
    "fault",
    lambda t, a: f"lab: SIGSTOP api replica {a.get('index', 0)} of site {a['site']!r} (it hangs)",
    undo="replica_resume",
)
def replica_slow(site: str, index: int = 0, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _apply(
        "replica_slow",
        f"pause:{site}:{index}",
        site,
        f"replica {site}/{index} stopped",
        lambda: faults.pause_replica(lab.state_dir, site, index),
        lambda: faults.resume_replica(lab.state_dir, site, index),
    )


@_register(
    "lab", "rollback", lambda t, a: f"lab: SIGCONT api replica {a.get('index', 0)} of site {a['site']!r}"
)
def replica_resume(site: str, index: int = 0, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo(
        "replica_resume", f"pause:{site}:{index}", lambda: faults.resume_replica(lab.state_dir, site, index)
    )


@_register(
    "lab", "fault", lambda t, a: f"lab (root): cut the network link of {_where(a)}", undo="partition_heal"
)
def site_partition(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    name = _site(lab, site)
    return _apply(
        "site_partition",
        f"partition:{site}",
        name,
        f"site {name} partitioned",
        lambda: faults.partition_site(lab.state_dir, name),
        lambda: faults.heal_partition(lab.state_dir, name),
    )


@_register("lab", "rollback", lambda t, a: f"lab (root): restore the network link of {_where(a, undo=True)}")
def partition_heal(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo(
        "partition_heal", f"partition:{site}", lambda: faults.heal_partition(lab.state_dir, _named(site))
    )


def _describe_latency(t: Target | None, a: dict[str, Any]) -> str:
    figures = f"+{a.get('delay_ms', 100)} ms ±{a.get('jitter_ms', 0)} ms, {a.get('loss_percent', 0)} % loss"
    return (
        f"lab (root): delay (and drop) packets to and from site {a['site']!r}, each direction: {figures} "
        "(tc netem; without netem, a userspace delay line on the link and nftables for the loss)"
    )


@_register("lab", "fault", _describe_latency, undo="latency_clear")
def site_latency(
    site: str,
    delay_ms: int = 100,
    jitter_ms: int = 0,
    loss_percent: float = 0.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _apply(
        "site_latency",
        f"netem:{site}",
        site,
        f"latency on {site}",
        lambda: faults.add_latency(lab.state_dir, site, delay_ms, jitter_ms, loss_percent),
        lambda: faults.clear_latency(lab.state_dir, site),
    )


@_register(
    "lab",
    "rollback",
    lambda t, a: (
        f"lab (root): remove the delay and loss (tc netem, or delay line and nftables) of site {a['site']!r}"
    ),
)
def latency_clear(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo("latency_clear", f"netem:{site}", lambda: faults.clear_latency(lab.state_dir, site))


@_register(
    "lab",
    "fault",
    lambda t, a: (
        f"lab (root): nftables in the site's namespace drops {a.get('loss_percent', 10)} % of the packets "
        f"to and from {_where(a)}, each direction (no netem needed)"
    ),
    undo="packet_loss_clear",
)
def site_packet_loss(
    site: str, loss_percent: float = 10, configuration: Configuration = None
) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    name = _site(lab, site)
    return _apply(
        "site_packet_loss",
        f"loss:{site}",
        name,
        f"{loss_percent} % packet loss on {name}",
        lambda: faults.add_packet_loss(lab.state_dir, name, loss_percent),
        lambda: faults.clear_packet_loss(lab.state_dir, name),
    )


@_register(
    "lab",
    "rollback",
    lambda t, a: f"lab (root): delete the packet-loss nftables table of {_where(a, undo=True)}",
)
def packet_loss_clear(site: str, configuration: Configuration = None) -> dict[str, Any]:
    lab, faults = _lab(configuration), _lab_faults()
    return _undo(
        "packet_loss_clear", f"loss:{site}", lambda: faults.clear_packet_loss(lab.state_dir, _named(site))
    )


# --- lab probes ---------------------------------------------------------------------------


@_register(
    "lab", "probe", lambda t, a: f"lab: read the front door's server states (site {a.get('site', 'any')})"
)
def front_door_servers(site: str | None = None, configuration: Configuration = None) -> list[dict[str, Any]]:
    from skyfleet.lab.frontdoor import server_states

    states = server_states(_lab(configuration).state_dir)
    return [s for s in states if site is None or s.get("site") == site]


@_register(
    "lab", "probe", lambda t, a: f"lab: is every front door server of site {a['site']!r} out of rotation"
)
def site_out_of_rotation(site: str, configuration: Configuration = None) -> bool:
    servers = front_door_servers(site, configuration)
    return bool(servers) and all(not str(s.get("status", "")).startswith("UP") for s in servers)


@_register("lab", "probe", lambda t, a: "lab: is every front door server of the faulted site out of rotation")
def faulted_site_out_of_rotation(configuration: Configuration = None) -> bool:
    run = current()
    if run is None or run.fault.site is None:
        raise RuntimeError("no fault with a site has been applied in this drill")
    return site_out_of_rotation(run.fault.site, configuration)


# --- AWS ----------------------------------------------------------------------------------


def _aws() -> Any:
    from skyfleet.drills.cloud import aws

    return aws


def _describe_aws_scale(t: Target | None, a: dict[str, Any]) -> str:
    service = a.get("service", "api")
    where = "<cluster>/<service>"
    if isinstance(t, StackTarget):
        site = t.site()
        where = f"{site.cluster_name}/{_aws().service_name(site, service)}"
    return f"aws: ECS update_service {where} desiredCount=0"


@_register("aws", "fault", _describe_aws_scale, undo="aws_service_restore")
def aws_service_scale_to_zero(service: str = "api", configuration: Configuration = None) -> dict[str, Any]:
    stack, aws = _stack(configuration), _aws()
    site = stack.site()
    started = time.time()
    previous = aws.scale_service(site, service, 0)
    return _apply(
        "aws_service_scale_to_zero",
        f"ecs:{service}",
        site.site,
        f"ECS {service} scaled 0 (was {previous})",
        lambda: {"previous_desired_count": previous},
        lambda: aws.scale_service(site, service, previous),
        started,
    )


@_register(
    "aws", "rollback", lambda t, a: "aws: ECS update_service desiredCount back to the count read at the fault"
)
def aws_service_restore(
    service: str = "api", count: int | None = None, configuration: Configuration = None
) -> dict[str, Any]:
    stack, aws = _stack(configuration), _aws()
    fallback = None if count is None else (lambda: aws.scale_service(stack.site(), service, count))
    return _undo("aws_service_restore", f"ecs:{service}", fallback)


def _describe_sg(t: Target | None, a: dict[str, Any]) -> str:
    group = t.site().task_security_group_id if isinstance(t, StackTarget) else "<taskSecurityGroupId>"
    return f"aws: EC2 revoke_security_group_ingress on {group} (every ingress rule, saved for the rollback)"


@_register("aws", "fault", _describe_sg, undo="aws_security_group_restore")
def aws_security_group_cut(configuration: Configuration = None) -> dict[str, Any]:
    stack, aws = _stack(configuration), _aws()
    site = stack.site()
    started = time.time()
    rules = aws.cut_security_group(site)
    return _apply(
        "aws_security_group_cut",
        "sg-ingress",
        site.site,
        f"security group {site.task_security_group_id} ingress cut ({len(rules)} rules)",
        lambda: {"revoked_rules": len(rules)},
        lambda: aws.restore_security_group(site, rules),
        started,
    )


@_register("aws", "rollback", lambda t, a: "aws: EC2 authorize_security_group_ingress with the saved rules")
def aws_security_group_restore(configuration: Configuration = None) -> dict[str, Any]:
    _stack(configuration)
    return _undo("aws_security_group_restore", "sg-ingress")


def _describe_hc(t: Target | None, a: dict[str, Any]) -> str:
    hc = "<healthCheckIds[site]>"
    if isinstance(t, StackTarget):
        hc = _aws().health_check_id(t.edge(a.get("edge_stack")), a["site"])
    return f"aws: Route 53 update_health_check {hc} Inverted=true (site {a['site']!r} reported unhealthy)"


@_register("aws", "fault", _describe_hc, undo="aws_health_check_restore")
def aws_health_check_invert(
    site: str, edge_stack: str | None = None, configuration: Configuration = None
) -> dict[str, Any]:
    stack, aws = _stack(configuration), _aws()
    edge = stack.edge(edge_stack)
    started = time.time()
    previous = aws.set_health_check_inverted(edge, site, True)
    return _apply(
        "aws_health_check_invert",
        f"hc:{site}",
        site,
        f"Route 53 health check of {site} inverted",
        lambda: {"health_check_id": aws.health_check_id(edge, site), "previous_inverted": previous},
        lambda: aws.set_health_check_inverted(edge, site, previous),
        started,
    )


@_register(
    "aws", "rollback", lambda t, a: "aws: Route 53 update_health_check Inverted back to its previous value"
)
def aws_health_check_restore(
    site: str, edge_stack: str | None = None, configuration: Configuration = None
) -> dict[str, Any]:
    stack, aws = _stack(configuration), _aws()
    return _undo(
        "aws_health_check_restore",
        f"hc:{site}",
        lambda: aws.set_health_check_inverted(stack.edge(edge_stack), site, False),
    )


# --- GCP ----------------------------------------------------------------------------------


def _gcp() -> Any:
    from skyfleet.drills.cloud import gcp

    return gcp


def _describe_run(action: str) -> Callable[[Target | None, dict[str, Any]], str]:
    def describe(t: Target | None, a: dict[str, Any]) -> str:
        path = _gcp().service_path(t.site()) if isinstance(t, StackTarget) else "<Cloud Run service>"
        return f"gcp: Cloud Run update_service {path}: {action}"

    return describe


@_register("gcp", "fault", _describe_run("ingress=INGRESS_TRAFFIC_INTERNAL_ONLY"), undo="gcp_ingress_restore")
def gcp_ingress_internal(configuration: Configuration = None) -> dict[str, Any]:
    stack, gcp = _stack(configuration), _gcp()
    site = stack.site()
    started = time.time()
    previous = gcp.set_ingress(site, "INGRESS_TRAFFIC_INTERNAL_ONLY")
    return _apply(
        "gcp_ingress_internal",
        "run-ingress",
        site.site,
        f"Cloud Run ingress internal (was {previous})",
        lambda: {"previous_ingress": previous},
        lambda: gcp.set_ingress(site, previous),
        started,
    )


@_register("gcp", "rollback", _describe_run("ingress back to its previous value"))
def gcp_ingress_restore(ingress: str | None = None, configuration: Configuration = None) -> dict[str, Any]:
    stack, gcp = _stack(configuration), _gcp()
    fallback = None if ingress is None else (lambda: gcp.set_ingress(stack.site(), ingress))
    return _undo("gcp_ingress_restore", "run-ingress", fallback)


@_register(
    "gcp", "fault", _describe_run("manual scaling to 0 instances (traffic to 0)"), undo="gcp_traffic_restore"
)
def gcp_traffic_zero(configuration: Configuration = None) -> dict[str, Any]:
    stack, gcp = _stack(configuration), _gcp()
    site = stack.site()
    started = time.time()
    previous = gcp.scale_to_zero(site)
    return _apply(
        "gcp_traffic_zero",
        "run-scaling",
        site.site,
        "Cloud Run scaled to 0",
        lambda: {"previous_scaling": previous},
        lambda: gcp.restore_scaling(site, previous),
        started,
    )


@_register("gcp", "rollback", _describe_run("scaling back to its previous settings"))
def gcp_traffic_restore(configuration: Configuration = None) -> dict[str, Any]:
    _stack(configuration)
    return _undo("gcp_traffic_restore", "run-scaling")


# --- Kubernetes ---------------------------------------------------------------------------


def _k8s() -> Any:
    from skyfleet.drills.cloud import kubernetes

    return kubernetes


def _describe_k8s_scale(t: Target | None, a: dict[str, Any]) -> str:
    name, ns = "<deployment>", "<namespace>"
    if isinstance(t, StackTarget):
        site = t.site()
        name, ns = _k8s().deployment_name(site, a.get("deployment", "api")), site.namespace
    return f"kubernetes: scale deployment {ns}/{name} to 0 replicas"


@_register("kubernetes", "fault", _describe_k8s_scale, undo="k8s_scale_restore")
def k8s_scale_to_zero(deployment: str = "api", configuration: Configuration = None) -> dict[str, Any]:
    stack, k8s = _stack(configuration), _k8s()
    site = stack.site()
    started = time.time()
    previous = k8s.scale(site, deployment, 0)
    return _apply(
        "k8s_scale_to_zero",
        f"k8s-scale:{deployment}",
        site.site,
        f"deployment {deployment} scaled to 0 (was {previous})",
        lambda: {"previous_replicas": previous},
        lambda: k8s.scale(site, deployment, previous),
        started,
    )


@_register(
    "kubernetes", "rollback", lambda t, a: "kubernetes: scale the deployment back to its previous replicas"
)
def k8s_scale_restore(
    deployment: str = "api", replicas: int | None = None, configuration: Configuration = None
) -> dict[str, Any]:
    stack, k8s = _stack(configuration), _k8s()
    fallback = None if replicas is None else (lambda: k8s.scale(stack.site(), deployment, replicas))
    return _undo("k8s_scale_restore", f"k8s-scale:{deployment}", fallback)


def _describe_deny(t: Target | None, a: dict[str, Any]) -> str:
    ns = t.site().namespace if isinstance(t, StackTarget) else "<namespace>"
    return (
        f"kubernetes: create NetworkPolicy {ns}/{_k8s().DENY_POLICY_NAME} denying all ingress to the "
        f"{a.get('deployment', 'api')} pods"
    )


@_register("kubernetes", "fault", _describe_deny, undo="k8s_deny_all_remove")
def k8s_deny_all(deployment: str = "api", configuration: Configuration = None) -> dict[str, Any]:
    stack, k8s = _stack(configuration), _k8s()
    site = stack.site()
    started = time.time()
    policy = k8s.add_deny_all(site, deployment)
    return _apply(
        "k8s_deny_all",
        "k8s-deny",
        site.site,
        "deny-all NetworkPolicy",
        lambda: {"policy": policy["metadata"]["name"]},
        lambda: k8s.remove_deny_all(site),
        started,
    )


@_register(
    "kubernetes", "rollback", lambda t, a: f"kubernetes: delete NetworkPolicy {_k8s().DENY_POLICY_NAME}"
)
def k8s_deny_all_remove(configuration: Configuration = None) -> dict[str, Any]:
    stack, k8s = _stack(configuration), _k8s()
    return _undo("k8s_deny_all_remove", "k8s-deny", lambda: k8s.remove_deny_all(stack.site()))
