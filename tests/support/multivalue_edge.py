"""The shipped edge-multivalue stack's plan, and small builders of multivalue records for the
Route 53 and DNS tests."""

from __future__ import annotations

import functools
from typing import Any

from skyfleet.lab.route53 import RecordSpec
from skyfleet.plan import Plan, plan_stack
from skyfleet.testing.edge import ROOT, site_outputs

STACK = "edge-multivalue"


@functools.cache
def multivalue_plan() -> Plan:
    """The shipped edge-multivalue stack's offline plan, against the prod sites' plans."""
    return plan_stack(ROOT, STACK, known_outputs=site_outputs())


def planned_addresses() -> dict[str, list[str]]:
    """Each site's ``endpointAddresses``, as its stack exports them (site -> addresses)."""
    return {outputs["site"]: list(outputs["endpointAddresses"]) for outputs in site_outputs().values()}


def record(
    set_id: str, values: list[str], *, check: str | None = None, ttl: int = 10, **kw: Any
) -> RecordSpec:
    """One multivalue A record of ``api.test``."""
    return RecordSpec(
        resource=f"multivalue-{set_id}",
        zone_id="Z1",
        name="api.test",
        type="A",
        ttl=ttl,
        values=tuple(values),
        set_identifier=set_id,
        health_check_id=check,
        multivalue=True,
        **kw,
    )
