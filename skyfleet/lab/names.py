"""A site's name service: the hosts file every pod of a site sees as ``/etc/hosts``.

Managed-service endpoints (an ElastiCache primary endpoint, the SQS regional endpoint,
Kubernetes Service and pod names) resolve here to the lab addresses that serve them. A name may
list several addresses (a Kubernetes Service over its pods): ``/etc/host.conf`` says ``multi
on`` so a client gets them all and tries each, as it would behind a Service's virtual IP.

When a managed cache fails over, its endpoint name moves to the new primary: the entry is
rewritten in place (same file, same size, one write), so every pod sees the change at its next
lookup, as it would with the provider's DNS.

``python -m skyfleet.lab.names set FILE NAME ADDRESS`` is what a failover hook calls.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Addresses are padded to this width so an entry keeps its length when its address changes.
_WIDTH = 15
HOST_CONF = "multi on\n"


def render(entries: Mapping[str, Sequence[str]]) -> str:
    lines = [f"{'127.0.0.1':<{_WIDTH}} localhost"]
    for name, addresses in sorted(entries.items()):
        lines += [f"{address:<{_WIDTH}} {name}" for address in addresses]
    return "\n".join(lines) + "\n"


def write(path: Path, entries: Mapping[str, Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(entries), encoding="utf-8")
    os.chmod(path, 0o644)
    host_conf = path.with_name("host.conf")
    host_conf.write_text(HOST_CONF, encoding="utf-8")
    os.chmod(host_conf, 0o644)


def lookup(path: Path, name: str) -> list[str]:
    return [
        line.split()[0]
        for line in path.read_text(encoding="utf-8").splitlines()
        if len(line.split()) == 2 and line.split()[1] == name
    ]


def set_address(path: Path, name: str, address: str) -> bool:
    """Point every entry of ``name`` at ``address``, in place; True if anything changed."""
    if len(address) > _WIDTH:
        raise ValueError(f"{address} is longer than {_WIDTH} characters")
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().decode().splitlines(keepends=True)
        changed = False
        for i, line in enumerate(lines):
            parts = line.split()
            if len(parts) == 2 and parts[1] == name and parts[0] != address:
                lines[i] = f"{address:<{_WIDTH}} {name}\n"
                changed = True
        if changed:
            data = "".join(lines).encode()
            os.pwrite(f.fileno(), data, 0)  # same length: one write, never a truncated view
            f.truncate(len(data))
        return changed


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "set":
        print("usage: python -m skyfleet.lab.names set FILE NAME ADDRESS", file=sys.stderr)
        return 2
    set_address(Path(argv[1]), argv[2], argv[3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
