"""Bad stack config fails before any resource is registered, with every problem located."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_app.contract import Env
from infra.config import SpecError, load_stack_file
from infra.spec import AwsStack, Environment, parse_spec
from skyfleet.plan import ConfigError, Plan, plan_stack
from tests.support.plans import minimal_aws_spec

ROOT = Path(__file__).resolve().parents[3]
GOOD = (ROOT / "stacks" / "Pulumi.aws-dev.yaml").read_text()


def _break(text: str, old: str, new: str) -> str:
    assert old in text, f"fixture drifted: {old!r} not in aws-dev"
    return text.replace(old, new, 1)


def _config_error(make: Callable[[str, str], Path], text: str) -> ConfigError:
    project = make("broken", text)
    with pytest.raises(ConfigError) as info:
        plan_stack(project, "broken")
    assert info.value.registered == 0, "resources were registered despite invalid config"
    return info.value


def test_shipped_dev_stack_is_valid() -> None:
    spec = load_stack_file(ROOT / "stacks" / "Pulumi.aws-dev.yaml")
    assert spec.environment is Environment.DEV


def test_typo_names_the_key_line_and_the_valid_keys(temp_project: Callable[[str, str], Path]) -> None:
    err = _config_error(temp_project, _break(GOOD, "    memory: 512", "    memroy: 512"))
    message = str(err)
    assert "stacks/Pulumi.broken.yaml" in message
    line = next(
        i
        for i, raw in enumerate(_break(GOOD, "    memory: 512", "    memroy: 512").splitlines(), 1)
        if "memroy" in raw
    )
    assert f"skyfleet:app.memroy (line {line}): given an unknown key" in message
    assert "expected one of:" in message and "memory" in message


def test_wrong_type_says_given_and_expected(temp_project: Callable[[str, str], Path]) -> None:
    message = str(_config_error(temp_project, _break(GOOD, "    cpu: 256", "    cpu: lots")))
    assert re.search(r"skyfleet:app\.cpu \(line \d+\): given 'lots'; expected .*valid integer", message)


def test_out_of_range_value(temp_project: Callable[[str, str], Path]) -> None:
    message = str(_config_error(temp_project, _break(GOOD, "    cpu: 256", "    cpu: 99999")))
    assert (
        "skyfleet:app.cpu" in message and "given 99999" in message and "less than or equal to 4096" in message
    )


def test_missing_required_value(temp_project: Callable[[str, str], Path]) -> None:
    message = str(_config_error(temp_project, _break(GOOD, "  skyfleet:region: eu-west-1\n", "")))
    assert "skyfleet:region: given nothing; expected the aws region" in message


def test_plain_text_secret_is_refused_and_not_echoed(temp_project: Callable[[str, str], Path]) -> None:
    text = re.sub(r"  skyfleet:apiKeys:\n    secure: .*\n", "  skyfleet:apiKeys: sk-live-verysecret\n", GOOD)
    message = str(_config_error(temp_project, text))
    assert "skyfleet:apiKeys" in message and "expected a Pulumi secret" in message
    assert "sk-live-verysecret" not in message


def test_every_problem_is_listed_at_once(temp_project: Callable[[str, str], Path]) -> None:
    text = _break(_break(GOOD, "    cpu: 256", "    cpu: lots"), "    memory: 512", "    memroy: 512")
    text = _break(text, "  skyfleet:region: eu-west-1\n", "")
    err = _config_error(temp_project, text)
    assert "3 problems" in str(err)


def test_moving_image_tag_is_refused(temp_project: Callable[[str, str], Path]) -> None:
    text = re.sub(r"    image: .*\n", "    image: ghcr.io/acme/agent-app:latest\n", GOOD)
    assert "pin by digest" in str(_config_error(temp_project, text))


def test_prod_refuses_fragile_values(temp_project: Callable[[str, str], Path]) -> None:
    text = _break(GOOD, "skyfleet:environment: dev", "skyfleet:environment: prod")
    text = _break(text, "    cpu: 256", "    replicas: {min: 1, max: 2}\n    cpu: 256")
    text = text.replace("  skyfleet:policy:\n    profile: dev\n", "  skyfleet:deletionProtection: false\n")
    message = str(_config_error(temp_project, text))
    assert "skyfleet:app.replicas.min" in message and "prod needs >= 2" in message
    assert "skyfleet:deletionProtection" in message


def test_dev_and_prod_defaults_differ() -> None:
    dev = parse_spec(minimal_aws_spec(environment="dev"))
    prod = parse_spec(minimal_aws_spec(environment="prod"))
    assert isinstance(dev, AwsStack) and isinstance(prod, AwsStack)
    assert prod.app.replicas.min >= 2 > dev.app.replicas.min
    assert prod.cache.ha and not dev.cache.ha
    assert prod.deletion_protection and not dev.deletion_protection
    assert prod.cache.size_gb > dev.cache.size_gb


def test_spec_error_lists_file(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.x.yaml"
    bad.write_text("config:\n  skyfleet:target: mars\n")
    with pytest.raises(SpecError) as info:
        load_stack_file(bad)
    assert str(bad) in str(info.value) and "skyfleet:target" in str(info.value)


def test_a_key_given_twice_in_a_stack_file_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    """YAML would keep the second value without a word: the region planned would not be the one
    its reader sees first."""
    twice = tmp_path / "Pulumi.twice.yaml"
    twice.write_text(
        "config:\n  skyfleet:target: aws\n  skyfleet:region: eu-west-1\n  skyfleet:region: us-east-1\n"
    )
    with pytest.raises(SpecError) as info:
        load_stack_file(twice)
    message = str(info.value)
    assert str(twice) in message and "'skyfleet:region' is given twice (lines 3 and 4)" in message


def test_cli_exits_2_with_the_message(temp_project: Callable[[str, str], Path]) -> None:
    project = temp_project("broken", _break(GOOD, "    memory: 512", "    memroy: 512"))
    result = subprocess.run(
        [sys.executable, "-m", "skyfleet.cli", "plan", "--stack", "broken", "--program", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "skyfleet:app.memroy" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_agent_variable_the_app_does_not_read_is_refused(temp_project: Callable[[str, str], Path]) -> None:
    text = _break(GOOD, "      AGENT_MODEL_BACKEND: offline", "      AGENT_MODEL_BAKEND: offline")
    message = str(_config_error(temp_project, text))
    assert "skyfleet:app.env" in message and "AGENT_MODEL_BAKEND: the app reads no such variable" in message
    assert "AGENT_MODEL_BACKEND" in message


def test_an_app_grace_longer_than_the_platform_allows_is_refused(
    temp_project: Callable[[str, str], Path],
) -> None:
    """ECS kills a task 30 s after SIGTERM: an app told to drain for 29 s would be killed
    before its own deadline ends it."""
    text = _break(
        GOOD,
        "      AGENT_MODEL_BACKEND: offline",
        "      AGENT_MODEL_BACKEND: offline\n      AGENT_SHUTDOWN_GRACE_SECONDS: '29'",
    )
    message = str(_config_error(temp_project, text))
    assert "Pulumi.broken.yaml" in message
    assert "app.env.AGENT_SHUTDOWN_GRACE_SECONDS is 29" in message and "at most 28" in message


# --- the fleet ---------------------------------------------------------------------------------

PROD_SITES = ("aws-prod", "gcp-prod", "onprem-prod")


def test_the_prod_sites_import_one_fleet_and_one_client_key_set() -> None:
    specs = [load_stack_file(ROOT / "stacks" / f"Pulumi.{s}.yaml") for s in PROD_SITES]
    fleet = specs[0].fleet  # type: ignore[union-attr]
    assert all(spec.fleet == fleet for spec in specs)  # type: ignore[union-attr]
    assert fleet is not None and [s.name for s in fleet.sites] == list(PROD_SITES)
    for spec in specs:
        assert spec.site_name in [s.name for s in fleet.sites]  # type: ignore[union-attr]
        host = next(s.host for s in fleet.sites if s.name == spec.site_name)  # type: ignore[union-attr]
        assert host == spec.domain.name  # type: ignore[union-attr]
        # The keys come from the fleet's environment: placeholders of the same config key.
        assert spec.api_keys == "offline-plan-secret:skyfleet:apiKeys"  # type: ignore[union-attr]
        assert spec.fleet_key == "offline-plan-secret:skyfleet:fleetKey"  # type: ignore[union-attr]


def _prod_variant(stack: str, edit: Callable[[dict[str, Any]], None]) -> str:
    import yaml

    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    edit(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def test_a_missing_fleet_environment_is_named(temp_project: Callable[[str, str], Path]) -> None:
    text = _prod_variant("aws-prod", lambda d: d.update(environment=["skyfleet/fleet-nope"]))
    project = temp_project("aws-nope", text)
    with pytest.raises(ConfigError) as info:
        plan_stack(project, "aws-nope")
    assert "environment" in str(info.value) and "stacks/environments/fleet-nope.yaml" in str(info.value)


def test_a_site_missing_from_its_fleet_is_refused(temp_project: Callable[[str, str], Path]) -> None:
    text = _prod_variant("gcp-prod", lambda d: d["config"].update({"skyfleet:site": "gcp-prod-2"}))
    err = _config_error(temp_project, text)
    assert "this site (gcp-prod-2) is not one of them" in str(err)


def test_a_fleet_host_the_site_certificate_does_not_cover_is_refused(
    temp_project: Callable[[str, str], Path],
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        config = doc["config"]
        config["skyfleet:domain"] = {**config["skyfleet:domain"], "name": "aws2.agents.example.com"}

    err = _config_error(temp_project, _prod_variant("aws-prod", edit))
    assert "names aws.agents.example.com for aws-prod, which its certificate does not cover" in str(err)


def test_sync_replication_needs_three_sites() -> None:
    sites = [{"name": "a", "host": "a.example.com"}, {"name": "b", "host": "b.example.com"}]
    from pydantic import ValidationError

    from infra.spec import FleetSpec

    with pytest.raises(ValidationError, match="sync replication needs at least 3 sites"):
        FleetSpec.model_validate({"name": "two", "sites": sites})
    assert FleetSpec.model_validate({"name": "two", "replication": "async", "sites": sites}).env_value() == (
        "a=https://a.example.com,b=https://b.example.com"
    )


def test_a_site_budget_other_than_its_fleets_is_refused(temp_project: Callable[[str, str], Path]) -> None:
    """A key's sessions move to the successor when their site is lost: a site with a budget of
    its own would rate-limit there a key that was within its budget before."""

    def edit(doc: dict[str, Any]) -> None:
        config = doc["config"]
        config["skyfleet:app"] = {**config["skyfleet:app"], "rateLimitPerMinute": 120}

    err = _config_error(temp_project, _prod_variant("gcp-prod", edit))
    message = str(err)
    assert "Pulumi.broken.yaml" in message and "1 problem" in message
    assert re.search(r"skyfleet:app\.rateLimitPerMinute \(line \d+\): given 120", message), message
    assert "app.rateLimitPerMinute is 120, but fleet 'prod' gives every client key 600 per minute" in message
    assert "(fleet.rateLimitPerMinute)" in message


def _planned_env(value: Any, name: str) -> Iterator[str]:
    """Every value a plan gives the variable ``name``, on any platform: ECS container definitions
    (a JSON string), Cloud Run's ``envs`` and Kubernetes' ``env`` ({name, value} entries)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            value = json.loads(value)
        except ValueError:
            return
    if isinstance(value, dict):
        if value.get("name") == name and "value" in value:
            yield str(value["value"])
        for item in value.values():
            yield from _planned_env(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _planned_env(item, name)


def test_every_site_of_the_fleet_gives_a_key_the_fleets_budget(plans: dict[str, Plan]) -> None:
    spec = load_stack_file(ROOT / "stacks" / "Pulumi.aws-prod.yaml")
    assert isinstance(spec, AwsStack) and spec.fleet is not None
    assert spec.fleet.rate_limit_per_minute == spec.rate_limit_per_minute == 600
    for stack in PROD_SITES:
        values = [
            v for r in plans[stack].resources for v in _planned_env(r.inputs, Env.RATE_LIMIT_PER_MINUTE.value)
        ]
        assert len(values) >= 2, f"{stack}: the api and the worker are given a budget"
        assert set(values) == {"600"}, (stack, values)
