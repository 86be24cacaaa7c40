"""Lab faults and probes, through the lab's own primitives (``skyfleet.lab.faults``).

The lab's primitives are idempotent and their undos wait until the part is ready again. A
site argument may name the role rather than the site: ``serving`` is the site the edge sends
the global name to when the fault is applied (the one holding the users' sessions: the worst
to lose). An active-active edge answers with several sites, each holding a share of the
sessions: ``serving`` is then the first of them by name. The ledger key keeps the name as
given, so the rollback finds the fault whichever site it turned out to be.
"""

from __future__ import annotations

from typing import Any

from skyfleet.drills import context
from skyfleet.drills.actions.registry import Applied, Configuration, LabFault, Undo, probe
from skyfleet.drills.target import LabTarget, Target

# What the lab's actions use, imported when first needed (the fault module alone takes ~0.7 s).
SDK_MODULES = ("skyfleet.lab.faults", "skyfleet.lab.edge", "skyfleet.lab.replication")
PRIMARY_SITE = "serving"


def _faults():  # the module skyfleet.lab.faults
    import skyfleet.lab.faults

    return skyfleet.lab.faults


def _site(lab: LabTarget, site: str) -> str:
    """The site a fault acts on: ``site`` itself, or a site the edge routes to right now (the
    first by name when an active-active edge routes to several)."""
    if site != PRIMARY_SITE:
        return site
    from skyfleet.lab.edge import routed_sites
    from skyfleet.lab.state import load_state

    routed = routed_sites(lab.state_dir)
    edge = load_state(lab.state_dir).edge
    failover = edge is None or edge.routing == "failover"
    if not routed or (failover and len(routed) != 1):
        raise RuntimeError(
            f"site {PRIMARY_SITE!r}: the edge routes the global name to {routed}, not "
            + ("one site" if failover else "any site")
        )
    return sorted(routed)[0]


def _named(site: str) -> str:
    """A rollback without its fault in the ledger must be told which site to restore."""
    if site == PRIMARY_SITE:
        raise RuntimeError(
            f"no open fault for site {PRIMARY_SITE!r} in this run: the primary has moved since, so "
            "name the site to restore (e.g. site: aws-prod)"
        )
    return site


def _where(args: dict[str, Any], *, undo: bool = False) -> str:
    """How a dry run names the site a lab action acts on."""
    if args.get("site") == PRIMARY_SITE:
        return "the site that served the global name" if undo else "the site serving the global name"
    return f"site {args.get('site')!r}"


class SiteLoss(LabFault):
    """Lose a site: SIGKILL its pods and load balancer and cut its uplink (a provider's regional
    services keep their data behind the cut, as through a region's outage)."""

    fault, rollback, key = "site_down", "site_up", "site:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        how = " silently" if args.get("silent") else ""
        return f"lab: SIGKILL every pod and the load balancer of {_where(args)} and cut its uplink{how}"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: restart every process of {_where(args, undo=True)}, wait until ready"

    def apply(self, lab: LabTarget, site: str, silent: bool = False) -> Applied:
        name = _site(lab, site)
        return Applied(
            name,
            f"site {name} down",
            _faults().stop_site(lab.state_dir, name, silent=silent),
            lambda: _faults().start_site(lab.state_dir, name),
        )

    def restore(self, lab: LabTarget, site: str) -> Undo:
        return lambda: _faults().start_site(lab.state_dir, _named(site))


class ReplicaLoss(LabFault):
    """SIGKILL one api replica."""

    fault, rollback, key = "replica_down", "replica_up", "replica:{site}:{index}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: SIGKILL api replica {args.get('index', 0)} of site {args['site']!r}"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: restart api replica {args.get('index', 0)} of site {args['site']!r}"

    def apply(self, lab: LabTarget, site: str, index: int = 0) -> Applied:
        site = _site(lab, site)
        return Applied(
            site,
            f"replica {site}/{index} down",
            _faults().kill_replica(lab.state_dir, site, index),
            lambda: _faults().restart_replica(lab.state_dir, site, index),
        )

    def restore(self, lab: LabTarget, site: str, index: int = 0) -> Undo:
        return lambda: _faults().restart_replica(lab.state_dir, site, index)


class CachePrimaryLoss(LabFault):
    """Lose a site's cache primary: the failover its plan asks for (the provider's, or
    Sentinel's on-prem) must bring writes back."""

    fault, rollback, key = "cache_primary_down", "cache_restore", "cache:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: SIGKILL the cache primary of {_where(args)} (its failover promotes a replica)"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: restart the lost cache node of {_where(args, undo=True)} as a replica"

    def apply(self, lab: LabTarget, site: str = PRIMARY_SITE) -> Applied:
        name = _site(lab, site)
        return Applied(
            name,
            f"cache primary of {name} down",
            _faults().kill_cache_primary(lab.state_dir, name),
            lambda: _faults().restore_cache(lab.state_dir, name),
        )

    def restore(self, lab: LabTarget, site: str = PRIMARY_SITE) -> Undo:
        return lambda: _faults().restore_cache(lab.state_dir, _named(site))


class BrokerLoss(LabFault):
    """Lose a site's broker: a NATS node on-prem, the Pub/Sub server, or SQS made unreachable
    (frozen: a regional service keeps its messages through an outage)."""

    fault, rollback, key = "broker_down", "broker_up", "broker:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: take down the queue service of {_where(args)}"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: bring back the queue service of {_where(args, undo=True)}"

    def apply(self, lab: LabTarget, site: str) -> Applied:
        name = _site(lab, site)
        return Applied(
            name,
            f"broker of {name} down",
            _faults().stop_broker(lab.state_dir, name),
            lambda: _faults().start_broker(lab.state_dir, name),
        )

    def restore(self, lab: LabTarget, site: str) -> Undo:
        return lambda: _faults().start_broker(lab.state_dir, _named(site))


class ReplicaHang(LabFault):
    """SIGSTOP one api replica: it hangs (slow or no answers) without dying."""

    fault, rollback, key = "replica_slow", "replica_resume", "pause:{site}:{index}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: SIGSTOP api replica {args.get('index', 0)} of site {args['site']!r} (it hangs)"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: SIGCONT api replica {args.get('index', 0)} of site {args['site']!r}"

    def apply(self, lab: LabTarget, site: str, index: int = 0) -> Applied:
        return Applied(
            site,
            f"replica {site}/{index} stopped",
            _faults().pause_replica(lab.state_dir, site, index),
            lambda: _faults().resume_replica(lab.state_dir, site, index),
        )

    def restore(self, lab: LabTarget, site: str, index: int = 0) -> Undo:
        return lambda: _faults().resume_replica(lab.state_dir, site, index)


class Partition(LabFault):
    """Cut a site's uplink: its processes run on, unreachable from outside (``silent``: nothing
    ever answers, as on the internet; see ``skyfleet.lab.faults._cut``)."""

    fault, rollback, key = "site_partition", "partition_heal", "partition:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: cut the uplink of {_where(args)}" + (" silently" if args.get("silent") else "")

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab: restore the uplink of {_where(args, undo=True)}"

    def apply(self, lab: LabTarget, site: str, silent: bool = False) -> Applied:
        name = _site(lab, site)
        return Applied(
            name,
            f"site {name} partitioned",
            _faults().partition_site(lab.state_dir, name, silent=silent),
            lambda: _faults().heal_partition(lab.state_dir, name),
        )

    def restore(self, lab: LabTarget, site: str) -> Undo:
        return lambda: _faults().heal_partition(lab.state_dir, _named(site))


class Latency(LabFault):
    """Delay (and drop) packets to and from a site, each direction (root, ``--netns``)."""

    fault, rollback, key = "site_latency", "latency_clear", "netem:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        figures = (
            f"+{args.get('delay_ms', 100)} ms ±{args.get('jitter_ms', 0)} ms, "
            f"{args.get('loss_percent', 0)} % loss"
        )
        return (
            f"lab (root): delay (and drop) packets to and from site {args['site']!r}, each direction: "
            f"{figures} (tc netem; without netem, a userspace delay line on the link and nftables for "
            "the loss)"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return (
            "lab (root): remove the delay and loss (tc netem, or delay line and nftables) of site "
            f"{args['site']!r}"
        )

    def apply(
        self, lab: LabTarget, site: str, delay_ms: int = 100, jitter_ms: int = 0, loss_percent: float = 0.0
    ) -> Applied:
        return Applied(
            site,
            f"latency on {site}",
            _faults().add_latency(lab.state_dir, site, delay_ms, jitter_ms, loss_percent),
            lambda: _faults().clear_latency(lab.state_dir, site),
        )

    def restore(self, lab: LabTarget, site: str) -> Undo:
        return lambda: _faults().clear_latency(lab.state_dir, site)


class PacketLoss(LabFault):
    """Drop a share of the packets to and from a site with nftables (root, ``--netns``)."""

    fault, rollback, key = "site_packet_loss", "packet_loss_clear", "loss:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return (
            f"lab (root): nftables in the site's namespace drops {args.get('loss_percent', 10)} % of the "
            f"packets to and from {_where(args)}, each direction (no netem needed)"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return f"lab (root): delete the packet-loss nftables table of {_where(args, undo=True)}"

    def apply(self, lab: LabTarget, site: str, loss_percent: float = 10) -> Applied:
        name = _site(lab, site)
        return Applied(
            name,
            f"{loss_percent} % packet loss on {name}",
            _faults().add_packet_loss(lab.state_dir, name, loss_percent),
            lambda: _faults().clear_packet_loss(lab.state_dir, name),
        )

    def restore(self, lab: LabTarget, site: str) -> Undo:
        return lambda: _faults().clear_packet_loss(lab.state_dir, _named(site))


site_down, site_up = SiteLoss.functions()
replica_down, replica_up = ReplicaLoss.functions()
cache_primary_down, cache_restore = CachePrimaryLoss.functions()
broker_down, broker_up = BrokerLoss.functions()
replica_slow, replica_resume = ReplicaHang.functions()
site_partition, partition_heal = Partition.functions()
site_latency, latency_clear = Latency.functions()
site_packet_loss, packet_loss_clear = PacketLoss.functions()


# --- probes -------------------------------------------------------------------------------------


def _lab(configuration: Configuration) -> LabTarget:
    target = context.target(configuration)
    if not isinstance(target, LabTarget):
        raise RuntimeError(f"this action acts on the lab, but the drill targets {target.label}")
    return target


@probe("lab", lambda t, a: f"lab: read the load balancer's backend states of site {a['site']!r}")
def site_backends(site: str, configuration: Configuration = None) -> dict[str, str]:
    from skyfleet.lab.faults import backends
    from skyfleet.lab.state import load_state

    return backends(load_state(_lab(configuration).state_dir), site)


@probe("lab", lambda t, a: f"lab: does the edge route the global name away from site {a['site']!r}")
def site_out_of_rotation(site: str, configuration: Configuration = None) -> bool:
    from skyfleet.lab.edge import routed_sites

    return site not in routed_sites(_lab(configuration).state_dir)


@probe("lab", lambda t, a: "lab: does the edge route the global name away from the faulted site")
def faulted_site_out_of_rotation(configuration: Configuration = None) -> bool:
    run = context.current()
    if run is None or run.fault.site is None:
        raise RuntimeError("no fault with a site has been applied in this drill")
    return site_out_of_rotation(run.fault.site, configuration)


@probe(
    "lab",
    lambda t, a: (
        f"lab: wait (at most {a.get('timeout', 150)} s) until the edge routes the global name to the "
        "faulted site again"
    ),
)
def faulted_site_back_in_rotation(timeout: float = 150.0, configuration: Configuration = None) -> float:
    """A failback: wait until the edge sends the global name to the restored site; seconds waited."""
    from skyfleet.lab.edge import wait_routed

    run = context.current()
    if run is None or run.fault.site is None:
        raise RuntimeError("no fault with a site has been applied in this drill")
    return wait_routed(_lab(configuration).state_dir, run.fault.site, timeout=timeout)


@probe(
    "lab",
    lambda t, a: (
        f"lab: wait (at most {a.get('timeout', 150)} s) until the edge routes away from the faulted site"
    ),
)
def faulted_site_left_rotation(timeout: float = 150.0, configuration: Configuration = None) -> float:
    """A failover: wait until the edge no longer sends the global name to the faulted site;
    seconds waited."""
    from skyfleet.lab.edge import wait_routed

    run = context.current()
    if run is None or run.fault.site is None:
        raise RuntimeError("no fault with a site has been applied in this drill")
    return round(wait_routed(_lab(configuration).state_dir, run.fault.site, timeout=timeout, routed=False), 3)
