"""The fleet's part of the env contract: one format written by infra and read by the app, and
a process that refuses a fleet it cannot work in, naming the variable."""

from __future__ import annotations

import pytest

from agent_app.config import describe
from agent_app.contract import ContractError, fleet_sites_value, parse_fleet_sites
from agent_app.fleet import Fleet
from skyfleet.testing.servers import app_env
from tests.unit.agent_app.test_config import NATS, run

SITES = "aws=https://aws.example.com,gcp=https://gcp.example.com,onprem=https://onprem.example.com"
KEY = "k" * 40


def test_the_sites_round_trip_in_order() -> None:
    pairs = parse_fleet_sites(SITES)
    assert [n for n, _ in pairs] == ["aws", "gcp", "onprem"]
    assert fleet_sites_value(pairs) == SITES


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("aws=http://aws.example.com,gcp=https://gcp.example.com", "expected <site>=https://"),
        ("aws=https://aws.example.com", "at least two sites"),
        ("aws=https://a.example.com,aws=https://b.example.com", "listed twice"),
        ("aws=https://u:p@a.example.com,gcp=https://g.example.com", "no credentials"),
        ("aws=https://a.example.com/v1,gcp=https://g.example.com", "expected <site>=https://"),
    ],
)
def test_a_bad_fleet_is_refused_naming_the_variable(value: str, words: str) -> None:
    with pytest.raises(ContractError, match="AGENT_FLEET_SITES") as info:
        parse_fleet_sites(value)
    assert words in str(info.value)


def test_successors_follow_the_fleet_order_and_wrap() -> None:
    fleet = Fleet(site="gcp", sites=parse_fleet_sites(SITES), mode="sync", key=KEY)
    assert [fleet.successor(s) for s in ("aws", "gcp", "onprem")] == ["gcp", "onprem", "aws"]
    assert fleet.peers == ["aws", "onprem"] and fleet.peer_acks_needed == 1
    # Copies go to the site that would take over first.
    assert fleet.peers_in_order() == ["onprem", "aws"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"AGENT_SITE": "elsewhere"}, "AGENT_FLEET_SITES: this site (AGENT_SITE='elsewhere') is not one of"),
        ({"AGENT_SITE": "aws"}, "AGENT_FLEET_KEY: a fleet's sites authenticate each other"),
        ({"AGENT_SITE": "aws", "AGENT_FLEET_KEY": "short"}, "at least 32 characters"),
        ({"AGENT_SITE": "aws", "AGENT_FLEET_KEY": KEY, "AGENT_FLEET_REPLICATION": "eventual"}, "sync"),
    ],
)
def test_a_process_refuses_a_fleet_it_cannot_work_in(extra: dict[str, str], words: str) -> None:
    env = app_env("redis://127.0.0.1:1/0", NATS, AGENT_FLEET_SITES=SITES, **extra)
    result = run("api", env)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert KEY not in result.stderr


def test_describe_hides_the_fleet_key() -> None:
    from pydantic import ValidationError

    from agent_app.config import Settings

    with pytest.raises(ValidationError) as info:
        Settings.model_validate(
            {"AGENT_REDIS_URL": "redis://r:6379", "AGENT_QUEUE_URL": NATS, "AGENT_FLEET_KEY": 7}
        )
    assert all("7" not in line.split(":", 1)[1] for line in describe(info.value) if "FLEET_KEY" in line)
