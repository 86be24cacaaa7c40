"""Root/netns mode: each site in its own network namespace, joined by one bridge.

Every site (and the witness) gets a namespace with one veth link to a bridge in the root
namespace, and one address in the lab's private /24; the front door stays in the root
namespace and reaches the sites over the bridge. Cutting a site's link is then a real
partition (its processes keep running, nobody can reach them), and tc netem on that link is
real latency or loss, which signals alone cannot fake.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.state import Network, SiteNetwork

# Sites get host numbers from here on; .1 is the bridge (the root namespace's address).
FIRST_HOST = 10


def is_root() -> bool:
    return os.geteuid() == 0


def bridge_name(lab_id: str) -> str:
    return f"sfbr{lab_id}"  # interface names are limited to 15 characters


def namespace_name(lab_id: str, member: str) -> str:
    return f"skyfleet-{lab_id}-{member}"


def plan(config: LabConfig) -> Network:
    net = config.subnet()
    hosts = list(net.hosts())
    bridge = bridge_name(config.lab_id)
    sites = {}
    for i, member in enumerate(config.quorum_members):
        sites[member] = SiteNetwork(
            namespace=namespace_name(config.lab_id, member),
            address=str(hosts[FIRST_HOST - 1 + i]),
            veth_host=f"sfh{config.lab_id}{i}",
            veth_ns=f"sfn{config.lab_id}{i}",
        )
    return Network(bridge=bridge, bridge_address=str(hosts[0]), subnet=str(net), sites=sites)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def tc(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", netns, "tc", *args] if netns else ["tc", *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def _subnet_in_use(subnet: str) -> str | None:
    net = ipaddress.IPv4Network(subnet)
    out = ip("-4", "-o", "addr", "show").stdout
    for line in out.splitlines():
        parts = line.split()
        addr = parts[parts.index("inet") + 1]
        if ipaddress.IPv4Interface(addr).network.overlaps(net):
            return f"{parts[1]} has {addr}"
    return None


def create(network: Network) -> None:
    """Create the bridge, the namespaces and their links; fail before touching anything in use."""
    if not is_root():
        raise LabError("netns: network namespaces need root; run as root or drop --netns")
    clash = _subnet_in_use(network.subnet)
    if clash:
        raise LabError(
            f"netns_subnet: {network.subnet} is already in use ({clash}); "
            "pick another with netns_subnet or another --base-port"
        )
    existing = set(ip("netns", "list").stdout.split())
    for site in network.sites.values():
        if site.namespace in existing:
            raise LabError(f"netns: namespace {site.namespace} already exists; run `skyfleet lab down` first")
    ip("link", "add", network.bridge, "type", "bridge")
    ip("addr", "add", f"{network.bridge_address}/24", "dev", network.bridge)
    ip("link", "set", network.bridge, "up")
    for site in network.sites.values():
        ip("netns", "add", site.namespace)
        ip("link", "add", site.veth_host, "type", "veth", "peer", "name", site.veth_ns)
        ip("link", "set", site.veth_ns, "netns", site.namespace)
        ip("link", "set", site.veth_host, "master", network.bridge, "up")
        ip("-n", site.namespace, "addr", "add", f"{site.address}/24", "dev", site.veth_ns)
        ip("-n", site.namespace, "link", "set", site.veth_ns, "up")
        ip("-n", site.namespace, "link", "set", "lo", "up")


def destroy(network: Network) -> list[str]:
    """Delete the namespaces (their links go with them) and the bridge; idempotent."""
    removed = []
    existing = set(ip("netns", "list", check=False).stdout.split())
    for site in network.sites.values():
        if site.namespace in existing:
            ip("netns", "del", site.namespace, check=False)
            removed.append(site.namespace)
        ip("link", "del", site.veth_host, check=False)
    if Path(f"/sys/class/net/{network.bridge}").exists():
        ip("link", "del", network.bridge, check=False)
        removed.append(network.bridge)
    return removed


def destroy_by_id(lab_id: str) -> list[str]:
    """Delete a lab's namespaces and bridge by name alone (when its state file is lost)."""
    removed = []
    for name in ip("netns", "list", check=False).stdout.split():
        if name.startswith(namespace_name(lab_id, "")):
            ip("netns", "del", name, check=False)
            removed.append(name)
    bridge = bridge_name(lab_id)
    if Path(f"/sys/class/net/{bridge}").exists():
        ip("link", "del", bridge, check=False)
        removed.append(bridge)
    return removed


def set_link(site: SiteNetwork, up: bool) -> None:
    """Connect or cut a site's only link to the rest of the lab."""
    ip("link", "set", site.veth_host, "up" if up else "down")


def link_is_up(site: SiteNetwork) -> bool:
    out = ip("-o", "link", "show", site.veth_host, check=False).stdout
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
    return "UP" in flags


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (some VM kernels ship without sch_netem).

    Probed on the loopback of a throwaway namespace, so no live interface is touched.
    """
    if not is_root():
        return False
    probe_ns = f"skyfleet-netem-probe-{os.getpid()}"
    ip("netns", "add", probe_ns)
    try:
        return (
            tc(
                "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", netns=probe_ns, check=False
            ).returncode
            == 0
        )
    finally:
        ip("netns", "del", probe_ns, check=False)


def set_netem(site: SiteNetwork, *, delay_ms: int, jitter_ms: int, loss_percent: float) -> str:
    """Apply the same netem on both ends of the link, so both directions are affected."""
    if not netem_available():
        raise LabError(
            f"latency/loss: this kernel ({os.uname().release}) has no netem qdisc (sch_netem), "
            "so delay and loss cannot be injected here; partitions still work"
        )
    spec = ["delay", f"{delay_ms}ms"]
    if jitter_ms:
        spec.append(f"{jitter_ms}ms")
    if loss_percent:
        spec += ["loss", f"{loss_percent}%"]
    tc("qdisc", "replace", "dev", site.veth_host, "root", "netem", *spec)
    tc("qdisc", "replace", "dev", site.veth_ns, "root", "netem", *spec, netns=site.namespace)
    return " ".join(spec)


def clear_netem(site: SiteNetwork) -> None:
    tc("qdisc", "del", "dev", site.veth_host, "root", check=False)
    tc("qdisc", "del", "dev", site.veth_ns, "root", netns=site.namespace, check=False)
