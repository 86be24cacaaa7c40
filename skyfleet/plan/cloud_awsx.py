"""The shape of AWSX components' outputs, for programs that index them: a VPC has one subnet
of each spec per availability zone (three unless the program says otherwise), a NAT gateway
and an Elastic IP per zone (or one, or none, by strategy) when it has public and private
subnets. The components themselves are not expanded offline (their implementation is a Node
plugin); their outputs are stand-ins of the declared types, in these numbers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from skyfleet.plan.mocks import MockContext

_DEFAULT_SPECS = [{"type": "Public"}, {"type": "Private"}]


def component_counts(typ: str, name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, int] | None:
    """How many items each list output of an unexpanded component holds; None: not mine."""
    if typ not in ("awsx:ec2:Vpc", "awsx:ec2:DefaultVpc"):
        return None
    if typ == "awsx:ec2:DefaultVpc":
        return {"publicSubnetIds": 3, "privateSubnetIds": 0}
    zones = len(inputs.get("availabilityZoneNames") or []) or int(
        inputs.get("numberOfAvailabilityZones") or 3
    )
    specs = inputs.get("subnetSpecs") or _DEFAULT_SPECS
    per_type = Counter(str(s.get("type", "")) for s in specs if isinstance(s, dict))
    public, private, isolated = (per_type[t] * zones for t in ("Public", "Private", "Isolated"))
    strategy = str((inputs.get("natGateways") or {}).get("strategy") or "OnePerAz")
    nats = 0 if not (public and private) else {"None": 0, "Single": 1}.get(strategy, zones)
    subnets = public + private + isolated
    return {
        "subnets": subnets,
        "publicSubnets": public,
        "publicSubnetIds": public,
        "privateSubnets": private,
        "privateSubnetIds": private,
        "isolatedSubnets": isolated,
        "isolatedSubnetIds": isolated,
        "natGateways": nats,
        "eips": nats,
        "routeTables": subnets,
        "routeTableAssociations": subnets,
        "routes": public + (private if nats else 0),
        "subnetLayout": len(specs),
        "vpcEndpoints": len(inputs.get("vpcEndpointSpecs") or []),
    }
