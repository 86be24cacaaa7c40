"""The edge stack's twin: its Route 53 records and health checks, answered by the lab's DNS
server for every client of the lab (see ``skyfleet.lab.route53`` and ``skyfleet.lab.dns``)."""

from __future__ import annotations

from typing import Any

from skyfleet.lab.state import LabState


def build(state: LabState, plan: Any) -> None:
    """Record the edge of ``plan`` in ``state`` and write the DNS server's config."""
    raise NotImplementedError("the edge twin is being built")


def start(state: LabState) -> None:
    raise NotImplementedError("the edge twin is being built")
