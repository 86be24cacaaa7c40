"""The edge's twin built from a multivalue edge plan (no lab brought up: what ``lab up`` records
and writes for the DNS server): the records' planned site addresses answered as the sites' lab
addresses, each mapping in the rewrite table, and what the lab cannot serve said or refused."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from pathlib import Path

import pytest

from skyfleet.lab import dns, edge
from skyfleet.lab.errors import LabError
from skyfleet.lab.state import LabState, save_state
from skyfleet.plan import Plan
from skyfleet.testing.edge import GLOBAL_NAME, SITE_STACKS, edge_plan, site_outputs
from tests.support.lab_state import LB, LB_ALL, lab_state
from tests.support.multivalue_edge import STACK, multivalue_plan, planned_addresses


def served(state: LabState) -> dns.DnsConfig:
    assert state.edge is not None
    return dns.load_config(Path(state.edge.config_file))[0]


def test_planned_addresses_are_served_as_the_sites_lab_addresses(tmp_path: Path) -> None:
    state = lab_state(tmp_path)
    edge.build(state, multivalue_plan())
    assert state.edge is not None
    assert (state.edge.stack, state.edge.fqdn, state.edge.routing, state.edge.ttl) == (
        STACK,
        GLOBAL_NAME,
        "multivalue",
        10,
    )
    config = served(state)
    # aws-prod's three planned addresses are its load balancer's three addresses here.
    # The global name's records (the edge also serves the gcp site's DNS authorization CNAMEs).
    routed = [r for r in config.records if r.set_identifier]
    assert {r.set_identifier: r.values for r in routed} == {s: tuple(LB_ALL[s]) for s in SITE_STACKS}
    assert all(r.multivalue for r in routed)
    # Every mapping is in the rewrite table `lab status` prints.
    assert sorted((r.site, r.plan, r.lab) for r in state.rewrites) == sorted(
        (site, address, LB_ALL[site][i])
        for site, addresses in planned_addresses().items()
        for i, address in enumerate(addresses)
    )
    assert {r.what for r in state.rewrites if r.site == "gcp-prod"} == {
        f"edge record multivalue-gcp-prod ({GLOBAL_NAME} A)"
    }
    assert not state.deviations
    # What the DNS server answers from that config: every site's lab address, each once.
    answerer = dns.Answerer(config, lambda _: True, random.Random(1))
    assert sorted(answerer.addresses(GLOBAL_NAME)) == sorted(a for all_ in LB_ALL.values() for a in all_)


def test_a_site_the_lab_does_not_run_is_dropped_and_said(tmp_path: Path) -> None:
    state = lab_state(tmp_path, ("aws-prod", "gcp-prod"))
    edge.build(state, multivalue_plan())
    assert {r.set_identifier: r.values for r in served(state).records if r.set_identifier} == {
        "aws-prod": tuple(LB_ALL["aws-prod"]),
        "gcp-prod": (LB["gcp-prod"],),
    }
    assert {r.site for r in state.rewrites} == {"aws-prod", "gcp-prod"}
    assert (
        "edge: the lab runs no site for onprem-prod; record multivalue-onprem-prod answers without its "
        f"planned addresses {planned_addresses()['onprem-prod']}"
    ) in state.deviations
    assert any("the lab runs no site for ['onprem-prod']" in d for d in state.deviations)  # its check


def with_record_values(plan: Plan, resource: str, values: list[str]) -> Plan:
    resources = copy.deepcopy(plan.resources)
    target = next(r for r in resources if r.name == resource)
    target.inputs["records"] = values
    return dataclasses.replace(plan, resources=resources)


def test_an_address_of_no_site_fails_lab_up(tmp_path: Path) -> None:
    plan = with_record_values(multivalue_plan(), "multivalue-gcp-prod", ["198.51.100.59", "192.0.2.99"])
    with pytest.raises(
        LabError,
        match=rf"{STACK}: record multivalue-gcp-prod: 192\.0\.2\.99 is not an endpointAddress of any site "
        r"the lab runs",
    ):
        edge.build(lab_state(tmp_path), plan)
    # Another site's planned address in a site's record: served as that other site's address.
    plan = with_record_values(multivalue_plan(), "multivalue-gcp-prod", ["198.51.100.59", "203.0.113.55"])
    state = lab_state(tmp_path)
    edge.build(state, plan)
    gcp = next(r for r in served(state).records if r.set_identifier == "gcp-prod")
    assert gcp.values == (LB["gcp-prod"], LB["onprem-prod"])


def routing_event(state: LabState, targets: list[str]) -> None:
    assert state.edge is not None
    event = {"event": "routing", "t": time.time(), "cause": "test", "routing": {GLOBAL_NAME: targets}}
    with open(state.edge.events_file, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


def test_routed_sites_knows_addresses_and_names(tmp_path: Path) -> None:
    state = lab_state(tmp_path / "multivalue")
    Path(state.state_dir).mkdir()
    edge.build(state, multivalue_plan())
    save_state(state)
    routing_event(state, sorted([LB["aws-prod"], LB["onprem-prod"]]))
    assert edge.routed_sites(state.state_dir) == ["aws-prod", "onprem-prod"]
    routing_event(state, [LB["gcp-prod"]])
    assert edge.routed_sites(state.state_dir) == ["gcp-prod"]
    # Failover answers a site's host name: still known by its name.
    state = lab_state(tmp_path / "failover")
    Path(state.state_dir).mkdir()
    edge.build(state, edge_plan())
    save_state(state)
    host = str(site_outputs()["gcp-prod"]["endpointHost"])
    routing_event(state, [host])
    assert edge.routed_sites(state.state_dir) == ["gcp-prod"]
    assert not state.rewrites  # a CNAME edge has no address to rewrite
