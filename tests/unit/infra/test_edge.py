"""The edge's plan: a Route 53 health check per site on its readiness path, failover (and
weighted) records tied to them with a short TTL, and alarms in us-east-1. The site outputs
come from the site stacks' own offline plans, as StackReferences would give them.
"""

from __future__ import annotations

import fnmatch
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_app import contract
from infra.edge.records import AUTHORIZATION_TTL, authorization_records
from infra.outputs import DnsRecord, EdgeOutputs
from skyfleet.plan import Plan, PlanError, plan_stack
from tests.support.plans import ROOT

STACK = "edge-prod"
SITES = ("aws-prod", "gcp-prod", "onprem-prod")
HEALTH_CHECK = "aws:route53/healthCheck:HealthCheck"
RECORD = "aws:route53/record:Record"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def num(v: Any) -> Any:
    """Wire-form numbers are doubles."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def edge_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"]["skyfleet:edge"]


def variant(make: Callable[[str, str], Path], plans: dict[str, Plan], name: str, **edge: Any) -> Plan:
    """edge-prod with some edge settings changed, planned against the site plans."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    doc["config"]["skyfleet:edge"].update(edge)
    project = make(name, yaml.safe_dump(doc))
    return plan_stack(project, name, known_outputs={s: plans[s].outputs for s in SITES})


@pytest.fixture(scope="module")
def plan(plans: dict[str, Plan]) -> Plan:
    return plans[STACK]


def checks_by_site(plan: Plan) -> dict[str, dict[str, Any]]:
    return {r.inputs["tags"]["site"]: r.inputs for r in plan.of_type(HEALTH_CHECK)}


def check_ids(plan: Plan) -> dict[str, str]:
    return {r.inputs["tags"]["site"]: str(r.id) for r in plan.of_type(HEALTH_CHECK)}


AUTHORIZATION = "dns-authorization-"


def routing(plan: Plan) -> list[Any]:
    """The global name's records (not the sites' certificate validation records)."""
    return [r for r in plan.of_type(RECORD) if not r.name.startswith(AUTHORIZATION)]


def authorizations(plan: Plan) -> list[Any]:
    return [r for r in plan.of_type(RECORD) if r.name.startswith(AUTHORIZATION)]


# --- health checks --------------------------------------------------------------------------------


def test_one_https_health_check_per_site_on_its_readiness_path(plan: Plan, plans: dict[str, Plan]) -> None:
    checks = checks_by_site(plan)
    assert set(checks) == set(SITES)
    threshold = edge_config()["healthCheck"]["failureThreshold"]
    for site, hc in checks.items():
        assert hc["fqdn"] == plans[site].outputs["endpointHost"], site
        assert hc["resourcePath"] == contract.READINESS_PATH == plans[site].outputs["healthCheckPath"]
        assert hc["type"] == "HTTPS" and num(hc["port"]) == 443
        assert num(hc["requestInterval"]) == 10
        assert num(hc["failureThreshold"]) == threshold
        assert hc["enableSni"] is True and hc["measureLatency"] is True
        assert len(hc["regions"]) >= 3


def test_failure_threshold_comes_from_config(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    other = variant(
        temp_project, plans, "edge-threshold", healthCheck={"intervalSeconds": 10, "failureThreshold": 5}
    )
    assert {num(c["failureThreshold"]) for c in checks_by_site(other).values()} == {5}


# --- records --------------------------------------------------------------------------------------------


def test_failover_records_primary_then_secondary_tied_to_health_checks(
    plan: Plan, plans: dict[str, Plan]
) -> None:
    cfg = edge_config()
    name, ttl = cfg["recordName"], cfg["ttl"]
    ids = check_ids(plan)
    hosts = {s: plans[s].outputs["endpointHost"] for s in SITES}
    records = [r.inputs for r in routing(plan)]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_name.setdefault(rec["name"], []).append(rec)
    assert name in by_name
    for group in by_name.values():
        roles = sorted(r["failoverRoutingPolicies"][0]["type"] for r in group)
        assert roles == ["PRIMARY", "SECONDARY"], group
        # Identified by their role, not their site: a site can move between places in place.
        assert sorted(r["setIdentifier"] for r in group) == ["primary", "secondary"]
    # Walk the chain from the global name: sites answer in priority order.
    order, here = [], name
    while True:
        group = {r["failoverRoutingPolicies"][0]["type"]: r for r in by_name[here]}
        order.append(group["PRIMARY"])
        secondary = group["SECONDARY"]
        if "aliases" in secondary:
            (alias,) = secondary["aliases"]
            assert alias["evaluateTargetHealth"] is True and alias["zoneId"] == cfg["zoneId"]
            here = alias["name"]
            continue
        order.append(secondary)
        break
    priority = [s["name"] for s in sorted(cfg["sites"], key=lambda s: s["priority"])]
    site_of = {host: site for site, host in hosts.items()}
    assert [site_of[r["records"][0]] for r in order] == priority
    # Named by their place: tier N's PRIMARY and SECONDARY.
    assert sorted(r.name for r in routing(plan)) == sorted(
        f"failover-{tier}-{role}" for tier in range(len(SITES) - 1) for role in ("primary", "secondary")
    )
    # Route 53 refuses an alias whose target does not exist yet: each alias waits for the
    # records of the name it points at.
    for r in routing(plan):
        for alias in r.inputs.get("aliases", []):
            targets = {t.urn for t in routing(plan) if t.inputs["name"] == alias["name"]}
            assert targets and targets <= set(r.dependencies), r.name
    for rec in order:
        site = site_of[rec["records"][0]]
        assert rec["type"] == "CNAME" and rec["records"] == [hosts[site]]
        assert rec["healthCheckId"] == ids[site]
        assert num(rec["ttl"]) == ttl <= 60
        assert rec["zoneId"] == cfg["zoneId"]


def test_weighted_routing_shares_by_weight_with_health_checks(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    weighted = variant(temp_project, plans, "edge-weighted", routing="weighted", ttl=20)
    cfg = edge_config()
    weights = {s["name"]: s["weight"] for s in cfg["sites"]}
    ids = check_ids(weighted)
    records = [r.inputs for r in routing(weighted)]
    assert len(records) == len(SITES)
    for rec in records:
        site = rec["setIdentifier"]
        assert rec["name"] == cfg["recordName"] and rec["type"] == "CNAME"
        assert "failoverRoutingPolicies" not in rec
        assert num(rec["weightedRoutingPolicies"][0]["weight"]) == weights[site]
        assert rec["healthCheckId"] == ids[site]
        assert rec["records"] == [plans[site].outputs["endpointHost"]]
        assert num(rec["ttl"]) == 20
    assert weighted.outputs["routing"] == "weighted"


def test_multivalue_answers_every_site_address_with_its_health_check(plans: dict[str, Plan]) -> None:
    """edge-multivalue: one A record per site holding the addresses its stack exports, each
    answered only while that site's check passes (Route 53 refuses CNAMEs there)."""
    mv = plans["edge-multivalue"]
    cfg = yaml.safe_load((ROOT / "stacks" / "Pulumi.edge-multivalue.yaml").read_text())["config"]
    ids = check_ids(mv)
    records = {r.inputs["setIdentifier"]: r.inputs for r in routing(mv)}
    assert set(records) == set(SITES)
    for site, rec in records.items():
        addresses = plans[site].outputs["endpointAddresses"]
        assert addresses and rec["records"] == addresses
        assert rec["type"] == "A" and rec["name"] == cfg["skyfleet:edge"]["recordName"]
        assert rec["multivalueAnswerRoutingPolicy"] is True
        assert rec["healthCheckId"] == ids[site]
        assert num(rec["ttl"]) == 10
        # Each site is checked where clients of those addresses arrive (the aws site's NLB).
        host = plans[site].outputs.get("addressesHost") or plans[site].outputs["endpointHost"]
        assert checks_by_site(mv)[site]["fqdn"] == host
        assert not {"aliases", "failoverRoutingPolicies", "weightedRoutingPolicies"} & set(rec)
    # The aws site's addresses are its NLB's Elastic IPs, one per public subnet.
    eips = [r.outputs["publicIp"] for r in plans["aws-prod"].of_type("aws:ec2/eip:Eip") if "nlb" in r.name]
    assert sorted(records["aws-prod"]["records"]) == sorted(eips) and len(eips) >= 2
    assert mv.outputs["routing"] == "multivalue"


def test_multivalue_refuses_weights_and_priorities(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    """Route 53 multivalue has no weights and no order: a setting that would do nothing is an error."""
    with pytest.raises(PlanError, match=r"sites\[0\] \(aws-prod\): weight"):
        variant(temp_project, plans, "edge-mv-weights", routing="multivalue")
    gc.collect()


def test_multivalue_needs_each_site_addresses(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.edge-multivalue.yaml").read_text())
    project = temp_project("edge-mv-noaddr", yaml.safe_dump(doc))
    known = {s: dict(plans[s].outputs) for s in SITES}
    known["onprem-prod"]["endpointAddresses"] = []
    with pytest.raises(PlanError, match=r"org/skyfleet/onprem-prod exports no endpointAddresses"):
        plan_stack(project, "edge-mv-noaddr", known_outputs=known)
    gc.collect()


@pytest.mark.parametrize("address", ["10.0.4.7", "192.168.1.20", "100.64.0.9", "fd00::1", "lb.example.com"])
def test_multivalue_refuses_an_address_clients_cannot_reach(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path], address: str
) -> None:
    """A bare-metal controller may publish a node's private address in the Ingress status; its
    health check (by name) would pass while every client sent there fails."""
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.edge-multivalue.yaml").read_text())
    project = temp_project("edge-mv-private", yaml.safe_dump(doc))
    known = {s: dict(plans[s].outputs) for s in SITES}
    known["onprem-prod"]["endpointAddresses"] = [address]
    with pytest.raises(
        PlanError, match=rf"onprem-prod exports endpointAddresses .*{address!r} is not a public IPv4"
    ):
        plan_stack(project, "edge-mv-private", known_outputs=known)
    gc.collect()


def test_two_site_failover_needs_no_tier(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    sites = [s for s in edge_config()["sites"] if s["name"] != "gcp-prod"]
    two = variant(temp_project, plans, "edge-two", sites=sites)
    records = [r.inputs for r in two.of_type(RECORD)]
    assert {r["name"] for r in records} == {edge_config()["recordName"]}
    assert sorted(r["failoverRoutingPolicies"][0]["type"] for r in records) == ["PRIMARY", "SECONDARY"]
    assert not any("aliases" in r for r in records)


# --- certificate validation records ---------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["edge-prod", "edge-active", "edge-multivalue"])
def test_the_edge_creates_every_dns_authorization_a_site_exports(plans: dict[str, Plan], stack: str) -> None:
    """A gcp site's certificate (its own name and the global name) is issued only once Certificate
    Manager finds its DNS authorization CNAMEs: whichever edge owns the global name creates every
    one its sites export, in its zone, as exported (nothing else creates them)."""
    edge = plans[stack]
    cfg = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]["skyfleet:edge"]
    exported = {s: plans[s].outputs.get("dnsAuthorizations") or [] for s in SITES}
    # The gcp site exports one per name its certificate covers; the others need none.
    assert len(exported["gcp-prod"]) == len(plans["gcp-prod"].outputs["hostNames"]) >= 2
    assert exported["aws-prod"] == exported["onprem-prod"] == []
    wanted = {(r["name"].rstrip("."), r["type"], r["data"]) for records in exported.values() for r in records}
    created = authorizations(edge)
    assert {(r.inputs["name"].rstrip("."), r.inputs["type"], *r.inputs["records"]) for r in created} == wanted
    assert len(created) == len(wanted)
    (component,) = [r for r in edge.resources if r.type == "skyfleet:edge:Records"]
    for r in created:
        assert r.inputs["type"] == "CNAME" and len(r.inputs["records"]) == 1
        assert r.inputs["zoneId"] == cfg["zoneId"]
        assert num(r.inputs["ttl"]) == AUTHORIZATION_TTL
        # A plain record: answered whatever the sites' health, by no routing policy.
        assert not {"setIdentifier", "healthCheckId", "aliases"} & set(r.inputs), r.name
        assert not any(k.endswith("RoutingPolicies") or k.endswith("RoutingPolicy") for k in r.inputs), r.name
        assert r.parent == component.urn
    # None sits at a routing record's name (DNS allows no CNAME beside other records).
    assert not {r.inputs["name"] for r in created} & {r.inputs["name"] for r in routing(edge)}


def test_sites_that_export_no_dns_authorizations_get_none(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    """Site stacks deployed before the output existed (and aws and onprem sites) export none."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    project = temp_project("edge-no-auth", yaml.safe_dump(doc))
    known = {s: dict(plans[s].outputs) for s in SITES}
    for outputs in known.values():
        outputs.pop("dnsAuthorizations", None)
    plan = plan_stack(project, "edge-no-auth", known_outputs=known)
    assert not authorizations(plan)
    assert len(routing(plan)) == len(routing(plans[STACK]))


def test_dns_authorizations_are_created_once_and_conflicts_refused() -> None:
    record = DnsRecord(
        name="_acme-challenge_x.api.test.", type="CNAME", data="a.authorize.certificatemanager.goog."
    )
    same = DnsRecord(
        name="_acme-challenge_x.API.test", type="CNAME", data="a.authorize.certificatemanager.goog"
    )
    # Two sites in one project share the per-project record: one Route 53 record.
    assert list(authorization_records({"gcp-a": [record], "gcp-b": [same]})) == ["_acme-challenge_x.api.test"]
    other = record.model_copy(update={"data": "b.authorize.certificatemanager.goog."})
    with pytest.raises(ValueError, match=r"sites gcp-a and gcp-b export the DNS authorization .* two values"):
        authorization_records({"gcp-a": [record], "gcp-b": [other]})
    with pytest.raises(ValueError, match=r"site gcp-a exports the DNS authorization .*CNAME records"):
        authorization_records({"gcp-a": [record.model_copy(update={"type": "TXT"})]})
    with pytest.raises(ValueError, match=r"site gcp-a exports the DNS authorization"):
        authorization_records({"gcp-a": [record.model_copy(update={"data": ""})]})


# --- alarms, provider, outputs ---------------------------------------------------------------------------


def test_an_alarm_per_health_check_in_us_east_1(plan: Plan) -> None:
    ids = check_ids(plan)
    alarms = {r.inputs["dimensions"]["HealthCheckId"]: r for r in plan.of_type(ALARM)}
    assert set(alarms) == set(ids.values())
    (provider,) = plan.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    for r in [*alarms.values(), *plan.of_type(HEALTH_CHECK), *plan.of_type(RECORD)]:
        assert r.provider and r.provider.startswith(provider.urn), r.name
    for r in alarms.values():
        assert r.inputs["namespace"] == "AWS/Route53" and r.inputs["metricName"] == "HealthCheckStatus"
        assert r.inputs["alarmActions"], "an alarm nobody hears is no alarm"
    (topic,) = plan.of_type("aws:sns/topic:Topic")
    # CloudWatch alarms cannot use the AWS-managed alias/aws/sns key: a key of its own, whose
    # policy lets this account's edge alarms (and only them) encrypt for the topic.
    (key,) = plan.of_type("aws:kms/key:Key")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    statements = json.loads(key.inputs["policy"])["Statement"]
    (cw,) = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(cw["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert cw["Condition"]["StringEquals"]["aws:SourceAccount"]
    assert all(
        fnmatch.fnmatchcase(f"arn:aws:cloudwatch:us-east-1:{cw['Condition']['StringEquals']['aws:SourceAccount']}"
                            f":alarm:{r.inputs['name']}", cw["Condition"]["ArnLike"]["aws:SourceArn"])
        for r in alarms.values()
    )  # fmt: skip


def test_outputs_follow_the_edge_contract(plan: Plan) -> None:
    out = EdgeOutputs.model_validate(plan.outputs)
    assert out.fqdn == edge_config()["recordName"] and out.routing == "failover"
    assert out.health_check_ids == check_ids(plan)


def test_sites_are_read_through_stack_references(plan: Plan) -> None:
    refs = {r.name for r in plan.of_type("pulumi:pulumi:StackReference")}
    assert refs == {s["stack"] for s in edge_config()["sites"]}


def test_a_site_that_does_not_serve_the_global_name_is_a_clear_error(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    """Clients reach every site by the global name: a site whose certificate and host rules do
    not cover it would fail every client's TLS check while Route 53 (which does not check
    certificates) kept sending traffic there."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    project = temp_project("edge-names", yaml.safe_dump(doc))
    known = {s: dict(plans[s].outputs) for s in SITES}
    known["onprem-prod"]["hostNames"] = ["onprem.agents.example.com"]
    with pytest.raises(PlanError, match=r"org/skyfleet/onprem-prod does not serve the global name"):
        plan_stack(project, "edge-names", known_outputs=known)
    gc.collect()


@pytest.mark.parametrize(
    ("output", "value", "error"),
    [
        (
            "site",
            "gcp-dev",
            r"org/skyfleet/gcp-prod is site 'gcp-dev', not 'gcp-prod' as edge.sites names it",
        ),
        (
            "environment",
            "dev",
            r"org/skyfleet/gcp-prod is a dev site; this prod edge sends the global name only",
        ),
    ],
)
def test_a_reference_to_another_sites_stack_is_a_clear_error(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path], output: str, value: str, error: str
) -> None:
    """An edge entry whose stack is another site's, or a dev stack behind a prod edge, would send
    the global name's clients there."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    project = temp_project(f"edge-{output}", yaml.safe_dump(doc))
    known = {s: dict(plans[s].outputs) for s in SITES}
    assert known["gcp-prod"][output] != value
    known["gcp-prod"][output] = value
    with pytest.raises(PlanError, match=error):
        plan_stack(project, f"edge-{output}", known_outputs=known)
    gc.collect()


def test_a_site_without_the_site_outputs_is_a_clear_error(
    plans: dict[str, Plan], temp_project: Callable[[str, str], Path]
) -> None:
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    project = temp_project("edge-broken", yaml.safe_dump(doc))
    known = {s: dict(plans[s].outputs) for s in SITES}
    del known["gcp-prod"]["endpointHost"]
    with pytest.raises(PlanError, match=r"org/skyfleet/gcp-prod does not export .*endpointHost"):
        plan_stack(project, "edge-broken", known_outputs=known)
    # The SDK's failed futures log when collected: let that happen here, in captured output.
    gc.collect()
