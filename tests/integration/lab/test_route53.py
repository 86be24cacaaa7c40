"""Route 53 as the lab emulates it, built from the edge stack's own plan: record evaluation
(failover through alias tiers, weighted with its weight-0 and all-unhealthy rules), the
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
    weights = {str(r.set_identifier): r.weight or 0 for r in e.records}
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
    with pytest.raises(EdgePlanError, match=r"record primary-gcp-prod: healthCheckId .* not a health check"):
        edge_from_plan(resources)
    resources = plan_dicts()
    next(r for r in resources if r["name"] == "primary-aws-prod")["inputs"]["healthCheckId"] = UNKNOWN
    with pytest.raises(
        EdgePlanError, match=r"primary-aws-prod .*healthCheckId is not known.*without --preview"
    ):
        edge_from_plan(resources)
    resources = plan_dicts()
    next(r for r in resources if r["name"] == "hc-aws-prod")["inputs"]["regions"] = ["us-east-1"]
    with pytest.raises(EdgePlanError, match=r"hc-aws-prod .*regions: Route 53 needs at least 3"):
        edge_from_plan(resources)
    resources = plan_dicts()
    next(r for r in resources if r["name"] == "secondary-tier-1")["inputs"]["aliases"][0]["name"] = (
        "nowhere.example"
    )
    with pytest.raises(
        EdgePlanError, match=r"secondary-tier-1: aliases\[0\].name: nowhere.example has no record"
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
