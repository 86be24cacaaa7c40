"""Root/netns mode: each site in its own network namespace, joined by one bridge.

Every site (and the witness) gets a namespace with one veth link to a bridge in the root
namespace, and one address in the lab's private /24; the front door stays in the root
namespace and reaches the sites over the bridge. Cutting a site's link is then a real
partition (its processes keep running, nobody can reach them), and tc netem on that link is
real latency or loss, which signals alone cannot fake.

Kernels without netem (the lab's Firecracker VM kernel) still get both, by other means:
packet loss from an nftables table inside the site's namespace (``set_packet_loss``), and
delay from a userspace delay line on the site's link (``skyfleet.lab.delayline``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
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
    pin_bridge_address(network.bridge)
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
        for device in delay_devices(site):  # left by a delay line that was SIGKILLed
            if _device_exists(device):
                ip("link", "del", device, check=False)
                removed.append(device)
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
    for prefix in (f"{DELAY_TAP_PREFIX}{lab_id}", f"{DELAY_SINK_PREFIX}{lab_id}"):
        for device in sorted(os.listdir("/sys/class/net")):
            if device.startswith(prefix):
                ip("link", "del", device, check=False)
                removed.append(device)
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


# --- Packet loss without netem: nftables inside the site's namespace ----------------------

# The fault's own tables; nothing else in the namespace is ever touched. ``add_latency``
# keeps its loss (when it has to do without netem) in a table of its own, so undoing one
# fault never undoes the other.
LOSS_TABLE = "skyfleet_loss"
LATENCY_LOSS_TABLE = "skyfleet_latency_loss"
# Drop decisions are made against ``numgen random mod LOSS_SCALE``: steps of 0.01 %.
LOSS_SCALE = 10000


def nft_path() -> str | None:
    return shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None
    )


def nft(
    netns: str, *args: str, script: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = nft_path()
    if binary is None:
        raise LabError(
            "packet loss: nftables is not installed (no `nft`); install it with "
            "`apt-get install nftables` (scripts/install.sh does)"
        )
    argv = ["ip", "netns", "exec", netns, binary, *args]
    result = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def loss_threshold(loss_percent: object, field: str = "loss_percent") -> tuple[float, int]:
    """Validate a loss percentage (0 < p <= 100, steps of 0.01); return it and its threshold."""
    expected = f"{field}: given {loss_percent!r}; expected a number > 0 and <= 100"
    if isinstance(loss_percent, bool) or not isinstance(loss_percent, int | float | str):
        raise LabError(expected)
    try:
        percent = float(loss_percent)
    except ValueError:
        raise LabError(expected) from None
    if not 0 < percent <= 100:  # NaN too
        raise LabError(expected)
    threshold = round(percent * LOSS_SCALE / 100)
    if threshold < 1:
        raise LabError(f"{field}: given {loss_percent!r}; expected at least 0.01 (the precision is 0.01 %)")
    return percent, threshold


def set_packet_loss(site: SiteNetwork, loss_percent: float, *, table: str = LOSS_TABLE) -> dict[str, object]:
    """Drop ``loss_percent`` % of the packets crossing the site's link, in each direction.

    One nftables table inside the site's namespace, with an input and an output chain that
    match only the site's veth (its own loopback traffic is untouched, as netem on the link
    would leave it). The table is replaced in one transaction, so changing the percentage
    never leaves a moment without, or with twice, the rule.
    """
    percent, threshold = loss_threshold(loss_percent)
    # numgen's values are 0 … LOSS_SCALE-1, so 100 % is a rule without a condition.
    rule = f"numgen random mod {LOSS_SCALE} < {threshold}" if threshold < LOSS_SCALE else ""
    script = (
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        "  chain input {\n"
        "    type filter hook input priority -300; policy accept;\n"
        f'    iifname "{site.veth_ns}" {rule}{" " if rule else ""}counter drop\n'
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority -300; policy accept;\n"
        f'    oifname "{site.veth_ns}" {rule}{" " if rule else ""}counter drop\n'
        "  }\n"
        "}\n"
    )
    nft(site.namespace, "-f", "-", script=script)
    return {
        "table": f"inet {table}",
        "loss_percent": percent,
        "rule": rule or "every packet",
        "namespace": site.namespace,
    }


def packet_loss(site: SiteNetwork, *, table: str = LOSS_TABLE) -> dict[str, object] | None:
    """The site's loss table as it is now (percent and packets dropped per direction), or None."""
    result = nft(site.namespace, "-j", "list", "table", "inet", table, check=False)
    if result.returncode != 0:
        return None
    found: dict[str, object] = {"table": f"inet {table}", "loss_percent": 100.0}
    dropped: dict[str, int] = {}
    for item in json.loads(result.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            match = expr.get("match", {})
            if "numgen" in match.get("left", {}):
                found["loss_percent"] = match["right"] * 100 / LOSS_SCALE
            if "counter" in expr:
                dropped["in" if rule["chain"] == "input" else "out"] = expr["counter"]["packets"]
    found["dropped"] = dropped
    return found


def clear_packet_loss(site: SiteNetwork, *, table: str = LOSS_TABLE) -> bool:
    """Delete the site's loss table (only that one); False if there was none."""
    if nft(site.namespace, "list", "table", "inet", table, check=False).returncode != 0:
        return False
    # Declaring the table first makes the deletion succeed even if it vanished meanwhile.
    nft(site.namespace, "-f", "-", script=f"table inet {table}\ndelete table inet {table}\n")
    return True


def tables(netns: str | None = None) -> list[str]:
    """nftables tables (``family name``) in a namespace, or in the root namespace."""
    binary = nft_path()
    if binary is None:
        return []
    argv = [binary, "list", "tables"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]


# --- Delay without netem: a userspace delay line on the site's link ------------------------

DELAY_TAP_PREFIX = "sfd"
DELAY_SINK_PREFIX = "sfs"


def tun_available() -> bool:
    return os.path.exists("/dev/net/tun")


def delay_devices(site: SiteNetwork) -> tuple[str, str]:
    """The TAP device and the private bridge a delay line on ``site`` uses (15-char names)."""
    suffix = site.veth_host.removeprefix("sfh")
    return f"{DELAY_TAP_PREFIX}{suffix}", f"{DELAY_SINK_PREFIX}{suffix}"


def _device_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def link_master(name: str) -> str | None:
    """The bridge a device is a port of, or None."""
    master = Path(f"/sys/class/net/{name}/master")
    return master.resolve().name if master.exists() else None


def pin_bridge_address(bridge: str) -> None:
    """Fix the bridge's MAC address to the one it has now.

    A bridge whose address was never set takes the lowest MAC among its ports, so it would
    change when a port leaves or joins (as a delay line swaps one), and every namespace's
    ARP entry for the bridge would point at a MAC that is no longer there for seconds.
    """
    address = Path(f"/sys/class/net/{bridge}/address").read_text().strip()
    if Path(f"/sys/class/net/{bridge}/addr_assign_type").read_text().strip() != "3":  # 3: set
        ip("link", "set", bridge, "address", address)


def repair_link(network: Network, site: SiteNetwork) -> None:
    """Put the site's veth back on the lab bridge and remove what a delay line left; idempotent."""
    if _device_exists(site.veth_host) and link_master(site.veth_host) != network.bridge:
        ip("link", "set", site.veth_host, "master", network.bridge)
    for device in delay_devices(site):
        if _device_exists(device):
            ip("link", "del", device, check=False)
