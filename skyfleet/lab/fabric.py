"""The twin's network: a WAN, one namespace per site, one namespace per pod.

- The **WAN** is a bridge in the root namespace holding the lab's first address (.1): clients
  (the load generator), the edge's DNS server and its health checkers live there.
- Each **site** is a network namespace with its own bridge, joined to the WAN by one veth: its
  uplink. Cutting the uplink is a partition; the delay line and packet loss act on it; traffic
  inside the site (api to its cache) never crosses it, as in a region.
- Each **pod** (an ECS task, a Cloud Run instance, a Kubernetes pod, a managed-service node) is
  a namespace of its own with one address (a load balancer whose site plans several public
  addresses gets that many), so every process keeps the port its plan gives it.

Every address is in the lab's /24, on one L2 segment: no routing, no forwarding in the root
namespace. Nothing here reaches beyond the lab's own addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from skyfleet.lab.errors import LabError
from skyfleet.lab.network import _subnet_in_use, ip, is_root, pin_bridge_address

FIRST_HOST = 10
SITE_BRIDGE = "br0"
POD_IFACE = "eth0"


class PodLink(BaseModel):
    namespace: str
    address: str
    site_end: str  # the veth end on the site's bridge, in the site's namespace
    # More addresses on the same interface (a load balancer the plan gives several).
    extra_addresses: list[str] = Field(default_factory=list)


class SiteLink(BaseModel):
    namespace: str
    uplink_host: str  # on the WAN bridge, in the root namespace: partitions and delay act here
    uplink_site: str  # in the site's namespace, a port of its bridge


class Fabric(BaseModel):
    lab_id: str
    subnet: str
    wan_bridge: str
    wan_address: str
    sites: dict[str, SiteLink] = Field(default_factory=dict)
    pods: dict[str, PodLink] = Field(default_factory=dict)  # pod key "site/pod" -> link


@dataclass
class Allocator:
    """Hands out the /24's addresses and interface names in a fixed order."""

    lab_id: str
    subnet: ipaddress.IPv4Network
    next_host: int = FIRST_HOST
    next_site: int = 0
    next_pod: int = 0

    def address(self) -> str:
        hosts = list(self.subnet.hosts())
        if self.next_host > len(hosts):
            raise LabError(f"the lab's subnet {self.subnet} has no address left for another pod")
        addr = str(hosts[self.next_host - 1])
        self.next_host += 1
        return addr


def plan(
    lab_id: str,
    subnet: str,
    sites: list[str],
    pods: dict[str, list[str]],
    extra: dict[str, int] | None = None,
) -> Fabric:
    """Names and addresses for ``sites`` and their ``pods`` (site -> pod names), in order;
    ``extra`` gives some pods (by key "site/pod") that many more addresses."""
    net = ipaddress.IPv4Network(subnet)
    alloc = Allocator(lab_id, net)
    fabric = Fabric(
        lab_id=lab_id,
        subnet=subnet,
        wan_bridge=f"sfw{lab_id}",
        wan_address=str(next(net.hosts())),
    )
    for i, site in enumerate(sites):
        fabric.sites[site] = SiteLink(
            namespace=f"skyfleet-{lab_id}-{site}",
            uplink_host=f"sfh{lab_id}{i}",
            uplink_site=f"sfu{lab_id}{i}",
        )
        for j, pod in enumerate(pods.get(site, [])):
            fabric.pods[f"{site}/{pod}"] = PodLink(
                namespace=f"skyfleet-{lab_id}-{site}-{pod}",
                address=alloc.address(),
                site_end=f"p{j}",
            )
    # Extra addresses after every pod's first, so adding one never moves another pod.
    for key, count in sorted((extra or {}).items()):
        fabric.pods[key].extra_addresses = [alloc.address() for _ in range(count)]
    return fabric


def create(fabric: Fabric) -> None:
    """Build the WAN, the sites and the pods; refuse to touch anything already in use."""
    if not is_root():
        raise LabError("the lab needs root: every site and pod runs in network namespaces of its own")
    clash = _subnet_in_use(fabric.subnet)
    if clash:
        raise LabError(
            f"subnet: {fabric.subnet} is already in use ({clash}); pick another with --subnet or --base-port"
        )
    existing = set(ip("netns", "list").stdout.split())
    ours = [s.namespace for s in fabric.sites.values()] + [p.namespace for p in fabric.pods.values()]
    taken = sorted(n for n in ours if n in existing)
    if taken:
        raise LabError(f"namespaces {taken} already exist; run `skyfleet lab down` first")
    ip("link", "add", fabric.wan_bridge, "type", "bridge")
    pin_bridge_address(fabric.wan_bridge)
    ip("addr", "add", f"{fabric.wan_address}/24", "dev", fabric.wan_bridge)
    ip("link", "set", fabric.wan_bridge, "up")
    for name, site in fabric.sites.items():
        ip("netns", "add", site.namespace)
        ip("-n", site.namespace, "link", "set", "lo", "up")
        ip("-n", site.namespace, "link", "add", SITE_BRIDGE, "type", "bridge")
        ip("-n", site.namespace, "link", "set", SITE_BRIDGE, "up")
        ip("link", "add", site.uplink_host, "type", "veth", "peer", "name", site.uplink_site)
        ip("link", "set", site.uplink_site, "netns", site.namespace)
        ip("link", "set", site.uplink_host, "master", fabric.wan_bridge, "up")
        ip("-n", site.namespace, "link", "set", site.uplink_site, "master", SITE_BRIDGE, "up")
        for key, pod in fabric.pods.items():
            if key.split("/", 1)[0] != name:
                continue
            ip("netns", "add", pod.namespace)
            ip("-n", pod.namespace, "link", "set", "lo", "up")
            ip(
                "-n", site.namespace, "link", "add", pod.site_end, "type", "veth",
                "peer", "name", POD_IFACE, "netns", pod.namespace,
            )  # fmt: skip
            ip("-n", site.namespace, "link", "set", pod.site_end, "master", SITE_BRIDGE, "up")
            for address in (pod.address, *pod.extra_addresses):
                ip("-n", pod.namespace, "addr", "add", f"{address}/24", "dev", POD_IFACE)
            ip("-n", pod.namespace, "link", "set", POD_IFACE, "up")


def kill_inside(namespaces: list[str], timeout: float = 5.0) -> list[int]:
    """SIGKILL every process living in ``namespaces``, and wait until they are gone.

    The lab's own marker is not enough to find them: a process may rewrite its environment
    (redis-server sets its title over it), and a process left in a deleted namespace keeps it,
    and its addresses, alive. Whatever runs in a lab namespace belongs to the lab.
    """
    pids: list[int] = []
    for ns in namespaces:
        out = ip("netns", "pids", ns, check=False).stdout
        pids += [int(p) for p in out.split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.02)
    return pids


def _running(pid: int) -> bool:
    """Not exited (a zombie waiting for its reaper has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def destroy(fabric: Fabric) -> list[str]:
    """Delete every namespace (their links go with them) and the WAN bridge; idempotent."""
    removed = []
    existing = set(ip("netns", "list", check=False).stdout.split())
    mine = [p.namespace for p in fabric.pods.values()] + [s.namespace for s in fabric.sites.values()]
    kill_inside([ns for ns in mine if ns in existing])
    for ns in mine:
        if ns in existing:
            ip("netns", "del", ns, check=False)
            removed.append(ns)
    for site in fabric.sites.values():
        if Path(f"/sys/class/net/{site.uplink_host}").exists():
            ip("link", "del", site.uplink_host, check=False)
    if Path(f"/sys/class/net/{fabric.wan_bridge}").exists():
        ip("link", "del", fabric.wan_bridge, check=False)
        removed.append(fabric.wan_bridge)
    return removed


def destroy_by_id(lab_id: str) -> list[str]:
    """Delete a lab's namespaces and bridge by name alone (when its state file is lost)."""
    removed = []
    listed = ip("netns", "list", check=False).stdout.split()
    names = [n for n in listed if n.startswith(f"skyfleet-{lab_id}-")]
    kill_inside(names)
    for name in names:
        ip("netns", "del", name, check=False)
        removed.append(name)
    for device in (f"sfw{lab_id}",):
        if Path(f"/sys/class/net/{device}").exists():
            ip("link", "del", device, check=False)
            removed.append(device)
    return removed


def set_uplink(fabric: Fabric, site: str, up: bool) -> None:
    """Connect or cut a site's only link to the rest of the lab (a partition)."""
    ip("link", "set", fabric.sites[site].uplink_host, "up" if up else "down")
