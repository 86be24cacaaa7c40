"""What the lab makes of the aws site's NLB in front of its ALB, from the real aws-prod plan:
a TCP 443 passthrough is twinned at the ALB's addresses; an NLB or exported addresses the lab
could not run faithfully stop ``lab up`` with the resource named."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pytest

from skyfleet.lab import fabric, lb
from skyfleet.lab.errors import LabError
from skyfleet.lab.model import PlanValues
from skyfleet.lab.targets.aws import ALB, LISTENER, _passthrough_fronts
from skyfleet.lab.targets.base import SiteTwin
from skyfleet.plan import Plan, PlannedResource, plan_stack
from skyfleet.testing.edge import ROOT


@functools.cache
def aws_prod() -> Plan:
    return plan_stack(ROOT, "aws-prod")


def twin(edit: Callable[[Plan], None] | None = None) -> tuple[SiteTwin, PlannedResource, PlannedResource]:
    plan = copy.deepcopy(aws_prod())
    if edit is not None:
        edit(plan)
    site = SiteTwin(stack=plan.stack, target="aws", site="aws-prod", plan=plan, plan_values=PlanValues(plan))
    https = next(r for r in plan.of_type(LISTENER) if r.inputs.get("protocol") == "HTTPS")
    alb = next(r for r in plan.of_type(ALB) if r.outputs.get("arn") == https.inputs.get("loadBalancerArn"))
    return site, alb, https


def nlb_listener(plan: Plan) -> PlannedResource:
    nlb = next(r for r in plan.of_type(ALB) if r.inputs.get("loadBalancerType") == "network")
    return next(r for r in plan.of_type(LISTENER) if r.inputs.get("loadBalancerArn") == nlb.outputs["arn"])


def test_the_shipped_passthrough_answers_at_the_albs_twin() -> None:
    site, alb, https = twin()
    _passthrough_fronts(site, alb, https)
    nlb = next(r for r in site.plan.of_type(ALB) if r.inputs.get("loadBalancerType") == "network")
    assert site.names[nlb.outputs["dnsName"]] == ["lb"]
    assert any("is not run" in d and "passed through to the ALB" in d for d in site.deviations)


@pytest.mark.parametrize(
    ("field", "value"),
    [("protocol", "TLS"), ("port", 8443)],
)
def test_an_nlb_that_is_not_a_tcp_passthrough_on_the_https_port_stops_lab_up(
    field: str, value: object
) -> None:
    def edit(plan: Plan) -> None:
        nlb_listener(plan).inputs[field] = value

    site, alb, https = twin(edit)
    with pytest.raises(LabError, match=r"aws-prod: NLB 'lb-nlb' does not only pass TCP 443 through"):
        _passthrough_fronts(site, alb, https)


def test_exported_addresses_must_be_the_nlbs_elastic_ips() -> None:
    def edit(plan: Plan) -> None:
        plan.outputs["endpointAddresses"] = [*plan.outputs["endpointAddresses"][:-1], "52.16.0.1"]

    site, alb, https = twin(edit)
    with pytest.raises(LabError, match=r"exports endpointAddresses .* but the Elastic IPs of its NLB"):
        _passthrough_fronts(site, alb, https)


def test_extra_addresses_come_after_every_pods_first_and_the_lb_binds_each() -> None:
    pods = {"a": ["lb", "api-0"], "b": ["lb"]}
    plain = fabric.plan("t", "10.77.0.0/24", ["a", "b"], pods)
    more = fabric.plan("t", "10.77.0.0/24", ["a", "b"], pods, {"a/lb": 2})
    # No pod moves when a load balancer gets more addresses.
    assert {k: p.address for k, p in more.pods.items()} == {k: p.address for k, p in plain.pods.items()}
    extra = more.pods["a/lb"].extra_addresses
    assert len(extra) == 2 and not set(extra) & {p.address for p in more.pods.values()}
    spec = lb.LoadBalancerSpec(
        site="a",
        kind="alb",
        names=["x.test"],
        certificate="c",
        issuer="public",
        hosts=None,
        check=lb.Check(path="/readyz", interval_s=10, timeout_s=5, fall=2, rise=2),
        retries=0,
    )
    cfg = lb.render(
        spec, address=more.pods["a/lb"].address, more=extra, pem=ROOT / "x.pem", admin_socket=ROOT / "s"
    )
    for address in (more.pods["a/lb"].address, *extra):
        assert f"bind {address}:443 ssl crt" in cfg and f"bind {address}:80" in cfg
