"""Route 53 as the lab emulates it, built from the edge stack's own plan: record evaluation
(failover through alias tiers, weighted with its weight-0 and all-unhealthy rules, multivalue
answers with their eight-record limit and all-unhealthy rule), the
health-check state rules (threshold per checker, the 18 % rule) and real probes against
small HTTPS servers."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import random
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime.rpc import UNKNOWN

from skyfleet.lab.route53 import (
    HEALTH_CHECK_TYPE,
    RECORD_TYPE,
    EdgePlanError,
    HealthCheckSpec,
    HealthCheckState,
    Zone,
    edge_from_plan,
    probe,
)
from skyfleet.testing.edge import (
    GLOBAL_NAME,
    Site,
    TestCA,
    edge,
    edge_config,
    edge_plan,
    loopback_block,
    self_signed_expired,
)
from tests.support.multivalue_edge import multivalue_plan, planned_addresses, record


def health_of(down: set[str], checks: dict[str, str]) -> Any:
    ids = {checks[s] for s in down}
    return lambda check_id: check_id not in ids


def site_checks(variant: str = "shipped") -> dict[str, str]:
    return {c.site: c.id for c in edge(variant).health_checks}


def hosts(variant: str = "shipped") -> dict[str, str]:
    return {c.site: c.fqdn or "" for c in edge(variant).health_checks}


# --- built from the plan ---------------------------------------------------------------------------


def test_health_checks_are_the_plans() -> None:
    plan = edge_plan()
    planned = {r.inputs["tags"]["site"]: r for r in plan.of_type(HEALTH_CHECK_TYPE)}
    checks = {c.site: c for c in edge().health_checks}
    assert set(checks) == set(planned) == {"aws-prod", "gcp-prod", "onprem-prod"}
    for site, check in checks.items():
        inputs = planned[site].inputs
        assert check.id == planned[site].id
        assert check.fqdn == inputs["fqdn"]
        assert (check.type, check.port, check.resource_path, check.enable_sni) == (
            "HTTPS",
            443,
            "/readyz",
            True,
        )
        planned_check = edge_config()["healthCheck"]
        assert (check.request_interval, check.failure_threshold) == (
            planned_check["intervalSeconds"],
            planned_check["failureThreshold"],
        )
        assert check.regions == ("us-east-1", "eu-west-1", "ap-southeast-1")
        # Route 53's own timeouts, not the plan's: HTTPS connects in 4 s, answers 2 s later.
        assert (check.connect_timeout, check.response_timeout) == (4.0, 2.0)
    # Every record's health check is one of them.
    record_checks = {r.health_check_id for r in edge().records if r.health_check_id}
    assert record_checks == {c.id for c in checks.values()}


def test_failover_follows_the_tiers_of_three_sites() -> None:
    zone, checks, host = edge().zone(), site_checks(), hosts()
    ttl = edge_config()["ttl"]
    rng = random.Random(0)

    def answer(*down: str) -> tuple[str, int]:
        (a,) = zone.answer(GLOBAL_NAME, health_of(set(down), checks), rng)
        assert (a.name, a.type) == (GLOBAL_NAME, "CNAME")
        return a.value, a.ttl

    assert answer() == (host["aws-prod"], ttl)
    # The secondary is an alias to the next tier: it answers with the tier's record and TTL.
    assert answer("aws-prod") == (host["gcp-prod"], ttl)
    assert answer("aws-prod", "gcp-prod") == (host["onprem-prod"], ttl)
    # A lower tier's trouble does not move traffic off a healthy primary.
    assert answer("gcp-prod") == (host["aws-prod"], ttl)
    assert answer("gcp-prod", "onprem-prod") == (host["aws-prod"], ttl)
    # Everything unhealthy: Route 53 answers with the primary.
    assert answer("aws-prod", "gcp-prod", "onprem-prod") == (host["aws-prod"], ttl)
    # The alias's target group is all unhealthy, so the alias is unhealthy: back to the primary.
    assert answer("aws-prod", "onprem-prod") == (host["gcp-prod"], ttl)


def test_failover_of_two_sites_is_one_pair_without_alias() -> None:
    e = edge("two-sites")
    assert all(r.alias is None for r in e.records)
    zone, checks, host = e.zone(), site_checks("two-sites"), hosts("two-sites")
    rng = random.Random(0)

    def value(*down: str) -> str:
        return zone.answer(GLOBAL_NAME, health_of(set(down), checks), rng)[0].value

    assert value() == host["aws-prod"]
    assert value("aws-prod") == host["gcp-prod"]
    assert value("gcp-prod") == host["aws-prod"]
    assert value("aws-prod", "gcp-prod") == host["aws-prod"]  # both down: the primary


def shares(zone: Any, health: Any, n: int = 6000) -> dict[str, float]:
    rng = random.Random(7)
    counts = Counter(zone.answer(GLOBAL_NAME, health, rng)[0].value for _ in range(n))
    return {k: v / n for k, v in counts.items()}


def test_weighted_spreads_by_weight_and_skips_unhealthy_sites() -> None:
    e = edge("weighted")
    zone, checks, host = e.zone(), site_checks("weighted"), hosts("weighted")
    weights = {str(r.set_identifier): r.weight or 0 for r in e.records if r.set_identifier}
    assert weights == {"aws-prod": 100, "gcp-prod": 100, "onprem-prod": 50}  # the stack's weights
    # 6000 draws: the standard deviation of a share is under 0.007; 0.03 is over four of them.
    got = shares(zone, health_of(set(), checks))
    for site, weight in weights.items():
        assert got[host[site]] == pytest.approx(weight / 250, abs=0.03)
    got = shares(zone, health_of({"gcp-prod"}, checks))
    assert host["gcp-prod"] not in got
    assert got[host["aws-prod"]] == pytest.approx(100 / 150, abs=0.03)
    # All unhealthy: Route 53 treats them all as healthy and answers by weight.
    got = shares(zone, health_of({"aws-prod", "gcp-prod", "onprem-prod"}, checks))
    assert got[host["onprem-prod"]] == pytest.approx(50 / 250, abs=0.03)
    # Answers carry the record's TTL.
    ttl = edge_config()["ttl"]
    assert {a.ttl for a in zone.answer(GLOBAL_NAME, health_of(set(), checks), random.Random(1))} == {ttl}


def test_weight_zero_answers_only_when_every_other_site_is_down() -> None:
    zone, checks, host = edge("weighted-zero").zone(), site_checks("weighted-zero"), hosts("weighted-zero")
    assert host["onprem-prod"] not in shares(zone, health_of(set(), checks))
    assert host["onprem-prod"] not in shares(zone, health_of({"aws-prod"}, checks))
    assert shares(zone, health_of({"aws-prod", "gcp-prod"}, checks)) == {host["onprem-prod"]: 1.0}
    # Everything down: all count as healthy, and weight 0 still means no share.
    assert host["onprem-prod"] not in shares(zone, health_of({"aws-prod", "gcp-prod", "onprem-prod"}, checks))


def plan_dicts() -> list[dict[str, Any]]:
    return [copy.deepcopy(dataclasses.asdict(r)) for r in edge_plan().resources]


def test_plan_problems_name_the_resource_and_field() -> None:
    resources = [r for r in plan_dicts() if r["name"] != "hc-gcp-prod"]
    with pytest.raises(
        EdgePlanError, match=r"record failover-1-primary: healthCheckId .* not a health check"
    ):
        edge_from_plan(resources)
    resources = plan_dicts()
    next(r for r in resources if r["name"] == "failover-0-primary")["inputs"]["healthCheckId"] = UNKNOWN
    with pytest.raises(
        EdgePlanError, match=r"failover-0-primary .*healthCheckId is not known.*without --preview"
    ):
        edge_from_plan(resources)
    resources = plan_dicts()
    next(r for r in resources if r["name"] == "hc-aws-prod")["inputs"]["regions"] = ["us-east-1"]
    with pytest.raises(EdgePlanError, match=r"hc-aws-prod .*regions: Route 53 needs at least 3"):
        edge_from_plan(resources)
    resources = plan_dicts()
    next(r for r in resources if r["name"] == "failover-0-secondary")["inputs"]["aliases"][0]["name"] = (
        "nowhere.example"
    )
    with pytest.raises(
        EdgePlanError, match=r"failover-0-secondary: aliases\[0\].name: nowhere.example has no record"
    ):
        edge_from_plan(resources)
    with pytest.raises(EdgePlanError, match=f"no {RECORD_TYPE}"):
        edge_from_plan([r for r in plan_dicts() if r["type"] != RECORD_TYPE])


# --- health-check state --------------------------------------------------------------------------


def spec(regions: int = 3, threshold: int = 3, **kw: Any) -> HealthCheckSpec:
    check = edge().health_checks[0]
    regions_ = tuple(f"r{i}" for i in range(regions))
    return check.model_copy(update={"regions": regions_, "failure_threshold": threshold, **kw})


def test_each_checker_needs_threshold_consecutive_failures() -> None:
    state = HealthCheckState(spec())
    assert state.healthy  # a new check is healthy until there is data
    for ok in (False, False, True, False, False):  # a success in between restarts the count
        assert state.record("r0", ok) == (False, False)
    assert state.record("r0", False) == (True, False)  # third in a row: the checker turns
    assert not state.checkers["r0"].healthy
    # One checker of three healthy is 33 % > 18 %: the check stays healthy.
    for _ in range(3):
        state.record("r1", False)
    assert state.healthy and state.healthy_checkers() == 1
    assert state.record("r2", False) == (False, False)
    assert state.record("r2", False) == (False, False)
    assert state.record("r2", False) == (True, True)  # the last checker turns: unhealthy
    assert not state.healthy
    # Recovery takes threshold consecutive successes of one checker.
    assert state.record("r1", True) == (False, False)
    assert state.record("r1", True) == (False, False)
    assert state.record("r1", True) == (True, True)
    assert state.healthy


def test_more_than_18_percent_of_checkers_must_say_healthy() -> None:
    state = HealthCheckState(spec(regions=8, threshold=1))
    for region in [f"r{i}" for i in range(6)]:
        state.record(region, False)
    assert state.healthy_checkers() == 2 and state.healthy  # 25 %
    state.record("r6", False)
    assert state.healthy_checkers() == 1 and not state.healthy  # 12.5 %


def test_inverted_and_disabled_checks() -> None:
    inverted = HealthCheckState(spec(threshold=1, inverted=True))
    assert not inverted.healthy
    for region in ("r0", "r1", "r2"):
        inverted.record(region, False)
    assert inverted.healthy
    disabled = HealthCheckState(spec(threshold=1, disabled=True))
    for region in ("r0", "r1", "r2"):
        disabled.record(region, False)
    assert disabled.healthy  # Route 53 treats a disabled check as healthy


# --- probes against real servers ----------------------------------------------------------------


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


def probe_spec(address_port: int, **kw: Any) -> HealthCheckSpec:
    return edge().health_checks[0].model_copy(update={"port": address_port, **kw})


async def test_probe_sends_sni_and_does_not_validate_the_certificate(tmp_path: Path) -> None:
    (address,) = loopback_block(1)
    # Self-signed, expired and for another name: any validating client refuses it.
    site = Site("aws", address, 0, self_signed_expired("wrong.invalid", tmp_path, "bad")).start()
    try:
        check = probe_spec(site.port)
        result = await probe(check, lambda name: [address] if name == check.fqdn else [])
        assert result.ok and result.status == 200, result.reason
        assert result.address == address
        assert site.sni == [check.fqdn]
        (request,) = site.requests
        assert request["path"] == "/readyz"
        assert request["host"] == f"{check.fqdn}:{site.port}"  # not 443, so the port is in Host
        assert request["agent"].startswith("Amazon-Route53-Health-Check-Service")
        # With SNI off, none is sent.
        result = await probe(probe_spec(site.port, enable_sni=False), lambda name: [address])
        assert result.ok and site.sni[-1] is None
    finally:
        site.stop()


async def test_probe_status_codes_and_failures(tmp_path: Path, ca: TestCA) -> None:
    (address,) = loopback_block(1)
    site = Site("aws", address, 0, ca.issue(["site.test"], tmp_path, "site")).start()
    check = probe_spec(site.port)
    try:
        for status, ok in ((200, True), (301, True), (399, True), (404, False), (503, False)):
            site.status = status
            result = await probe(check, lambda name: [address])
            assert (result.ok, result.status) == (ok, status), result.reason
        result = await probe(check, lambda name: [])
        assert not result.ok and "DNS resolution" in result.reason
    finally:
        site.stop()
    result = await probe(check, lambda name: [address])
    assert not result.ok and "refused" in result.reason.lower()


async def test_probe_fails_without_a_status_within_the_response_timeout() -> None:
    (address,) = loopback_block(1)
    # Accepts TCP (the kernel completes the handshake) but never speaks TLS or HTTP.
    with socket.socket() as listener:
        listener.bind((address, 0))
        listener.listen(4)
        check = probe_spec(listener.getsockname()[1], response_timeout=0.3)
        result = await asyncio.wait_for(probe(check, lambda name: [address]), 5)
    assert not result.ok and "no HTTP status within 0.3 s" in result.reason
    assert result.duration >= 0.3


# --- multivalue answers ------------------------------------------------------------------------------


def multivalue_checks() -> dict[str, str]:
    return {c.site: c.id for c in edge_from_plan(multivalue_plan().resources).health_checks}


def test_multivalue_records_are_the_plans() -> None:
    e = edge_from_plan(multivalue_plan().resources)
    checks, addresses = multivalue_checks(), planned_addresses()
    routed = [r for r in e.records if r.name == GLOBAL_NAME]  # not the DNS authorization CNAMEs
    assert {r.set_identifier for r in routed} == set(addresses) == set(checks)
    for rec in routed:
        site = str(rec.set_identifier)
        assert (rec.name, rec.type, rec.multivalue, rec.alias) == (GLOBAL_NAME, "A", True, None)
        assert list(rec.values) == addresses[site]  # every address the site's stack exports
        assert rec.health_check_id == checks[site]
        assert rec.ttl == edge_config()["ttl"]
        assert (rec.failover, rec.weight) == (None, None)


def answered(zone: Any, health: Any, rng: random.Random, name: str = GLOBAL_NAME) -> list[str]:
    answers = zone.answer(name, health, rng)
    assert {(a.name, a.type) for a in answers} <= {(name, "A")}
    values = [a.value for a in answers]
    assert len(values) == len(set(values)), values  # each value once
    return values


def test_multivalue_answers_every_healthy_sites_addresses_in_random_order() -> None:
    zone, checks, addresses = (
        edge_from_plan(multivalue_plan().resources).zone(),
        multivalue_checks(),
        planned_addresses(),
    )
    everything = {a for site in addresses.values() for a in site}
    rng = random.Random(3)
    healthy = health_of(set(), checks)
    answers = [answered(zone, healthy, rng) for _ in range(300)]
    assert all(set(a) == everything for a in answers)  # all five addresses of three sites
    assert {a.ttl for a in zone.answer(GLOBAL_NAME, healthy, rng)} == {edge_config()["ttl"]}
    # Shuffled: 300 answers of 5 addresses, each address first about 60 times.
    firsts = Counter(a[0] for a in answers)
    assert set(firsts) == everything and min(firsts.values()) > 30
    assert len({tuple(a) for a in answers}) > 50
    # An unhealthy site's addresses leave the answer; the others stay, all of them.
    down = health_of({"aws-prod"}, checks)
    assert {frozenset(answered(zone, down, rng)) for _ in range(50)} == {
        frozenset(addresses["gcp-prod"] + addresses["onprem-prod"])
    }
    assert zone.routing(down)[GLOBAL_NAME] == sorted(addresses["gcp-prod"] + addresses["onprem-prod"])
    only_onprem = health_of({"aws-prod", "gcp-prod"}, checks)
    assert answered(zone, only_onprem, rng) == addresses["onprem-prod"]
    # All unhealthy: Route 53 answers with (up to eight of) the unhealthy records, every value.
    nothing = health_of(set(addresses), checks)
    assert set(answered(zone, nothing, rng)) == everything
    assert zone.routing(nothing)[GLOBAL_NAME] == sorted(everything)


def test_multivalue_answers_at_most_eight_records() -> None:
    records = [record(f"s{i}", [f"192.0.2.{i + 1}"], check=f"hc{i}") for i in range(12)]
    zone = Zone(records, known_checks={f"hc{i}" for i in range(12)})
    every = {f"192.0.2.{i + 1}" for i in range(12)}
    rng = random.Random(5)
    answers = [answered(zone, lambda _: True, rng, "api.test") for _ in range(300)]
    # Twelve healthy: eight in each answer, different eights to different queries.
    assert {len(a) for a in answers} == {8}
    assert {v for a in answers for v in a} == every
    assert len({frozenset(a) for a in answers}) > 20
    assert zone.routing(lambda _: True) == {"api.test": sorted(every)}  # any of them may be answered
    # Nine healthy: eight of those nine, never an unhealthy one.
    sick = {"hc0", "hc1", "hc2"}
    answers = [answered(zone, lambda c: c not in sick, rng, "api.test") for _ in range(100)]
    assert {len(a) for a in answers} == {8}
    assert {v for a in answers for v in a} == every - {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    # Five healthy: those five in every answer.
    up = {f"hc{i}" for i in range(5)}
    assert {frozenset(answered(zone, lambda c: c in up, rng, "api.test")) for _ in range(50)} == {
        frozenset(f"192.0.2.{i + 1}" for i in range(5))
    }
    # All twelve unhealthy: up to eight of the unhealthy ones.
    answers = [answered(zone, lambda _: False, rng, "api.test") for _ in range(100)]
    assert {len(a) for a in answers} == {8}
    assert {v for a in answers for v in a} == every


def test_a_multivalue_record_without_health_check_is_always_healthy() -> None:
    zone = Zone(
        [
            record("a", ["192.0.2.1", "192.0.2.2"], check="hc-a"),
            record("b", ["192.0.2.3"], check="hc-b"),
            record("c", ["192.0.2.4", "192.0.2.1"]),  # no check; shares a value with "a"
        ]
    )
    rng = random.Random(9)
    everything = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}
    assert set(answered(zone, lambda _: True, rng, "api.test")) == everything  # 192.0.2.1 once
    # Every checked record down: the unchecked one still counts as healthy, and is the answer.
    assert sorted(answered(zone, lambda _: False, rng, "api.test")) == ["192.0.2.1", "192.0.2.4"]
    assert set(answered(zone, lambda c: c == "hc-b", rng, "api.test")) == {
        "192.0.2.1",
        "192.0.2.3",
        "192.0.2.4",
    }


def mv_resources(**changes: Any) -> list[dict[str, Any]]:
    """The multivalue plan's resources, with ``changes`` to the inputs of multivalue-gcp-prod
    (a value None removes the input)."""
    resources = [copy.deepcopy(dataclasses.asdict(r)) for r in multivalue_plan().resources]
    inputs = next(r for r in resources if r["name"] == "multivalue-gcp-prod")["inputs"]
    for key, value in changes.items():
        if value is None:
            inputs.pop(key, None)
        else:
            inputs[key] = value
    return resources


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (
            {
                "aliases": [{"name": "x.example", "zoneId": "Z1", "evaluateTargetHealth": True}],
                "records": None,
                "ttl": None,
            },
            r"multivalue-gcp-prod .*multivalueAnswerRoutingPolicy: Route 53 has no multivalue alias",
        ),
        (
            {"type": "CNAME", "records": ["gcp.example"]},
            r"multivalue-gcp-prod .*Route 53 refuses it for a CNAME",
        ),
        ({"type": "NS", "records": ["ns1.example"]}, r"multivalue-gcp-prod .*Route 53 refuses it for a NS"),
        (
            {"weightedRoutingPolicies": [{"weight": 10}]},
            r"multivalue-gcp-prod .*weightedRoutingPolicies and multivalueAnswerRoutingPolicy: a record "
            r"has one routing policy",
        ),
        (
            {"failoverRoutingPolicies": [{"type": "PRIMARY"}]},
            r"multivalue-gcp-prod .*failoverRoutingPolicies and multivalueAnswerRoutingPolicy",
        ),
        ({"setIdentifier": None}, r"multivalue-gcp-prod .*setIdentifier: a multivalue record needs one"),
        ({"multivalueAnswerRoutingPolicy": "yes"}, r"multivalue-gcp-prod .*expected true or false"),
    ],
)
def test_multivalue_plan_problems_name_the_resource_and_field(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(EdgePlanError, match=says):
        edge_from_plan(mv_resources(**changes))


def test_multivalue_mixed_with_another_policy_on_one_name_is_refused() -> None:
    # A record of the name without the policy: a name has one routing policy.
    with pytest.raises(
        EdgePlanError, match=r"multivalue-gcp-prod: api.agents.example.com mixes multivalue and simple"
    ):
        edge_from_plan(mv_resources(multivalueAnswerRoutingPolicy=False, setIdentifier=None))
    # Configs the DNS server reads are checked as well (they are not read through a plan).
    with pytest.raises(EdgePlanError, match=r"record multivalue-a: Route 53 has no multivalue CNAME"):
        Zone([record("a", ["x.example"]).model_copy(update={"type": "CNAME"})])
    with pytest.raises(EdgePlanError, match=r"record multivalue-a: multivalue and weighted routing"):
        Zone([record("a", ["192.0.2.1"], weight=5)])
