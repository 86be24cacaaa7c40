"""A lab's saved state without a lab: the three shipped sites at fixed addresses, for code that
reads the state (the edge's build, a drill's checks) and starts nothing."""

from __future__ import annotations

from pathlib import Path

from skyfleet.lab.fabric import Fabric
from skyfleet.lab.state import LabState, SiteState
from skyfleet.testing.edge import SITE_STACKS, site_outputs

LB = {"aws-prod": "10.77.0.10", "gcp-prod": "10.77.0.11", "onprem-prod": "10.77.0.12"}
# The lab gives a site's load balancer one address per planned public address (aws-prod's NLB
# has three Elastic IPs), as `lab up` does.
LB_ALL = {
    "aws-prod": ["10.77.0.10", "10.77.0.20", "10.77.0.21"],
    "gcp-prod": ["10.77.0.11"],
    "onprem-prod": ["10.77.0.12"],
}


def lab_state(tmp_path: Path, stacks: tuple[str, ...] = SITE_STACKS) -> LabState:
    return LabState(
        lab_id="t",
        state_dir=str(tmp_path),
        config={},
        fabric=Fabric(lab_id="t", subnet="10.77.0.0/24", wan_bridge="br-t", wan_address="10.77.0.1"),
        sites={
            stack: SiteState(
                stack=stack,
                target=stack.split("-")[0],
                site=stack,
                lb_address=LB[stack],
                lb_addresses=LB_ALL[stack],
                lb_names=list(site_outputs()[stack]["hostNames"]),
                hosts_file=str(tmp_path / f"{stack}.hosts"),
            )
            for stack in stacks
        },
    )
