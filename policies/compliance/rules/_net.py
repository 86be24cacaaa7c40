"""Network reasoning shared by security groups, network ACLs, GCP firewalls and Kubernetes
load balancers: which CIDRs are the whole internet, which ports a rule opens, and which of those
are administration or data-store ports that must never face the internet."""

from __future__ import annotations

import ipaddress
from typing import Any

# Ports whose service must not be reachable from the internet (remote administration, file
# transfer, databases, caches, cluster control planes).
ADMIN_PORTS: dict[int, str] = {
    20: "FTP data",
    21: "FTP",
    22: "SSH",
    23: "Telnet",
    135: "MS RPC",
    137: "NetBIOS",
    139: "NetBIOS",
    445: "SMB",
    1433: "SQL Server",
    1521: "Oracle",
    2375: "Docker API",
    2376: "Docker API",
    2379: "etcd",
    3306: "MySQL",
    3389: "RDP",
    5432: "PostgreSQL",
    5601: "Kibana",
    5900: "VNC",
    5984: "CouchDB",
    6379: "Redis",
    6443: "Kubernetes API",
    9042: "Cassandra",
    9092: "Kafka",
    9200: "Elasticsearch",
    10250: "kubelet",
    11211: "Memcached",
    27017: "MongoDB",
}
ALL_PROTOCOLS = ("-1", "all", "")


def is_world(cidr: Any) -> bool:
    """A CIDR that covers every address (0.0.0.0/0, ::/0, 0.0.0.0, written however)."""
    text = str(cidr or "").strip()
    if not text:
        return False
    if text in ("*", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_network(text, strict=False).prefixlen == 0
    except ValueError:
        return False


PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def is_private(cidr: Any) -> bool:
    """A CIDR inside private address space (RFC 1918, shared CGNAT, RFC 4193 unique local)."""
    try:
        net = ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError:
        return False
    return any(net.version == p.version and net.subnet_of(p) for p in PRIVATE_NETWORKS)  # type: ignore[arg-type]  (versions checked first)


def port_range(value: Any) -> tuple[int, int] | None:
    """ "22", "1-65535", 443 -> (low, high); None when it is not a port or range."""
    text = str(value).strip()
    try:
        if "-" in text:
            low, high = text.split("-", 1)
            return int(low), int(high)
        return int(text), int(text)
    except ValueError:
        return None


def all_ports(low: int, high: int) -> bool:
    return low <= 1 and high >= 65535


def describe(low: int, high: int) -> str:
    if all_ports(low, high):
        return "all ports"
    return str(low) if low == high else f"{low}-{high}"


def admin_ports_in(low: int, high: int) -> list[str]:
    """The administration/data ports a range opens, as 'SSH (22)'."""
    if all_ports(low, high):
        return ["all ports"]
    return [f"{name} ({port})" for port, name in ADMIN_PORTS.items() if low <= port <= high]


def is_ip(host: str) -> bool:
    """An address, not a name to resolve."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
