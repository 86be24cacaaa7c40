"""The network faults' plumbing: ``ip``, ``tc`` and ``nft`` around a site's uplink (the one
link between its namespace and the lab's WAN, see ``skyfleet.lab.fabric``).

Cutting the uplink is a real partition (the site's processes keep running, nobody outside can
reach them, nothing inside notices), and tc netem on it is real latency or loss. Kernels
without netem (the lab's Firecracker VM kernel) still get both, by other means: packet loss
from an nftables table in the site's namespace (``set_packet_loss``), and delay from a
userspace delay line on the uplink (``skyfleet.lab.delayline``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from skyfleet.lab.errors import LabError
from skyfleet.lab.locks import exclusive

if TYPE_CHECKING:
    from skyfleet.lab.fabric import SiteLink


def is_root() -> bool:
    return os.geteuid() == 0


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


# Held by a lab from picking its /24 until its bridge carries it, so two labs starting at once
# never pick the same one.
NETWORKS_LOCK = Path("/run/lock/skyfleet-lab-networks.lock")


def networks_lock() -> contextlib.AbstractContextManager[None]:
    return exclusive(NETWORKS_LOCK)


def free_subnet(derived: str) -> str:
    """``derived`` (a lab's own /24, from its id) or, when an interface here uses it (another
    lab whose id maps to the same one), the next 10.231.x.0/24 nobody uses."""
    first = ipaddress.IPv4Network(derived).network_address.packed[2]
    for k in range(250):
        subnet = f"10.231.{(first - 1 + k) % 250 + 1}.0/24"
        if _subnet_in_use(subnet) is None:
            return subnet
    raise LabError("every 10.231.x.0/24 is in use; give the lab one with --subnet")


def _subnet_in_use(subnet: str) -> str | None:
    net = ipaddress.IPv4Network(subnet)
    out = ip("-4", "-o", "addr", "show").stdout
    for line in out.splitlines():
        parts = line.split()
        addr = parts[parts.index("inet") + 1]
        if ipaddress.IPv4Interface(addr).network.overlaps(net):
            return f"{parts[1]} has {addr}"
    return None


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


def set_netem(site: SiteLink, *, delay_ms: int, jitter_ms: int, loss_percent: float) -> str:
    """Apply the same netem on both ends of the uplink, so both directions are affected."""
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
    tc("qdisc", "replace", "dev", site.uplink_host, "root", "netem", *spec)
    tc("qdisc", "replace", "dev", site.uplink_site, "root", "netem", *spec, netns=site.namespace)
    return " ".join(spec)


def clear_netem(site: SiteLink) -> None:
    tc("qdisc", "del", "dev", site.uplink_host, "root", check=False)
    tc("qdisc", "del", "dev", site.uplink_site, "root", netns=site.namespace, check=False)


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


def set_packet_loss(site: SiteLink, loss_percent: float, *, table: str = LOSS_TABLE) -> dict[str, object]:
    """Drop ``loss_percent`` % of the frames crossing the site's uplink, in each direction.

    One nftables table (bridge family) inside the site's namespace, whose forward chain matches
    only frames entering or leaving through the uplink: traffic inside the site is untouched, as
    netem on the uplink would leave it. The table is replaced in one transaction, so changing the
    percentage never leaves a moment without, or with twice, the rule.
    """
    percent, threshold = loss_threshold(loss_percent)
    # numgen's values are 0 … LOSS_SCALE-1, so 100 % is a rule without a condition.
    rule = f"numgen random mod {LOSS_SCALE} < {threshold}" if threshold < LOSS_SCALE else ""
    _drop_across_uplink(site, table, rule)
    return {
        "table": f"bridge {table}",
        "loss_percent": percent,
        "rule": rule or "every frame",
        "namespace": site.namespace,
    }


def _drop_across_uplink(site: SiteLink, table: str, condition: str) -> None:
    """(Re)place ``table``: frames entering or leaving through the site's uplink that match
    ``condition`` (every frame when empty) are dropped and counted, per direction."""
    cond = f"{condition} " if condition else ""
    script = (
        f"table bridge {table}\n"
        f"delete table bridge {table}\n"
        f"table bridge {table} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority -300; policy accept;\n"
        f'    iifname "{site.uplink_site}" {cond}counter drop comment "in"\n'
        f'    oifname "{site.uplink_site}" {cond}counter drop comment "out"\n'
        "  }\n"
        "}\n"
    )
    nft(site.namespace, "-f", "-", script=script)


def packet_loss(site: SiteLink, *, table: str = LOSS_TABLE) -> dict[str, object] | None:
    """The site's loss table as it is now (percent and frames dropped per direction), or None."""
    result = nft(site.namespace, "-j", "list", "table", "bridge", table, check=False)
    if result.returncode != 0:
        return None
    found: dict[str, object] = {"table": f"bridge {table}", "loss_percent": 100.0}
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
                dropped[str(rule.get("comment", "?"))] = expr["counter"]["packets"]
    found["dropped"] = dropped
    return found


def clear_packet_loss(site: SiteLink, *, table: str = LOSS_TABLE) -> bool:
    """Delete the site's loss table (only that one); False if there was none."""
    if nft(site.namespace, "list", "table", "bridge", table, check=False).returncode != 0:
        return False
    # Declaring the table first makes the deletion succeed even if it vanished meanwhile.
    nft(site.namespace, "-f", "-", script=f"table bridge {table}\ndelete table bridge {table}\n")
    return True


# A silent cut (``skyfleet.lab.faults._cut`` says how it differs from a link that is down).
SILENT_CUT_TABLE = "skyfleet_silent_cut"


def cut_silently(site: SiteLink) -> None:
    """Drop every IPv4 and IPv6 frame crossing the site's uplink, each direction; ARP passes."""
    _drop_across_uplink(site, SILENT_CUT_TABLE, "ether type { ip, ip6 }")


def uncut_silently(site: SiteLink) -> None:
    """Undo :func:`cut_silently` (without nftables there is none to undo)."""
    if nft_path() is not None:
        clear_packet_loss(site, table=SILENT_CUT_TABLE)


def cut_silently_in_effect(site: SiteLink) -> bool:
    return f"bridge {SILENT_CUT_TABLE}" in tables(site.namespace)


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


def delay_devices(site: SiteLink) -> tuple[str, str]:
    """The TAP device and the private bridge a delay line on ``site`` uses (15-char names)."""
    suffix = site.uplink_host.removeprefix("sfh")
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


def repair_link(wan_bridge: str, site: SiteLink) -> None:
    """Put the site's uplink back on the WAN and remove what a delay line left; idempotent."""
    if _device_exists(site.uplink_host) and link_master(site.uplink_host) != wan_bridge:
        ip("link", "set", site.uplink_host, "master", wan_bridge)
    for device in delay_devices(site):
        if _device_exists(device):
            ip("link", "del", device, check=False)
